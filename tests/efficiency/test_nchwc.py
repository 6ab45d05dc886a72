from __future__ import annotations

import random
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

import graphprune as gp
from graphprune.efficiency.latency import LatencyPredictor, export_plan, kept_plan
from graphprune.efficiency.nchwc import NchwcLayout, probe_layout
from graphprune.models import get_model


def test_the_layout_blocks_by_input_count_and_pads_outputs_to_whole_blocks() -> None:
    layout = NchwcLayout(block=16, multiple=4)
    t = torch.tensor
    out = t([93.0, 93.0, 24.0, 94.0, 96.0, 8.0])
    inp = t([96.0, 22.0, 12.0, 94.0, 96.0, 8.0])
    depthwise = t([False, False, False, True, True, False])
    conv = t([True, True, True, True, True, False])
    # dense: input a multiple of 4 or under one block; depthwise: its own count; a linear layer: never
    assert layout.blocked(out, inp, depthwise, conv).tolist() == [True, False, True, False, True, False]
    assert layout.padded(t([84.0, 96.0, 1.0])).tolist() == [96.0, 96.0, 16.0]
    none = NchwcLayout(block=0, multiple=1)  # onnxruntime without the rewrite (not x86)
    assert not none.blocked(out, inp, depthwise, conv).any()
    assert none.padded(t([84.0])).tolist() == [84.0]


def optimized_convs(path: Path, tmp: Path) -> list[bool]:
    """Per Conv of the file after onnxruntime's own graph optimisation: whether it became an NCHWc conv."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    nodes = onnx.load(so.optimized_model_filepath).graph.node
    return [n.domain.endswith("nchwc") for n in nodes if n.op_type in ("Conv", "FusedConv")]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_probed_layout_predicts_which_convs_onnxruntime_blocks(seed: int, tmp_path: Path) -> None:
    """On pruned MobileNetV2 sub-networks (depthwise, dense, residual adds) with arbitrary kept counts,
    the predictor's layout test agrees conv by conv with the graph onnxruntime builds on this machine."""
    torch.manual_seed(0)
    pg = gp.trace(get_model("cifar_mobilenetv2").eval(), torch.randn(1, 3, 32, 32))
    rng = random.Random(seed)
    kept = {g.id: rng.randint(max(1, g.size // 4), g.size) for g in pg.prunable_groups}
    export_plan(pg, kept_plan(pg, kept), tmp_path / "sub.onnx")
    predictor = LatencyPredictor(pg)
    assert predictor.layout == probe_layout()
    fl = predictor.flops
    keep_out, keep_in, _ = fl.layer_keeps({gid: torch.tensor(float(k)) for gid, k in kept.items()})
    out, inp = torch.round(keep_out * fl.out_channels), torch.round(keep_in * fl.in_channels)
    blocked = predictor.layout.blocked(out, inp, ~fl.in_scales, predictor.conv)
    predicted = [bool(b) for b, c in zip(blocked, predictor.conv, strict=True) if c]
    actual = optimized_convs(tmp_path / "sub.onnx", tmp_path)
    assert predicted == actual
    if predictor.layout.block:  # arbitrary counts put some convs on each path
        assert 0 < sum(actual) < len(actual)
