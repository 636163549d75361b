"""Export a translator to ONNX: uint8 images in, uint8 images out, checked before it is kept.

The graph has one input ``image`` (uint8 [N, H, W, C_in]) and one output ``translated``
(uint8 [N, H, W, C_out]); a multimodal family's translator has a second input ``style``
(float32 [N, S]) that shares the image's batch dimension. A style encoder
(:func:`export_style_encoder`) maps ``image`` to one output ``style`` (float32 [N, S]).
N is always dynamic. H and W are dynamic for generators that take
any multiple of a block size (ResNets) and fixed for those that take one size (U-Nets); the
exported graph carries the shape rule, so the output provably has the input's size.

The exporter is torch's own ``torch.onnx.export(..., dynamo=True)`` (torch.export, then
onnxscript). The older TorchScript exporter still exists in torch 2.x but is deprecated and
marked for removal; the torch.export path is the maintained one, needs nothing online, folds
eval-mode batch norm into the convolutions and writes instance norm as
InstanceNormalization.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import helper, version_converter
from torch import nn

from i2i.export.errors import ExportError
from i2i.models import ShapeRule
from i2i.repository import sha256_file

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "translated"
STYLE_NAME = "style"  # the translator's style input and the style encoder's output
DOMAIN_NAME = "domain"  # a multi-domain conditional graph's target indices, int64 [N]
MIN_OPSET = 18
_DIM_NAMES = ("batch", "height", "width")
_SIMPLIFIERS = ("onnxslim", "onnxsim")


def export_onnx(
    translator: nn.Module,
    path: Path,
    shape_rule: ShapeRule,
    channels: int,
    opset: int = MIN_OPSET,
    simplify: bool = False,
    style_dim: int = 0,
) -> dict[str, Any]:
    """Export ``translator`` to ``path`` and check the file; return its description.

    Args:
        translator: maps uint8 [N, H, W, ``channels``] to uint8 [N, H, W, C_out] (for example
            an :class:`i2i.models.ImageTranslator`). Exported in eval mode; the modes of its
            layers are restored afterwards.
        path: the ``.onnx`` file to write (replaced atomically); its folder is created.
        shape_rule: the image sizes the translator accepts; decides which sizes are dynamic.
        channels: input channels, 1 or 3.
        opset: the ONNX opset of the default domain, at least 18.
        simplify: run onnxslim or onnxsim if one is installed; skipped with a log note if not.
        style_dim: S of a multimodal translator's second input ``style`` (float32 [N, S]);
            0 for translators of one input.

    Returns:
        ``file``, ``format``, ``precision``, ``opset``, ``exporter``, ``input`` and
        ``output`` (each ``{"name", "dtype", "shape"}``, the manifest's tensor spec, with
        the symbolic sizes ``"batch"``, ``"height"``, ``"width"`` as strings), ``style``
        (the style input's spec, None without one),
        ``simplifier`` (None when not simplified), ``size_bytes`` and ``sha256``.

    Raises:
        ExportError: the exporter failed, the graph does not have the expected inputs and
            outputs, contains training-mode BatchNormalization or fails the ONNX checker.
    """
    if style_dim < 0:
        raise ValueError(f"style_dim must be >= 0, got {style_dim}")
    path = Path(path)
    example, dynamic = _example_input(shape_rule, channels)
    examples: tuple[torch.Tensor, ...] = (example,)
    dynamics: tuple[dict[int, Any], ...] = (dynamic,)
    names = [INPUT_NAME]
    if style_dim:
        # The same Dim object: the style's batch is the image's (one code per image).
        examples += (torch.randn(example.shape[0], style_dim),)
        dynamics += ({0: dynamic[0]},)
        names.append(STYLE_NAME)
    model, simplifier = _export(
        translator, path, examples, dynamics, names, [OUTPUT_NAME], opset, simplify
    )
    _check_io(model, shape_rule, channels, path, style_dim)
    save_model(model, path)
    specs = io_specs(model)
    return _record(
        model,
        path,
        simplifier,
        input=specs["inputs"][0],
        output=specs["outputs"][0],
        style=specs["inputs"][1] if style_dim else None,
    )


def _record(model: Any, path: Path, simplifier: str | None, **io: Any) -> dict[str, Any]:
    """The manifest facts of an FP32 ONNX file just written: format, opset, exporter, the
    graph's tensor specs ``io`` (in the order given), simplifier, size and hash."""
    return {
        "file": path.name,
        "format": "onnx",
        "precision": "fp32",
        "opset": default_opset(model),
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        **io,
        "simplifier": simplifier,
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def export_style_encoder(
    encoder: nn.Module,
    path: Path,
    shape_rule: ShapeRule,
    channels: int,
    style_dim: int,
    opset: int = MIN_OPSET,
    simplify: bool = False,
) -> dict[str, Any]:
    """Export a style encoder (uint8 [N, H, W, C] -> float32 [N, S]) to ``path``, checked.

    The graph's input is ``image`` with the shape rule's dynamic sizes, its output
    ``style``. Returns ``file``, ``format``, ``precision``, ``opset``, ``exporter``,
    ``input``, ``output``, ``simplifier``, ``size_bytes`` and ``sha256``.

    Raises:
        ExportError: as :func:`export_onnx`, for a graph that is not image in, style out.
    """
    if style_dim < 1:
        raise ValueError(f"style_dim must be >= 1, got {style_dim}")
    path = Path(path)
    example, dynamic = _example_input(shape_rule, channels)
    model, simplifier = _export(
        encoder, path, (example,), (dynamic,), [INPUT_NAME], [STYLE_NAME], opset, simplify
    )
    _check_style_encoder_io(model, shape_rule, channels, style_dim, path)
    save_model(model, path)
    specs = io_specs(model)
    return _record(
        model,
        path,
        simplifier,
        input=specs["inputs"][0],
        output=specs["outputs"][0],
    )


def export_conditional(
    translator: nn.Module,
    path: Path,
    shape_rule: ShapeRule,
    channels: int,
    num_domains: int,
    opset: int = MIN_OPSET,
    simplify: bool = False,
) -> dict[str, Any]:
    """Export a multi-domain :class:`~i2i.models.translators.DomainTranslator` whole: inputs
    ``image`` (uint8 [N, H, W, C]) and ``domain`` (int64 [N], each image's target index),
    output ``translated``; checked like :func:`export_onnx`.

    Returns the keys of :func:`export_onnx`, with ``domain`` (the index input's spec) in
    place of ``style``.

    Raises:
        ExportError: as :func:`export_onnx`, for a graph that is not image and domain in,
            image out.
    """
    if num_domains < 2:
        raise ValueError(f"num_domains must be >= 2, got {num_domains}")
    path = Path(path)
    example, dynamic = _example_input(shape_rule, channels)
    # Two different targets in the example, so no index is specialised into the graph.
    domain = torch.arange(example.shape[0], dtype=torch.int64) % num_domains
    model, simplifier = _export(
        translator,
        path,
        (example, domain),
        (dynamic, {0: dynamic[0]}),  # the same Dim: one index per image
        [INPUT_NAME, DOMAIN_NAME],
        [OUTPUT_NAME],
        opset,
        simplify,
    )
    _check_conditional_io(model, shape_rule, channels, path)
    save_model(model, path)
    specs = io_specs(model)
    return _record(
        model,
        path,
        simplifier,
        input=specs["inputs"][0],
        domain=specs["inputs"][1],
        output=specs["outputs"][0],
    )


def export_graph(
    module: nn.Module,
    path: Path,
    examples: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = MIN_OPSET,
    simplify: bool = False,
) -> dict[str, Any]:
    """Export one of a family's extra graphs (:class:`~i2i.models.registry.ExportGraph`):
    dimension 0 of every input (and so of the outputs) is the dynamic ``batch``, every other
    size that of ``examples``; checked to have exactly the named inputs and outputs.

    Returns ``file``, ``format``, ``precision``, ``opset``, ``exporter``, ``inputs`` and
    ``outputs`` (lists of tensor specs), ``simplifier``, ``size_bytes`` and ``sha256``.

    Raises:
        ExportError: the exporter failed or the graph's inputs or outputs differ from the
            names given.
    """
    path = Path(path)
    if len(examples) != len(input_names):
        raise ValueError(f"{len(examples)} example inputs for the inputs {list(input_names)}")
    batch = torch.export.Dim(_DIM_NAMES[0])
    model, simplifier = _export(
        module,
        path,
        examples,
        tuple({0: batch} for _ in examples),
        list(input_names),
        list(output_names),
        opset,
        simplify,
        image_input=False,
    )
    first = model.graph.input[0].type.tensor_type.shape.dim
    if first and first[0].dim_param and first[0].dim_param != _DIM_NAMES[0]:
        old = first[0].dim_param
        for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param == old:
                    dim.dim_param = _DIM_NAMES[0]
    specs = io_specs(model)
    got = ([s["name"] for s in specs["inputs"]], [s["name"] for s in specs["outputs"]])
    if got != (list(input_names), list(output_names)):
        raise ExportError(
            f"{path}: expected inputs {list(input_names)} and outputs {list(output_names)}, "
            f"got inputs {got[0]} and outputs {got[1]}"
        )
    for spec in [*specs["inputs"], *specs["outputs"]]:
        if not spec["shape"] or spec["shape"][0] != _DIM_NAMES[0]:
            raise ExportError(
                f"{path}: {spec['name']} has shape {spec['shape']}, expected a dynamic batch "
                "as its first dimension"
            )
    save_model(model, path)
    return _record(
        model,
        path,
        simplifier,
        inputs=specs["inputs"],
        outputs=specs["outputs"],
    )


def _check_conditional_io(
    model: onnx.ModelProto, shape_rule: ShapeRule, channels: int, path: Path
) -> None:
    """Raise ExportError unless the graph is uint8 image + int64 [N] domain -> uint8 image."""
    specs = io_specs(model)
    names = [s["name"] for s in specs["inputs"]]
    if names != [INPUT_NAME, DOMAIN_NAME]:
        raise ExportError(
            f"{path}: expected inputs {[INPUT_NAME, DOMAIN_NAME]}, got inputs {names}"
        )
    domain = specs["inputs"][1]
    if domain["dtype"] != "int64" or domain["shape"] != [_DIM_NAMES[0]]:
        raise ExportError(
            f"{path}: domain is {domain['dtype']} {domain['shape']}, expected int64 "
            f"{[_DIM_NAMES[0]]} (one target index per image)"
        )
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    del stripped.graph.input[1]  # the image and output checks are those of a translator
    _check_io(stripped, shape_rule, channels, path)


def _export(
    module: nn.Module,
    path: Path,
    examples: tuple[torch.Tensor, ...],
    dynamic: tuple[dict[int, Any], ...],
    input_names: list[str],
    output_names: list[str],
    opset: int,
    simplify: bool,
    image_input: bool = True,
) -> tuple[onnx.ModelProto, str | None]:
    """Run the exporter in eval mode; the model (opset raised, sizes named, maybe simplified)
    and the simplifier used. Refuses training-mode batch norm. ``image_input``: the first
    input is an image whose channels (1 or 3) are checked."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    channels = int(examples[0].shape[-1])
    if image_input and channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    with eval_mode(module), torch.no_grad():
        try:
            program = torch.onnx.export(
                module,
                examples,
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic,
                external_data=False,
                verbose=False,
            )
        except Exception as error:  # the exporter raises many types; all mean the same here
            raise ExportError(
                f"could not export {type(module).__name__} to ONNX ({path}): {error}"
            ) from error
    if program is None:  # only the TorchScript exporter returns None
        raise ExportError(f"the ONNX exporter returned no program for {path}")
    model = program.model_proto
    if default_opset(model) < opset:
        model = version_converter.convert_version(model, opset)
    _name_dims(model)

    simplifier = None
    if simplify:
        model, simplifier = _simplify(model)
    bad = training_mode_batchnorm_nodes(model)
    if bad:
        raise ExportError(
            f"{path}: the graph has BatchNormalization in training mode ({', '.join(bad)}); "
            "TensorRT would compute it wrongly. Is a norm layer (instance norm, AdaIN) "
            "exported through batch norm, or was a module left in training mode?"
        )
    return model, simplifier


def training_mode_batchnorm_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of BatchNormalization nodes that normalise with batch statistics (training mode).

    Found by ``training_mode=1``, by the running-statistics outputs only training mode has,
    or by ``is_test=0`` in old opsets; in the main graph, its subgraphs and local functions.
    Unnamed nodes are listed by their position.
    """
    found = []
    for graph_name, nodes in _all_node_lists(model):
        for index, node in enumerate(nodes):
            if node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx"):
                continue
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            extra_outputs = [name for name in node.output[1:] if name]
            if (
                attributes.get("training_mode", 0) == 1
                or attributes.get("is_test", 1) == 0
                or extra_outputs
            ):
                found.append(node.name or f"{graph_name}:BatchNormalization#{index}")
    return found


def default_opset(model: onnx.ModelProto) -> int:
    """The opset version of the default (``ai.onnx``) domain."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("the model imports no opset of the default ONNX domain")


def io_specs(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """``{"inputs": [...], "outputs": [...]}``, each ``{"name", "dtype", "shape"}``.

    Symbolic sizes are their names (``"batch"``), fixed ones ints, unknown ones None.
    """

    def spec(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        shape: list[int | str | None] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            else:
                shape.append(dim.dim_param or None)
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return {"name": value.name, "dtype": dtype, "shape": shape}

    return {
        "inputs": [spec(value) for value in model.graph.input],
        "outputs": [spec(value) for value in model.graph.output],
    }


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to ``path`` atomically, then run the full ONNX checker on the file.

    Raises:
        ExportError: the checker rejects the model (the file is removed again).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    os.close(descriptor)
    try:
        onnx.save_model(model, temporary)
        onnx.checker.check_model(temporary, full_check=True)
        os.replace(temporary, path)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path}: the ONNX checker rejects the model: {error}") from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every layer of ``module`` in eval mode for the block, then restore each one's mode."""
    modes = [(layer, layer.training) for layer in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for layer, training in modes:
            layer.training = training


def _example_input(shape_rule: ShapeRule, channels: int) -> tuple[torch.Tensor, dict[int, Any]]:
    """An example batch for tracing and the dynamic dimensions of the ``image`` input.

    The example has batch 2, and height and width that differ, so that torch.export
    specialises none of the dynamic sizes to the example's values.
    """
    dims: dict[int, Any] = {0: torch.export.Dim(_DIM_NAMES[0])}
    if shape_rule.fixed_size is not None:
        height = width = shape_rule.fixed_size
    else:
        m = shape_rule.multiple_of
        blocks = max(2, -(-32 // m))  # about 32 px, at least two blocks
        height, width = m * blocks, m * (blocks + 2)
        for axis, name in ((1, _DIM_NAMES[1]), (2, _DIM_NAMES[2])):
            dims[axis] = torch.export.Dim(name) if m == 1 else m * torch.export.Dim(f"{name}_{m}")
    example = torch.zeros((2, height, width, channels), dtype=torch.uint8)
    return example, dims


def _name_dims(model: onnx.ModelProto) -> None:
    """Rename the input's symbolic sizes (``"4*height_4"``) to ``batch``, ``height``, ``width``.

    The same names are replaced wherever they occur, so the output keeps sharing them.
    """
    images = [value for value in model.graph.input if value.name == INPUT_NAME]
    if len(images) != 1:
        return  # _check_io reports it
    dims = images[0].type.tensor_type.shape.dim
    renames = {
        dims[axis].dim_param: name
        for axis, name in enumerate(_DIM_NAMES)
        if axis < len(dims) and dims[axis].dim_param
    }
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def _image_shape(shape_rule: ShapeRule, channels: int) -> list[int | str]:
    """The image input's expected shape: batch, the rule's sizes (named or fixed), channels."""
    if shape_rule.fixed_size is not None:
        sizes: list[int | str] = [shape_rule.fixed_size, shape_rule.fixed_size]
    else:
        sizes = list(_DIM_NAMES[1:])
    return [_DIM_NAMES[0], *sizes, channels]


def _check_io(
    model: onnx.ModelProto, shape_rule: ShapeRule, channels: int, path: Path, style_dim: int = 0
) -> None:
    """Raise ExportError unless the graph is uint8 [N, H, W, C] (+ float32 [N, S] style) ->
    uint8 [N, H, W, C_out]."""
    specs = io_specs(model)
    names = ([s["name"] for s in specs["inputs"]], [s["name"] for s in specs["outputs"]])
    inputs = [INPUT_NAME, STYLE_NAME] if style_dim else [INPUT_NAME]
    if names != (inputs, [OUTPUT_NAME]):
        raise ExportError(
            f"{path}: expected inputs {inputs} and one output {OUTPUT_NAME!r}, got "
            f"inputs {names[0]} and outputs {names[1]}"
        )
    image, translated = specs["inputs"][0], specs["outputs"][0]
    expected = _image_shape(shape_rule, channels)
    problems = []
    if image["dtype"] != "uint8" or image["shape"] != expected:
        problems.append(f"input is {image['dtype']} {image['shape']}, expected uint8 {expected}")
    if style_dim:
        style = specs["inputs"][1]
        if style["dtype"] != "float32" or style["shape"] != [_DIM_NAMES[0], style_dim]:
            problems.append(
                f"style is {style['dtype']} {style['shape']}, expected float32 "
                f"{[_DIM_NAMES[0], style_dim]} (the image's batch)"
            )
    out_shape = translated["shape"]
    if translated["dtype"] != "uint8" or len(out_shape) != 4 or out_shape[:3] != expected[:3]:
        problems.append(
            f"output is {translated['dtype']} {out_shape}, expected uint8 "
            f"{[*expected[:3], 'channels']} (the input's batch and size)"
        )
    elif out_shape[3] not in (1, 3):
        problems.append(f"output has {out_shape[3]} channels, expected 1 or 3")
    if problems:
        raise ExportError(f"{path}: " + "; ".join(problems))


def _check_style_encoder_io(
    model: onnx.ModelProto, shape_rule: ShapeRule, channels: int, style_dim: int, path: Path
) -> None:
    """Raise ExportError unless the graph is uint8 [N, H, W, C] -> float32 [N, S]."""
    specs = io_specs(model)
    names = ([s["name"] for s in specs["inputs"]], [s["name"] for s in specs["outputs"]])
    if names != ([INPUT_NAME], [STYLE_NAME]):
        raise ExportError(
            f"{path}: expected one input {INPUT_NAME!r} and one output {STYLE_NAME!r}, got "
            f"inputs {names[0]} and outputs {names[1]}"
        )
    image, style = specs["inputs"][0], specs["outputs"][0]
    expected = _image_shape(shape_rule, channels)
    problems = []
    if image["dtype"] != "uint8" or image["shape"] != expected:
        problems.append(f"input is {image['dtype']} {image['shape']}, expected uint8 {expected}")
    if style["dtype"] != "float32" or style["shape"] != [_DIM_NAMES[0], style_dim]:
        problems.append(
            f"output is {style['dtype']} {style['shape']}, expected float32 "
            f"{[_DIM_NAMES[0], style_dim]}"
        )
    if problems:
        raise ExportError(f"{path}: " + "; ".join(problems))


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """Simplify with onnxslim or onnxsim, whichever is installed first; else leave as is."""
    for name in _SIMPLIFIERS:
        try:
            library = importlib.import_module(name)
        except ImportError:
            continue
        if name == "onnxslim":
            return library.slim(model), name
        simplified, valid = library.simplify(model)
        if not valid:
            raise ExportError("onnxsim could not validate the simplified model")
        return simplified, name
    logger.info(
        "not simplifying the ONNX graph: neither %s is installed", " nor ".join(_SIMPLIFIERS)
    )
    return model, None


def _all_node_lists(model: onnx.ModelProto) -> Iterator[tuple[str, list[onnx.NodeProto]]]:
    """(name, nodes) of the main graph, every subgraph in it and every local function."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        yield graph.name or "main", list(graph.node)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attribute.graphs)
    for function in model.functions:
        yield function.name, list(function.node)
