"""The Torch-Pruning column of the timm page: its masked reference on small nets where the truth is known.

A correct Torch-Pruning prune must match the reference; a rewrite broken on purpose (kept input channels
shuffled, the wrong channels sliced, behind a zero-init BatchNorm too) must not."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

tp = pytest.importorskip("torch_pruning")

import zoo_tp  # noqa: E402


def _conv_bn(cin: int, cout: int, groups: int = 1, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups), nn.BatchNorm2d(cout), nn.ReLU()]


def _head(c: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]


def conv_bn_relu_conv() -> nn.Module:
    return nn.Sequential(*_conv_bn(3, 16), *_conv_bn(16, 24), *_head(24)).eval()


class Block(nn.Module):
    """Residual block: an expand conv and a depthwise conv, concatenated with a side conv, then a
    ResNeXt-style grouped conv, and a projection behind a zero-init BatchNorm."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.expand = nn.Sequential(*_conv_bn(c, 2 * c, k=1))
        self.dw = nn.Sequential(*_conv_bn(2 * c, 2 * c, groups=2 * c))
        self.side = nn.Sequential(*_conv_bn(c, c, k=1))
        self.mix = nn.Sequential(*_conv_bn(3 * c, 4 * c, k=1))
        self.grouped = nn.Sequential(*_conv_bn(4 * c, 4 * c, groups=4))
        self.project = nn.Conv2d(4 * c, c, 1)
        self.bn = nn.BatchNorm2d(c)
        nn.init.zeros_(self.bn.weight)  # timm's zero-init last BN: the branch outputs a constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.dw(self.expand(x)), self.side(x)], dim=1)
        return x + self.bn(self.project(self.grouped(self.mix(y))))


def branchy() -> nn.Module:
    return nn.Sequential(*_conv_bn(3, 16), Block(16), Block(16), *_head(16)).eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.mark.parametrize("build", [conv_bn_relu_conv, branchy])
def test_a_correct_prune_matches_the_masked_reference(build) -> None:
    r = zoo_tp.tp_check(build(), _x())
    assert r["tp_status"] == "ok" and r["tp_runs"] is True, r
    assert r["tp_matches_masked"] is True, r
    assert float(r["tp_rel_error"]) <= zoo_tp.RTOL  # type: ignore[arg-type]
    assert 0 < float(r["tp_flops"]) < 0.6 and r["tp_groups"] > 0, r  # type: ignore[arg-type,operator]


def _pruned(build, vary: bool = True):
    base = build()
    if vary:
        zoo_tp.vary_constants(base)
    net = zoo_tp.copy.deepcopy(base)
    removals = zoo_tp.prune_recorded(net, _x())
    assert not removals.unmaskable and removals.inputs
    return base, net, removals


@pytest.mark.parametrize(("build", "conv"), [(conv_bn_relu_conv, "3"), (branchy, "3.project")])
def test_shuffled_kept_input_channels_differ(build, conv: str) -> None:
    base, net, removals = _pruned(build)
    ref, calls = zoo_tp.masked_reference(base, removals.inputs)
    ok, _ = zoo_tp.compare(net, ref, [_x()])
    assert ok is not None and ok <= zoo_tp.RTOL
    assert all(calls.values())
    m = net.get_submodule(conv)
    with torch.no_grad():  # the rewrite broken on purpose: its kept input channels in another order
        m.weight.copy_(m.weight.roll(1, dims=1))
    bad, _ = zoo_tp.compare(net, ref, [_x()])
    assert bad is not None and bad > zoo_tp.RTOL  # behind a zero-init BN too (vary_constants)


def test_without_varied_constants_a_zero_init_bn_hides_a_wrong_rewrite() -> None:
    """Why `vary_constants`: behind timm's zero-init last BatchNorm, the branch outputs a constant."""
    base, net, removals = _pruned(branchy, vary=False)
    ref, _ = zoo_tp.masked_reference(base, removals.inputs)
    m = net.get_submodule("3.project")
    with torch.no_grad():
        m.weight.copy_(m.weight.roll(1, dims=1))
    hidden, _ = zoo_tp.compare(net, ref, [_x()])
    assert hidden is not None and hidden <= zoo_tp.RTOL


def test_slicing_the_wrong_input_channels_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    conv_pruner = tp.pruner.function.ConvPruner
    right = conv_pruner.prune_in_channels

    def wrong(self, layer: nn.Module, idxs: list[int]) -> nn.Module:  # the next channel, not the one asked
        width = int(layer.in_channels)  # type: ignore[arg-type]
        return right(self, layer, [(i + 1) % width for i in idxs])

    monkeypatch.setattr(conv_pruner, "prune_in_channels", wrong)
    for build in (conv_bn_relu_conv, branchy):
        r = zoo_tp.tp_check(build(), _x())
        assert r["tp_status"] == "ok" and r["tp_runs"] is True, r
        assert r["tp_matches_masked"] is False, r


def test_the_reference_zeroes_each_consumers_input_channels() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(1), nn.Linear(4 * 2 * 2, 3))
    ref, calls = zoo_tp.masked_reference(net, {"0": [1], "2": [0, 5]})
    seen: dict[str, torch.Tensor] = {}
    ref.get_submodule("0").register_forward_pre_hook(lambda m, a: seen.__setitem__("conv", a[0].clone()))
    ref.get_submodule("2").register_forward_pre_hook(lambda m, a: seen.__setitem__("linear", a[0].clone()))
    ref(torch.randn(1, 3, 2, 2) + 5)
    assert calls == {"0": 1, "2": 1}
    assert (seen["conv"][:, 1] == 0).all() and (seen["conv"][:, [0, 2]] != 0).all()
    assert (seen["linear"][:, [0, 5]] == 0).all() and (seen["linear"][:, 1:5] != 0).all()
    assert list(net[0]._forward_pre_hooks) == []  # the model itself is left alone


def test_a_norm_over_channels_is_named() -> None:
    class LN2d(nn.LayerNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    net = nn.Sequential(nn.Conv2d(3, 16, 3), LN2d(16), nn.Conv2d(16, 16, 3), *_head(16)).eval()
    r = zoo_tp.tp_check(net, _x())
    assert r["tp_runs"] is True and "statistics change" in str(r["tp_note"]), r


def test_a_changed_output_shape_gives_no_verdict() -> None:
    rel, why = zoo_tp.compare(nn.Linear(4, 2), nn.Linear(4, 3), [torch.randn(1, 4)])
    assert rel is None and "shape" in why


def test_without_torch_pruning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    r = zoo_tp.tp_check(conv_bn_relu_conv(), _x())
    assert r["tp_status"] == "not installed" and r["tp_matches_masked"] is None


def test_a_torch_pruning_failure_is_a_status_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        raise RuntimeError("INDICES element is out of DATA bounds\nmore")

    monkeypatch.setattr(tp.pruner.function.ConvPruner, "prune_in_channels", fails)
    r = zoo_tp.tp_check(conv_bn_relu_conv(), _x())
    assert r["tp_status"] == "error: RuntimeError: INDICES element is out of DATA bounds", r
    assert r["tp_runs"] is None and r["tp_matches_masked"] is None


def test_the_timm_worker_stops_torch_pruning_at_its_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import zoo_timm

    monkeypatch.setattr(zoo_tp, "tp_check", lambda model, x: time.sleep(30))
    start = time.perf_counter()
    r = zoo_timm.check_tp(conv_bn_relu_conv(), _x(), timeout=1)
    assert r.tp_status == "error: timed out after 1 s" and time.perf_counter() - start < 10
    monkeypatch.undo()  # and the alarm is off again: a real run completes
    assert zoo_timm.check_tp(conv_bn_relu_conv(), _x()).tp_matches_masked is True


def test_the_page_shows_the_column_and_the_summary() -> None:
    from zoo_timm_page import write_timm_markdown

    base = {
        "family": "ResNet", "stage": "done", "error": "", "groups": 3, "prunable_groups": 2,
        "prunable_channels": 0.5, "blocks": 1, "flops": 1, "floor": 0.1, "l1_flops": 0.5,
        "onnx_max_rel_error": 1e-7, "unprunable_reasons": [], "seconds": 1.0, "input_size": 96,
        "oracle_plans": 3, "oracle_error": None,
    }  # fmt: skip
    ok = {
        "tp_status": "ok",
        "tp_runs": True,
        "tp_matches_masked": True,
        "tp_rel_error": 2e-7,
        "tp_flops": 0.27,
    }
    rows = [
        {**base, "model": "a", **ok},
        {
            **base,
            "model": "b",
            **ok,
            "tp_matches_masked": False,
            "tp_rel_error": 0.3,
            "tp_note": "x statistics",
        },
        {
            **base,
            "model": "c",
            "tp_status": "ok",
            "tp_runs": False,
            "tp_note": "the pruned model fails: E: x",
        },
        {**base, "model": "d", "tp_status": "error: KeyError: 'x'", "tp_runs": None},
        {**base, "model": "e"},  # a row from before the column
    ]
    page = write_timm_markdown(rows, 5)
    assert "| Torch-Pruning (ratio 0.5) |" in page
    assert "✅ runs, matches; FLOPs 0.27 |" in page
    assert "⚠️ runs, differs (rel. err 3e-01); norms over channels pruned; FLOPs 0.27 |" in page
    assert "❌ the pruned model fails: E: x |" in page and "❌ error: KeyError: 'x' |" in page
    assert (
        "Torch-Pruning: its pruned model runs on 2 of 4 models; its output matches the masked reference "
        "on 1 of them" in page
    )
    assert "not half of the FLOPs" in page and "masked" in page


def test_a_timed_out_timm_process_keeps_graphprune_s_part() -> None:
    from zoo_coverage import _last_json

    assert _last_json(b'TP warning\n{"model": "m", "stage": "done"}\nmore\n') == {
        "model": "m",
        "stage": "done",
    }
    assert _last_json(None) is None and _last_json("{broken") is None
