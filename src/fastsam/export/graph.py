"""The exported graph: the network *and* the box decoding, traced to ONNX.

:class:`DecodedNet` is what gets exported: image batch in, decoded predictions and prototypes out
(the contract in :mod:`fastsam.backends.metadata`), so that a consumer of the file needs only NMS
and mask assembly. Tracing uses torch's TorchScript-based ONNX exporter: it handles the dynamic
height/width (the anchor grid is computed from the feature map shapes inside the graph) and takes
seconds, where the dynamo exporter took ten times longer and wrote a Split that ONNX Runtime refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..nn.model import FastSAMNet
from ..ops.decode import decode_predictions
from .metadata import INPUT_NAME, META_KEY, OUTPUT_NAMES, ExportMetadata

__all__ = ["OPSET", "DecodedNet", "compress_fp16", "export_onnx"]

#: ONNX opset of our exports: read by ONNX Runtime >= 1.12 and OpenVINO >= 2022.1.
OPSET = 17


class DecodedNet(nn.Module):
    """``FastSAMNet`` followed by DFL/anchor decoding: (B, 3, H, W) -> (preds (B, 4+nc+nm, A),
    protos (B, nm, H/4, W/4)); exactly what :meth:`fastsam.FastSAM.forward` returns."""

    def __init__(self, network: FastSAMNet) -> None:
        super().__init__()
        self.network = network
        self.strides = network.strides
        self.reg_max = network.config.reg_max

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.network(images)
        return decode_predictions(out, self.strides, self.reg_max), out.protos


def export_onnx(network: FastSAMNet, path: Path, shape: tuple[int, int], meta: ExportMetadata, dynamic: bool) -> Path:
    """Trace ``network`` (fused, eval, fp32, CPU) at input ``shape`` (H, W) and write ``path`` with
    ``meta`` in its ``metadata_props``. ``dynamic``: batch, height and width are free dimensions."""
    import onnx

    module = DecodedNet(network).eval()
    example = torch.zeros(1, 3, *shape)
    axes = None
    if dynamic:
        axes = {
            INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            OUTPUT_NAMES[0]: {0: "batch", 2: "anchors"},
            OUTPUT_NAMES[1]: {0: "batch", 2: "proto_height", 3: "proto_width"},
        }
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # the TorchScript exporter warns that it is deprecated in favour of dynamo (see above)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=OPSET,
            dynamic_axes=axes,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    if meta.precision == "fp16":
        compress_fp16(model)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()
    for key, value in (("task", "segment"), ("imgsz", str(meta.imgsz)), ("names", str(meta.names))):
        extra = model.metadata_props.add()  # the flat keys other tools look for
        extra.key, extra.value = key, value
    model.producer_name = "fastsam"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def compress_fp16(model) -> None:  # type: ignore[no-untyped-def]
    """Store every float32 weight of an ONNX graph as float16 followed by a Cast back to float32:
    half the file, the same fp32 arithmetic (as OpenVINO's ``compress_to_fp16``)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < 16:
            continue  # small constants (shapes, scalars) stay as they are
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=init.name + "_cast"))
    for node in reversed(casts):
        graph.node.insert(0, node)
