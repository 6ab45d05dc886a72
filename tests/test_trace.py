from __future__ import annotations

import pytest
import torch
from torch import nn

import graphprune as gp
from graphprune.models import get_model
from graphprune.trace import (
    _BINARY,
    _BINARY_,
    _SCALAR,
    _UNARY,
    _UNARY_,
    META_KEY,
    _fast_meta,
    record_values,
    symbolic_trace,
)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x)
        return -self.conv(x)


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.inner = DataDependent()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.stem(x))


def test_untraceable_module_is_named_with_a_leaf_hint() -> None:
    with pytest.raises(gp.TraceError, match=r"module 'inner' \(DataDependent\).*leaf_modules=\['inner'\]"):
        gp.trace(Outer(), torch.randn(1, 3, 8, 8))


def test_leaf_module_makes_it_traceable_but_unprunable_around_it() -> None:
    pg = gp.trace(Outer(), torch.randn(1, 3, 8, 8), leaf_modules=["inner"])
    g = pg.group_of("stem")
    assert not g.prunable and "DataDependent 'inner'" in g.reason


def test_wrong_input_shape_names_the_layer() -> None:
    with pytest.raises(gp.TraceError, match="example input does not fit the model at module 'conv1'"):
        gp.trace(get_model("cifar_resnet20"), torch.randn(1, 1, 32, 32))


def test_wrong_number_of_inputs() -> None:
    with pytest.raises(gp.TraceError, match="takes 1 input"):
        gp.trace(get_model("cifar_resnet20"), (torch.randn(1, 3, 32, 32), torch.randn(1)))


def test_users_model_is_never_mutated() -> None:
    model = get_model("cifar_resnet20").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pg = gp.trace(model, torch.randn(2, 3, 32, 32))
    slim = gp.apply(pg, gp.PruningPlan().remove_channels("layer1.0.conv1", [0, 1]).remove_block("layer3.1"))
    assert model.training and slim.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.layer1[0].conv1.out_channels == 16
    assert pg.gm.get_submodule("layer1.0.conv1").out_channels == 16


def test_the_trace_shares_the_weights_memory_but_not_their_objects() -> None:
    model = get_model("cifar_resnet20").eval()
    pg = gp.trace(model, torch.randn(1, 3, 32, 32))
    mine, theirs = model.conv1.weight, pg.gm.get_submodule("conv1").weight
    assert theirs is not mine and theirs.data_ptr() == mine.data_ptr()  # no copy of the weights
    pg.gm.double()  # rebinds the trace's own tensor objects
    assert all(t.dtype == torch.float32 for t in model.parameters())
    slim = gp.apply(gp.trace(model, torch.randn(1, 3, 32, 32)), gp.PruningPlan().remove_block("layer3.1"))
    ours = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    assert not ours & {t.data_ptr() for t in [*slim.parameters(), *slim.buffers()]}  # the result owns its own


def test_pruned_model_trains_scripts_and_retraces() -> None:
    x = torch.randn(4, 3, 32, 32)
    pg = gp.trace(get_model("cifar_resnet20"), x)
    slim = gp.apply(pg, gp.PruningPlan().remove_channels("layer2.0.conv1", [3]))
    slim.train()
    loss = slim(x).logsumexp(1).mean()
    loss.backward()
    assert slim.get_submodule("layer2.0.conv1").weight.grad is not None
    scripted = torch.jit.script(slim.eval())
    torch.testing.assert_close(scripted(x), slim(x))
    again = gp.trace(slim, x)  # a pruned model can be pruned again
    assert again.group_of("layer2.0.conv1").size == 31


class AuxHead(torch.nn.Module):
    """An Inception-style aux head and a noise branch, both for training only."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Conv2d(3, 4, 1)
        self.aux = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> object:
        h = self.body(x)
        if self.training:
            return h, self.aux(h)
        return h


def test_what_eval_mode_tracing_leaves_out_is_said() -> None:
    with pytest.warns(gp.errors.EvalOnlyWarning, match="'aux'.*AuxHead.forward reads self.training"):
        pg = gp.trace(AuxHead(), torch.randn(1, 3, 4, 4))
    assert pg.eval_only == (
        "module 'aux' (Sequential) is unused in eval mode",
        "AuxHead.forward reads self.training: traced as training=False",
    )
    assert gp.trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)), torch.randn(1, 3, 4, 4)).eval_only == ()


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_mobilenetv2"])
def test_shapes_only_recording_equals_a_real_run(name: str) -> None:
    """The meta-device recording gives every node the value summary a real run gives."""
    model, x = get_model(name), torch.randn(2, 3, 32, 32)
    meta_gm, real_gm = symbolic_trace(model), symbolic_trace(model)
    out = record_values(meta_gm, (x,), shapes_only=True)
    record_values(real_gm, (x,))
    assert out.device.type == "meta"  # no arithmetic was done
    assert [n.meta[META_KEY] for n in meta_gm.graph.nodes] == [n.meta[META_KEY] for n in real_gm.graph.nodes]


@pytest.mark.parametrize(
    ("norm", "shape"),
    [
        (nn.BatchNorm1d(4), (2, 4)),
        (nn.BatchNorm1d(4), (2, 4, 5)),
        (nn.BatchNorm3d(4), (2, 4, 3, 3, 3)),
        (nn.LayerNorm(5), (2, 4, 5)),
        (nn.LayerNorm([4, 5]), (2, 3, 4, 5)),
        (nn.LayerNorm(5, elementwise_affine=False), (5,)),
    ],
)
def test_norms_on_meta_equal_a_real_run(norm: nn.Module, shape: tuple[int, ...]) -> None:
    """The norms' fast meta path (trace._NormsOnMeta) records what a real run records."""
    model, x = nn.Sequential(norm, nn.ReLU()).eval(), torch.randn(shape)
    meta_gm, real_gm = symbolic_trace(model), symbolic_trace(model)
    assert record_values(meta_gm, (x,), shapes_only=True).device.type == "meta"
    record_values(real_gm, (x,))
    assert [n.meta[META_KEY] for n in meta_gm.graph.nodes] == [n.meta[META_KEY] for n in real_gm.graph.nodes]


def test_norms_with_parameters_of_another_size_still_fail_naming_them() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    model[1].running_mean = torch.zeros(5)
    with pytest.raises(gp.TraceError, match="module '1'"):
        gp.trace(model, torch.randn(1, 3, 4, 4))
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    model[1].weight = nn.Parameter(torch.ones(5))
    with pytest.raises(gp.TraceError, match="module '1'"):
        gp.trace(model, torch.randn(2, 3))


class ValueDependent(nn.Module):
    """Boolean-mask indexing: the output shape depends on values, which the meta device does not have."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return h + h[h > 0].sum()


def test_a_model_that_needs_values_is_recorded_for_real() -> None:
    pg = gp.trace(ValueDependent(), torch.randn(1, 3, 8, 8))
    assert pg.flops == 4 * 6 * 6 * 3 * 9
    assert all(META_KEY in n.meta for n in pg.gm.graph.nodes)


A = torch.ops.aten
X4, C1, V = (2, 6, 5, 7), (2, 6, 1, 1), (7,)
SHORTCUTS = [
    *[(op, (X4,), ()) for op in sorted(_UNARY | _UNARY_, key=str) if "hardtanh" not in str(op)],
    (A.hardtanh.default, (X4,), (0.0, 6.0)),
    (A.hardtanh_.default, (X4,), (0.0, 6.0)),
    *[(op, (X4, s), ()) for op in sorted(_BINARY | _BINARY_, key=str) for s in (X4, C1, V)],
    *[(op, (C1, X4), ()) for op in sorted(_BINARY, key=str)],
    *[(op, (X4,), (k,)) for op in sorted(_SCALAR, key=str) for k in (2, 0.5)],
    *[(op, (X4,), (d, False)) for op in (A._softmax.default, A._log_softmax.default) for d in (1, -1)],
    (A._safe_softmax.default, (X4,), (-1,)),
    (A._safe_softmax.default, (X4,), (2, None)),
    (A.addmm.default, ((5,), (3, 4), (4, 5)), ()),
    (A.addmm.default, ((3, 5), (3, 4), (4, 5)), ()),
    (A.mean.dim, (X4,), ([2, 3], True)),
    (A.mean.dim, (X4,), ([-1],)),
    (A.mean.dim, (X4,), ([1, -2], False)),
]
CONVS = [  # (input, weight, stride, padding, dilation, groups)
    ((2, 6, 9, 9), (4, 6, 3, 3), [1, 1], [1, 1], [1, 1], 1),
    ((2, 6, 9, 8), (4, 3, 3, 2), [2, 1], [0, 2], [1, 2], 2),
    ((1, 6, 10, 10), (6, 1, 5, 5), [2, 2], [2, 2], [1, 1], 6),
    ((2, 4, 11), (8, 4, 3), [2], [1], [3], 1),
    ((1, 2, 5, 6, 7), (3, 2, 1, 2, 3), [1, 1, 2], [0, 1, 1], [1, 1, 1], 1),
]


def _meta(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty(shape, device="meta")


@pytest.mark.parametrize(
    ("op", "shapes", "rest"), SHORTCUTS, ids=lambda v: str(v) if isinstance(v, type(A.add.Tensor)) else ""
)
def test_each_meta_shortcut_gives_what_torch_gives(op: object, shapes: tuple, rest: tuple) -> None:
    """trace._fast_meta answers without torch's meta kernel, with the same shape, dtype and strides."""
    args = (*map(_meta, shapes), *rest)
    fast = _fast_meta(op, args[0], args)
    assert fast is not None, "not a shortcut"
    want = op(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))  # type: ignore[operator]
    assert (fast.shape, fast.dtype, fast.stride()) == (want.shape, want.dtype, want.stride())
    if op in _UNARY_ or op in _BINARY_:
        assert fast is args[0]  # in place


@pytest.mark.parametrize(("x", "w", "stride", "padding", "dilation", "groups"), CONVS)
def test_the_convolution_shortcut_gives_what_torch_gives(x, w, stride, padding, dilation, groups) -> None:
    args = (_meta(x), _meta(w), None, stride, padding, dilation, False, [0] * len(stride), groups)
    fast = _fast_meta(A.convolution.default, args[0], args)
    want = A.convolution.default(*args)
    assert fast is not None and (fast.shape, fast.stride()) == (want.shape, want.stride())


def test_the_meta_shortcuts_fail_where_torch_fails() -> None:
    with pytest.raises(RuntimeError, match="convolution of an input of shape"):
        _fast_meta(
            A.convolution.default,
            _meta((1, 5, 8, 8)),
            (_meta((1, 5, 8, 8)), _meta((4, 6, 3, 3)), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1),
        )
    with pytest.raises(RuntimeError, match="addmm of shapes"):
        _fast_meta(A.addmm.default, _meta((5,)), (_meta((5,)), _meta((3, 4)), _meta((3, 5))))
    with pytest.raises(RuntimeError):  # a bias that does not broadcast to the result
        _fast_meta(A.addmm.default, _meta((4,)), (_meta((4,)), _meta((3, 4)), _meta((4, 5))))
    assert _fast_meta(A._softmax.default, _meta(X4), (_meta(X4), 4, False)) is None  # torch raises
    assert _fast_meta(A.mul.Scalar, _meta(X4), (_meta(X4), 1j)) is None  # a complex result: torch decides
    grown = (_meta(C1), _meta(X4))
    assert _fast_meta(A.add_.Tensor, grown[0], grown) is None  # torch raises its own error
    with pytest.raises(RuntimeError):
        A.add_.Tensor(*grown)
    ints = (torch.empty(X4, dtype=torch.long, device="meta"),)
    assert _fast_meta(A.sigmoid.default, ints[0], ints) is None  # a dtype change: torch decides
    channels_last = _meta((2, 6, 5, 7)).to(memory_format=torch.channels_last)
    assert _fast_meta(A.relu.default, channels_last, (channels_last,)) is None


class _DataDependent(nn.Module):
    """Control flow on a traced value: torch.fx cannot trace it (as timm's MobileVitBlock)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if x.sum() > 0 else x


def test_a_module_timm_declares_untraceable_becomes_a_pinned_leaf() -> None:
    from graphprune.errors import ModelSpecError
    from graphprune.timm_compat import import_timm

    try:
        fx_registry = import_timm().layers._fx
    except ModelSpecError:
        pytest.skip("timm is not installed")
    model = nn.Sequential(nn.Conv2d(3, 8, 1), _DataDependent(), nn.Conv2d(8, 4, 1))
    with pytest.raises(gp.TraceError, match="cannot trace module '1'"):
        gp.trace(model, torch.randn(1, 3, 8, 8))
    fx_registry.register_notrace_module(_DataDependent)  # as timm registers its attention blocks
    pg = gp.trace(model, torch.randn(1, 3, 8, 8))
    group = pg.group_of("0")
    assert not group.prunable and "_DataDependent '1'" in (group.reason or "")


class _PatchFlip(nn.Module):
    """Shape arithmetic torch.fx cannot trace, as in timm's MobileVitBlock: pad the height up to a multiple
    of the patch, fold the channels into the batch of patches, flip each patch, unfold, crop."""

    def __init__(self, channels: int = 8, patch: int = 3) -> None:
        super().__init__()
        self.conv_in, self.conv_out, self.patch = (
            nn.Conv2d(channels, channels, 1),
            nn.Conv2d(channels, channels, 1),
            patch,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import math

        import torch.nn.functional as F

        x = self.conv_in(x)
        b, c, h, w = x.shape
        new_h = math.ceil(h / self.patch) * self.patch
        if new_h != h:
            x = F.pad(x, (0, 0, 0, new_h - h))
        x = x.reshape(b * c * (new_h // self.patch), self.patch, w).flip(1).reshape(b, c, new_h, w)
        return self.conv_out(x[:, :, :h])


def test_shape_arithmetic_is_traced_at_the_example_size_for_any_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), _PatchFlip(), nn.Conv2d(8, 4, 1)).eval()
    with pytest.warns(gp.errors.ShapeSpecialisedWarning, match="_PatchFlip .*any batch size"):
        pg = gp.trace(model, torch.randn(1, 3, 7, 5))
    for batch in (1, 3):  # the batch stays symbolic; the height's padding branch is the example's
        x = torch.randn(batch, 3, 7, 5)
        torch.testing.assert_close(pg.gm(x), model(x))
    stream_in, folded, stream_out = pg.group_of("0"), pg.group_of("1.conv_in"), pg.group_of("1.conv_out")
    assert stream_in.prunable and stream_out.prunable  # channels that only meet convs around it
    assert not folded.prunable and "reshape" in (folded.reason or "")  # folded into the batch: pinned
    plan = gp.PruningPlan(channels={stream_in.id: (0, 5), stream_out.id: (2,)})
    slim = gp.apply(pg, plan)  # verified against the masked reference
    assert slim(torch.randn(2, 3, 7, 5)).shape == (2, 4, 7, 5)


class _SignBranch(nn.Module):
    """A branch on the data (not registered with timm, unlike `_DataDependent` above)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


def test_a_data_dependent_branch_is_never_specialised() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), _SignBranch(), nn.Conv2d(8, 4, 1))
    with pytest.raises(gp.TraceError, match=r"cannot trace module '1' \(_SignBranch\)"):
        gp.trace(model, torch.randn(1, 3, 8, 8))
