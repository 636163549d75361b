"""Convert an exported FP32 translator graph to FP16, keeping what needs FP32 in FP32.

TensorRT 11 builds strongly typed networks: the precision of every layer is the one written
in the ONNX graph, so FP16 is decided here, not by a builder flag. The convolutions and
activations run in FP16; normalisation (instance norm and the reductions and powers of a
decomposed norm), other precision-sensitive ops and the uint8 pre- and post-processing stay
in FP32, with Cast nodes at the borders. The uint8 input and output are left unchanged.

Hand-written normalisation (MUNIT's layer norm, AdaIN's statistics) exports as elementwise
ops around reductions rather than as one normalisation op; its nodes are found by their
structure (:func:`normalisation_nodes`) and kept in FP32 by name, so a centred value is
never squared in FP16 (a deviation above 256 overflows it).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto
from onnxconverter_common import float16

from i2i.export.errors import ExportError
from i2i.export.onnx import default_opset, io_specs, save_model
from i2i.repository import sha256_file

logger = logging.getLogger(__name__)

# On top of onnxconverter-common's defaults (ops of classic ML models, and index or
# range ops such as Resize, Range, CumSum, Min, Max).
PRECISION_SENSITIVE_OPS = (
    # Normalisation: the mean and variance of a whole feature map overflow or lose too
    # much in FP16.
    "InstanceNormalization",
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "Pow",
    "Sqrt",
    "Reciprocal",
    # Exponentials overflow FP16 beyond about 11.
    "Exp",
    "Log",
    "Softmax",
    "LogSoftmax",
    # The uint8 conversion: Round and Clip must see FP32 values to round like PyTorch.
    # (Cast nodes are kept in FP32 too, but by name: the converter inserts Casts of its own
    # and, with "Cast" in the op block list, would block its own insertions forever.)
    "Round",
    "Clip",
)
FP16_OP_BLOCK_LIST = tuple(
    dict.fromkeys([*float16.DEFAULT_OP_BLOCK_LIST, *PRECISION_SENSITIVE_OPS])
)

# Elementwise ops that may make up the pre-processing (uint8 -> [-1, 1], NHWC -> NCHW) and
# the post-processing (back to uint8 NHWC) around the generator.
_IO_PROCESSING_OPS = frozenset(
    {"Cast", "Transpose", "Div", "Sub", "Mul", "Add", "Round", "Clip", "Identity"}
)


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """Write an FP16 copy of the ONNX model ``src`` to ``dst``; return its description.

    Uses onnxconverter-common's ``convert_float_to_float16`` with ``keep_io_types=True``,
    :data:`FP16_OP_BLOCK_LIST`, and the Cast nodes, the pre- and post-processing nodes and
    the nodes of hand-written normalisation (:func:`normalisation_nodes`) blocked by name.

    Returns:
        ``file``, ``format``, ``precision``, ``source``, ``opset``, ``input``, ``output``,
        ``blocked_ops`` (the op types of the graph kept in FP32), ``blocked_nodes`` (the
        pre- and post-processing nodes, kept in FP32 whatever their op),
        ``normalisation_nodes`` (the nodes of hand-written normalisation kept in FP32 by
        name), ``size_bytes`` and ``sha256``.

    Raises:
        ExportError: the conversion failed, changed the inputs or outputs, or its result
            fails the ONNX checker.
    """
    src, dst = Path(src), Path(dst)
    model = onnx.load_model(src)
    graph = model.graph
    _name_unnamed_nodes(graph)
    io_nodes = io_processing_nodes(graph)
    norm_nodes = normalisation_nodes(model)
    # The converter leaves a Cast's target type alone, so a Cast to FP32 must stay FP32.
    node_block_list = io_nodes | norm_nodes | {n.name for n in graph.node if n.op_type == "Cast"}
    blocked = {n.name for n in graph.node if n.op_type in FP16_OP_BLOCK_LIST} | node_block_list
    _unshare_initializers(graph, blocked)
    try:
        with warnings.catch_warnings():
            # One warning per weight tensor with values below FP16's range, which become
            # +-1e-7: expected, and harmless next to the weights that matter.
            warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
            converted = float16.convert_float_to_float16(
                model,
                keep_io_types=True,
                op_block_list=list(FP16_OP_BLOCK_LIST),
                node_block_list=sorted(node_block_list),
            )
        round_trips = _drop_round_trip_casts(converted)
    except (ValueError, AssertionError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"could not convert {src} to FP16: {error}") from error
    logger.debug("%s: %d FP32 -> FP16 -> FP32 cast pairs bypassed", src.name, round_trips)
    before, after = io_specs(model), io_specs(converted)
    if before != after:
        raise ExportError(
            f"FP16 conversion of {src} changed the inputs or outputs: {before} -> {after}"
        )
    save_model(converted, dst)
    return {
        "file": dst.name,
        "format": "onnx",
        "precision": "fp16",
        "source": src.name,
        "opset": default_opset(converted),
        "input": after["inputs"][0],
        "output": after["outputs"][0],
        "blocked_ops": sorted(
            {
                n.op_type
                for n in graph.node
                if n.op_type in FP16_OP_BLOCK_LIST or n.op_type == "Cast"
            }
        ),
        "blocked_nodes": sorted(io_nodes),
        "normalisation_nodes": sorted(norm_nodes),
        "size_bytes": dst.stat().st_size,
        "sha256": sha256_file(dst),
    }


def io_processing_nodes(graph: onnx.GraphProto) -> set[str]:
    """Names of the elementwise chains between the graph's inputs/outputs and the network.

    A chain is followed from each graph input forwards and from each graph output backwards
    through :data:`_IO_PROCESSING_OPS` nodes that have exactly one non-constant input and
    one consumer (Shape and Size nodes aside), and stops at the first other node (the generator's first convolution, its
    final Tanh).
    """
    constants = {t.name for t in graph.initializer} | {
        out for n in graph.node if n.op_type == "Constant" for out in n.output
    }
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type in ("Shape", "Size"):  # read sizes only, never values
            continue
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def dynamic_inputs(node: onnx.NodeProto) -> list[str]:
        return [name for name in node.input if name and name not in constants]

    def is_link(node: onnx.NodeProto) -> bool:
        return (
            node.op_type in _IO_PROCESSING_OPS
            and len(dynamic_inputs(node)) == 1
            and len(node.output) == 1
        )

    found: set[str] = set()
    for value in graph.input:
        name = value.name
        while len(consumers.get(name, [])) == 1 and is_link(consumers[name][0]):
            node = consumers[name][0]
            found.add(node.name)
            name = node.output[0]
    graph_outputs = {value.name for value in graph.output}
    for value in graph.output:
        name = value.name
        while name in producer and is_link(producer[name]):
            node = producer[name]
            found.add(node.name)
            name = dynamic_inputs(node)[0]
            if len(consumers.get(name, [])) != 1 or name in graph_outputs:
                break
    return found


# Reductions whose result, taken from a value and subtracted from it, centres it; and the
# reductions that make the statistic a centred value is then scaled by.
_MEAN_OPS = frozenset({"ReduceMean"})
_STATISTIC_OPS = frozenset(
    {"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceMax", "ReduceMin"}
)


def normalisation_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the float nodes of hand-written normalisations, found by structure.

    For every ``m = ReduceMean(x)``: the ``Sub(x, m)`` nodes that centre ``x`` (values
    ``d``), the ``Mul(d, d)`` / ``Pow(d, .)`` nodes that square them, and every ``Mul(d, s)``
    or ``Div(d, s)`` that normalises them by a statistic ``s`` of ``x`` (an ``s`` computed
    with a reduction), together with the float nodes that compute ``s`` from ``x`` (second
    reduction, unbiased-count correction, ``Add(eps)``, ``Sqrt``, ``Reciprocal``, reshapes).
    Nodes that only compute sizes (integer outputs) and what follows the normalisation
    (the affine ``gamma``/``beta``) are left out. Nodes must be named.
    """
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    float_values = _float_values(model)

    found: set[str] = set()
    for mean in (n for n in graph.node if n.op_type in _MEAN_OPS):
        x, m = mean.input[0], mean.output[0]
        centred = {
            n.output[0]: n
            for n in consumers.get(m, [])
            if n.op_type == "Sub" and list(n.input) == [x, m]
        }
        if not centred:
            continue
        for d, sub in centred.items():
            for user in consumers.get(d, []):
                others = [name for name in user.input if name != d]
                if user.op_type == "Pow" or (
                    user.op_type == "Mul" and (not others or others[0] in centred)
                ):
                    found |= {sub.name, user.name}  # a square of the centred value
                elif user.op_type in ("Mul", "Div") and len(others) == 1:
                    chain = _statistic_chain(graph, others[0], x)
                    if any(n.op_type in _STATISTIC_OPS for n in chain):
                        found |= {sub.name, user.name, mean.name}
                        found |= {
                            n.name for n in chain if any(out in float_values for out in n.output)
                        }
    return found


def _statistic_chain(graph: onnx.GraphProto, value: str, source: str) -> list[onnx.NodeProto]:
    """The nodes on the paths from ``source`` to ``value`` (``source``'s producer excluded).

    Empty unless ``value`` depends on ``source``: a learned scale is no statistic.
    """
    producer = {out: n for n in graph.node for out in n.output}
    ancestors: set[str] = set()
    stack, seen = [value], {source}
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in ancestors:
            continue
        ancestors.add(node.name)
        for name in node.input:
            if name and name not in seen:
                seen.add(name)
                stack.append(name)
    depends = {source}
    chain = []
    for node in graph.node:  # topological order
        if node.name in ancestors and any(name in depends for name in node.input):
            depends.update(node.output)
            chain.append(node)
    return chain if value in depends else []


def _float_values(model: onnx.ModelProto) -> set[str]:
    """Names of the FP32 values of ``model`` (inputs, outputs and inferred values)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    return {
        value.name
        for value in [*graph.input, *graph.output, *graph.value_info]
        if value.type.tensor_type.elem_type == TensorProto.FLOAT
    }


def _drop_round_trip_casts(model: onnx.ModelProto) -> int:
    """Let FP32 consumers of an FP32 value read it directly, not through FP16 and back.

    The converter casts every blocked node's FP32 output to FP16 and casts it back before
    each blocked consumer; it removes such a pair only when the value has one consumer. A
    round trip through FP16 loses what blocking was for (a variance above 65504 becomes
    inf), so every ``Cast(to=FLOAT)`` of a ``Cast(to=FLOAT16)`` of an FP32 value is
    bypassed and the Casts left unused are removed. Returns how many were bypassed.
    """
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    for value in [*inferred.input, *inferred.output, *inferred.value_info]:
        types[value.name] = value.type.tensor_type.elem_type

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    producer = {out: n for n in graph.node for out in n.output}
    replace: dict[str, str] = {}
    for node in graph.node:
        if cast_to(node) != TensorProto.FLOAT:
            continue
        half = producer.get(node.input[0])
        if (
            half is not None
            and cast_to(half) == TensorProto.FLOAT16
            and types.get(half.input[0]) == TensorProto.FLOAT
        ):
            replace[node.output[0]] = half.input[0]
    outputs = {value.name for value in graph.output}
    replace = {old: new for old, new in replace.items() if old not in outputs}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in replace:
                node.input[index] = replace[name]
    while True:  # the bypassed Casts, then FP16 Casts nothing reads any more
        used = {name for node in graph.node for name in node.input} | outputs
        unused = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in used]
        if not unused:
            break
        for node in unused:
            graph.node.remove(node)
    return len(replace)


def _name_unnamed_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name: the converter blocks nodes and names casts by name."""
    taken = {node.name for node in graph.node if node.name}
    for index, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _unshare_initializers(graph: onnx.GraphProto, blocked: Iterable[str]) -> None:
    """Give blocked nodes their own copy of FP32 initializers they share with other nodes.

    The converter keeps an initializer in FP32 if any blocked node reads it, which would
    leave an FP16 node reading FP32 (an invalid graph).
    """
    blocked = set(blocked)
    readers: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.name in blocked)
    shared = {
        t.name: t
        for t in graph.initializer
        if t.data_type == TensorProto.FLOAT and readers.get(t.name) == {True, False}
    }
    for name, tensor in shared.items():
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = f"{name}_fp32"
        graph.initializer.append(copy)
        for node in graph.node:
            if node.name in blocked:
                for index, input_name in enumerate(node.input):
                    if input_name == name:
                        node.input[index] = copy.name
