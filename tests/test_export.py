"""ONNX export: dynamo export + onnxsim + onnxruntime verification, atomic writes, no model mutation."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphprune import export as export_mod
from graphprune.errors import OutputError, TraceError, VerificationError
from graphprune.export import ExportReport, export_onnx, onnx_summary, run_onnx
from graphprune.latency import ort_latency, paired_latency


class SmallNet(nn.Module):
    """conv-bn-relu-pool-linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.view(x.size(0), -1))


class PadBlock(nn.Module):
    """CIFAR ResNet basic block with the option-A (strided slice + zero channel pad) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        if self.stride != 1:
            x = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + x)


class PadResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = PadBlock(8, 8, 1)
        self.layer2 = PadBlock(8, 16, 2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(F.relu(self.bn(self.conv(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DepthwiseSENet(nn.Module):
    """1x1 expand, depthwise 3x3, squeeze-and-excitation multiply, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)
        self.se1 = nn.Linear(16, 4)
        self.se2 = nn.Linear(4, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn(self.dw(self.expand(x))))
        w = torch.sigmoid(self.se2(F.relu(self.se1(x.mean((2, 3))))))
        return self.fc((x * w[:, :, None, None]).mean((2, 3)))


class ExportOnlyBias(nn.Module):
    """Computes something else while being exported: the ONNX file is wrong by 1."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        if torch.compiler.is_exporting():
            y = y + 1
        return y


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


def _make(cls: type[nn.Module]) -> nn.Module:
    """Seeded model with non-trivial BN statistics, left in training mode."""
    torch.manual_seed(0)
    model = cls()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.train()


def _leftovers(directory: Path) -> list[str]:
    """Hidden temp files atomic writes would leave behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("cls", [SmallNet, PadResNet, DepthwiseSENet])
def test_export_verifies_and_keeps_batch_dynamic(cls: type[nn.Module], tmp_path: Path) -> None:
    model = _make(cls)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "sub" / "model.onnx"

    report = export_onnx(model, torch.randn(1, 3, 8, 8), out)

    assert isinstance(report, ExportReport)
    assert report.path == str(out) and out.is_file()
    assert report.nodes > 0 and report.opset >= 18
    assert report.simplified and report.dynamic_batch
    assert report.max_abs_error < 1e-4 and report.max_rel_error < 1e-4
    # BN folds into the preceding conv: its 2C affine params (and 2C stats) disappear, at most C biases
    # appear; a few float scalars (Clip bounds of relu6) are initializers too.
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    non_bn = sum(p.numel() for p in model.parameters()) - sum(2 * m.num_features for m in bns)
    assert non_bn <= report.params <= non_bn + sum(m.num_features for m in bns) + 8
    assert set(report.to_dict()) == {f.name for f in ExportReport.__dataclass_fields__.values()}

    summary = onnx_summary(out)
    assert summary["nodes"] == report.nodes and summary["params"] == report.params
    assert summary["inputs"][0]["shape"] == ["batch", 3, 8, 8]
    assert isinstance(summary["outputs"][0]["shape"][0], str)
    assert sum(summary["op_types"].values()) == report.nodes

    x5 = torch.randn(5, 3, 8, 8)
    (got,) = run_onnx(out, (x5.numpy(),))
    with torch.no_grad():
        want = copy.deepcopy(model).eval()(x5).numpy()
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-4, rtol=1e-3)

    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert _leftovers(out.parent) == []


def test_unwritable_path_fails_before_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported before checking the output path")

    monkeypatch.setattr(export_mod, "_torch_export", never)
    with pytest.raises(OutputError, match="not_a_dir"):
        export_onnx(SmallNet(), torch.randn(1, 3, 8, 8), blocker / "model.onnx")
    with pytest.raises(OutputError, match="directory"):
        export_onnx(SmallNet(), torch.randn(1, 3, 8, 8), tmp_path)


def test_wrong_export_raises_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    with pytest.raises(VerificationError, match=r"model\.onnx.*batch 1.*max abs error 1"):
        export_onnx(ExportOnlyBias(), torch.randn(2, 4), out)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_ort_mismatch_raises_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    real_run = export_mod._run_session

    def off_by_a_bit(session: object, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        return [y + 0.01 for y in real_run(session, inputs)]

    monkeypatch.setattr(export_mod, "_run_session", off_by_a_bit)
    with pytest.raises(VerificationError, match="model.onnx"):
        export_onnx(nn.Linear(4, 3), torch.randn(1, 4), out, check_batches=(2,))
    assert out.read_bytes() == b"previous" and _leftovers(tmp_path) == []


def test_static_batch_and_onnxsim_failure_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxsim

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("onnxsim exploded")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    out = tmp_path / "model.onnx"
    report = export_onnx(_make(SmallNet), (torch.randn(2, 3, 8, 8),), out, dynamic_batch=False)
    assert not report.simplified and not report.dynamic_batch
    assert onnx_summary(out)["inputs"][0]["shape"] == [2, 3, 8, 8]
    assert report.max_abs_error < 1e-4


def test_untraceable_model_raises_trace_error(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    with pytest.raises(TraceError, match="DataDependent"):
        export_onnx(DataDependent(), torch.randn(2, 3), out)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_ort_latency_reports_percentiles(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    export_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(1, 3, 8, 8), out, simplify=False)
    stats = ort_latency(out, (2, 3, 8, 8), warmup=1, runs=5)
    assert set(stats) == {"median_ms", "p10_ms", "p90_ms", "runs"}
    assert stats["runs"] == 5
    assert 0 < stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]


def test_paired_latency_interleaves_rounds_and_takes_medians(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scripted clock (no wall-clock time is asserted): each round times baseline then candidate."""
    from graphprune import latency

    small, big = tmp_path / "small.onnx", tmp_path / "big.onnx"
    export_onnx(nn.Conv2d(3, 4, 3), torch.randn(1, 3, 16, 16), small, simplify=False)
    export_onnx(nn.Conv2d(3, 64, 3), torch.randn(1, 3, 16, 16), big, simplify=False)
    # per-round medians: baseline 4, 8, 6 -> 6; candidate 1, 3, 2 -> 2; ratio 1/3
    scripted = {
        big: [[4.0, 4.0, 9.0], [8.0, 7.0, 8.0], [6.0, 6.0, 1.0]],
        small: [[1.0, 0.5, 1.0], [3.0] * 3, [2.0] * 3],
    }
    calls: list[tuple[Path, int, int]] = []
    real_prepared = latency._prepared

    def prepared(path: Path, shape: object, threads: int) -> tuple[object, dict[str, np.ndarray]]:
        _, feed = real_prepared(path, shape, threads)  # type: ignore[arg-type]
        return Path(path), feed  # the "session" is the file, so the fake clock knows which model runs

    def time_runs(session: Path, feed: dict[str, np.ndarray], warmup: int, runs: int) -> list[float]:
        calls.append((session, warmup, runs))
        return scripted[session].pop(0)

    monkeypatch.setattr(latency, "_prepared", prepared)
    monkeypatch.setattr(latency, "_time_runs", time_runs)
    stats = paired_latency(big, small, (1, 3, 16, 16), rounds=3, runs=3)
    assert [c[0] for c in calls] == [big, small] * 3
    assert [c[1] for c in calls] == [5, 5, 1, 1, 1, 1]
    assert stats["baseline_ms"] == 6.0 and stats["candidate_ms"] == 2.0
    assert stats["ratio"] == pytest.approx(1 / 3)


def test_model_over_the_protobuf_limit_uses_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 2 GB limit is lowered to 0 bytes so a small model takes the external-data path."""
    out = tmp_path / "model.onnx"
    monkeypatch.setattr(export_mod, "EXTERNAL_DATA_BYTES", 0)
    model = _make(SmallNet)
    report = export_onnx(model, torch.randn(1, 3, 8, 8), out)
    data = tmp_path / "model.onnx.data"
    assert report.external_data == data.name and data.is_file()
    assert report.simplify_error is not None and "2 GB" in report.simplify_error
    proto = onnx.load(str(out), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    x = torch.randn(3, 3, 8, 8)
    (got,) = run_onnx(out, (x.numpy(),))
    with torch.no_grad():
        want = copy.deepcopy(model).eval()(x).numpy()
    assert np.allclose(got, want, atol=1e-4, rtol=1e-3)

    monkeypatch.undo()  # a small export to the same path leaves no stale data file behind
    report = export_onnx(model, torch.randn(1, 3, 8, 8), out)
    assert report.external_data is None and not data.exists() and _leftovers(tmp_path) == []


def test_onnxsim_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxsim

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("onnxsim exploded")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    report = export_onnx(nn.Linear(4, 3), torch.randn(1, 4), tmp_path / "m.onnx")
    assert not report.simplified
    assert report.simplify_error == "onnxsim failed: RuntimeError: onnxsim exploded"


def test_errors_name_the_label_not_the_file(tmp_path: Path) -> None:
    out = tmp_path / "staging" / "model.onnx"
    with pytest.raises(VerificationError) as info:
        export_onnx(ExportOnlyBias(), torch.randn(2, 4), out, label="out/model.onnx")
    assert str(info.value).startswith("out/model.onnx: ") and str(tmp_path) not in str(info.value)
