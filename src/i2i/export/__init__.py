"""Export: checkpoint -> translators -> checked ONNX / FP16 ONNX graphs, with parity reports.

    from i2i.export import check_parity, convert_fp16, export_onnx, parity_ok_fp32

    info = export_onnx(translator, Path("A2B.onnx"), shape_rule, channels=3)
    report = check_parity(translator, Path("A2B.onnx"), shape_rule, channels=3)
    assert parity_ok_fp32(report)

:func:`export_checkpoint` runs the whole stage into a model repository version.
"""

from i2i.export.errors import ExportError
from i2i.export.fp16 import FP16_OP_BLOCK_LIST, convert_fp16
from i2i.export.onnx import export_onnx, training_mode_batchnorm_nodes
from i2i.export.parity import check_parity, parity_ok_fp16, parity_ok_fp32
from i2i.export.pipeline import export_checkpoint, format_parity, parse_formats

__all__ = [
    "FP16_OP_BLOCK_LIST",
    "ExportError",
    "check_parity",
    "convert_fp16",
    "export_checkpoint",
    "export_onnx",
    "format_parity",
    "parity_ok_fp16",
    "parity_ok_fp32",
    "parse_formats",
    "training_mode_batchnorm_nodes",
]
