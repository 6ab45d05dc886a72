"""onnxruntime's NCHWc layout on this machine: which convs its blocked x86 kernels take, and the padding.

onnxruntime's CPU provider rewrites a Conv into its NCHWc form (channels in blocks: 8 with AVX2, 16 with
AVX-512) and pads its weights with zeros to whole blocks: 84 kept output channels run as 96. It takes a
conv whose input is blocked, a count that is a multiple of `multiple` (4 in onnxruntime 1.32), or, for a
dense conv, an input narrower than one block (an NCHW-input variant, as for a stem). A depthwise conv's
input is its output. Every other conv, and every linear layer, runs the plain NCHW path: slower per
MAC (far slower for a depthwise conv) and with layout reorders at its borders. Observed with
onnxruntime 1.32 on ResNets and MobileNetV2 (docs/methods.md); the block size and the multiple are
probed from onnxruntime once per process, not assumed.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class NchwcLayout:
    """`block` channels per NCHWc block (0: onnxruntime rewrites no conv here); a conv is taken when its
    input count is a multiple of `multiple` (or, dense, under one block)."""

    block: int
    multiple: int

    def blocked(
        self, out: torch.Tensor, inp: torch.Tensor, depthwise: torch.Tensor, conv: torch.Tensor
    ) -> torch.Tensor:
        """Per layer (kept output and input counts, depthwise, conv flags): whether it runs NCHWc."""
        if not self.block:
            return torch.zeros_like(out, dtype=torch.bool)
        width = torch.where(depthwise, out, inp)
        return conv & ((width % self.multiple == 0) | (~depthwise & (inp < self.block)))

    def padded(self, count: torch.Tensor) -> torch.Tensor:
        """`count` rounded up to whole blocks (the channels a blocked layer computes)."""
        if not self.block:
            return count
        return torch.ceil(count / self.block) * self.block


def _conv_model(out_channels: int, in_channels: int) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((out_channels, in_channels, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, 8, 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _blocked_width(out_channels: int, in_channels: int) -> int:
    """The weight rows of a 1x1 conv after onnxruntime's graph optimisation, if it became an NCHWc conv;
    0 if it did not."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(_conv_model(out_channels, in_channels), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath).graph
    weights = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Conv" and node.domain.endswith("nchwc") and node.input[1] in weights:
            return int(weights[node.input[1]].dims[0])
    return 0


@functools.cache
def probe_layout() -> NchwcLayout:
    """This machine's layout: the width a one-output conv is padded to, and the smallest multiple of
    input channels (above one block, so not the NCHW-input variant) that onnxruntime still blocks."""
    block = _blocked_width(1, 64)
    if not block:
        return NchwcLayout(block=0, multiple=1)
    # 4 * block + m is a multiple of m and of no larger power of two
    taken = (m for m in (1, 2, 4, 8, 16, 32) if m < block and _blocked_width(1, 4 * block + m))
    multiple = next(taken, block)
    return NchwcLayout(block=block, multiple=multiple)
