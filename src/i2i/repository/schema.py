"""The manifest's JSON Schema and the checks no schema can express."""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema

from i2i.repository.layout import _NAME, RepositoryError
from i2i.shapes import ShapeRule

log = logging.getLogger(__name__)

FORMAT = "i2i.manifest"
FORMAT_VERSION = 1
_MAX_ERRORS = 10
# What an artifact's file holds (its "graph"); absent means the translator.
TRANSLATOR, STYLE_ENCODER, CONDITIONAL = "translator", "style_encoder", "conditional"
# Any other graph is one of a family's extra graphs (the two-step "encoder", "generator"),
# declared in the manifest's "graphs"; servers ignore those.
RESERVED_GRAPHS = (TRANSLATOR, STYLE_ENCODER, CONDITIONAL)


def artifact_graph(artifact: Mapping[str, Any]) -> str:
    """The graph an artifact holds: TRANSLATOR (also when the key is absent) or STYLE_ENCODER."""
    return str(artifact.get("graph", TRANSLATOR))


def conditional_artifacts(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The artifacts that hold a multi-domain model's conditional graph, in manifest order."""
    return [a for a in manifest["artifacts"] if artifact_graph(a) == CONDITIONAL]


def translator_artifacts(manifest: Mapping[str, Any], direction: str) -> list[Mapping[str, Any]]:
    """The artifacts of `direction` that hold its translator, in manifest order."""
    return [
        a
        for a in manifest["artifacts"]
        if a.get("direction") == direction and artifact_graph(a) == TRANSLATOR
    ]


def style_encoder_artifacts(manifest: Mapping[str, Any], direction: str) -> list[Mapping[str, Any]]:
    """The artifacts of `direction` that hold its style encoder, in manifest order."""
    return [
        a
        for a in manifest["artifacts"]
        if a.get("direction") == direction and artifact_graph(a) == STYLE_ENCODER
    ]


def load_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12), read from the package data."""
    text = resources.files("i2i.schemas").joinpath("manifest.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    return jsonschema.Draft202012Validator(load_schema())


def validate_manifest(manifest: Mapping[str, Any], source: str = "manifest") -> None:
    """Raise RepositoryError, naming `source` and each offending JSON path, unless valid.

    Checks the schema, then what it cannot express: every artifact's direction exists,
    artifact files are unique, a fixed size is a multiple of `multiple_of`, a style
    encoder is declared only beside a style and each style encoder artifact's direction
    declares one (and each declared one has an artifact), and every number is finite
    (JSON has no NaN or infinity).
    """
    if not isinstance(manifest, Mapping):
        raise RepositoryError(f"{source}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise RepositoryError(
            f"{source}: not an i2i manifest (format {manifest.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    found = manifest.get("format_version")
    if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT_VERSION:
        raise RepositoryError(
            f"{source}: format_version {found} was written by a newer i2i; this one reads "
            f"format_version {FORMAT_VERSION}: upgrade i2i"
        )
    lines: list[str] = []
    for error in _validator().iter_errors(manifest):
        lines.extend(_describe(error))
    if not lines:
        lines = _cross_check(manifest)
    if lines:
        lines = sorted(dict.fromkeys(lines))
        more = len(lines) - _MAX_ERRORS
        shown = lines[:_MAX_ERRORS] + ([f"... and {more} more"] if more > 0 else [])
        raise RepositoryError(f"{source} is not valid:\n  " + "\n  ".join(shown))


def _child(path: str, key: object) -> str:
    return f"{path}.{key}" if isinstance(key, str) and _NAME.match(key) else f"{path}[{key!r}]"


def _describe(error: Any) -> list[str]:
    """jsonschema's error as lines `$.json.path: what is wrong`."""
    path, kind, instance = error.json_path, error.validator, error.instance
    if kind == "required":
        return [f"{_child(path, k)}: missing" for k in error.validator_value if k not in instance]
    if kind == "additionalProperties" and isinstance(instance, Mapping):
        allowed = sorted(error.schema.get("properties", {}))
        return [
            f"{_child(path, k)}: unexpected key (allowed here: {', '.join(allowed)})"
            for k in instance
            if k not in allowed
        ]
    if kind is None:  # a `false` schema
        return [f"{path}: not allowed here"]
    if kind == "const":
        return [f"{path}: expected {error.validator_value!r}, got {instance!r}"]
    if kind == "not":
        return [f"{path}: not allowed here ({error.schema.get('description', 'see the schema')})"]
    if kind == "pattern" and "description" in error.schema:
        return [f"{path}: {instance!r} is not valid: expected {error.schema['description']}"]
    message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
    return [f"{path}: {message}"]


def _cross_check(manifest: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    directions = manifest["directions"]
    files: dict[str, int] = {}
    for i, artifact in enumerate(manifest["artifacts"]):
        if artifact_graph(artifact) == CONDITIONAL:
            if "conditional" not in manifest:
                lines.append(
                    f"$.artifacts[{i}].graph: a conditional graph, but the manifest declares no "
                    f"conditional"
                )
        elif artifact_graph(artifact) not in RESERVED_GRAPHS:
            if artifact_graph(artifact) not in manifest.get("graphs", {}):
                lines.append(
                    f"$.artifacts[{i}].graph: {artifact_graph(artifact)!r} is not among the "
                    f"manifest's graphs ({', '.join(manifest.get('graphs', {})) or 'none'})"
                )
            if "direction" in artifact:
                lines.append(
                    f"$.artifacts[{i}].direction: the {artifact_graph(artifact)!r} graph belongs "
                    "to no direction; leave direction out"
                )
        elif artifact["direction"] not in directions:
            lines.append(
                f"$.artifacts[{i}].direction: {artifact['direction']!r} is not a direction of "
                f"this manifest (directions: {', '.join(directions)})"
            )
        first = files.setdefault(artifact["file"], i)
        if first != i:
            lines.append(
                f"$.artifacts[{i}].file: {artifact['file']!r} is already the file of "
                f"$.artifacts[{first}]"
            )
        graph = artifact_graph(artifact)
        spec = directions.get(artifact.get("direction"))
        if graph == STYLE_ENCODER and spec is not None and "style_encoder" not in spec:
            lines.append(
                f"$.artifacts[{i}].graph: a style encoder of {artifact['direction']!r}, whose "
                f"direction declares no style_encoder"
            )
    for direction, spec in directions.items():
        where = _child("$.directions", direction)
        try:
            ShapeRule.from_manifest(spec["shape_rule"])
        except ValueError as exc:
            lines.append(f"{_child(where, 'shape_rule')}: {exc}")
        encoder = spec.get("style_encoder")
        if encoder is not None:
            if spec["style"] is None:
                lines.append(
                    f"{_child(where, 'style_encoder')}: declared, but the direction takes no style"
                )
            try:
                ShapeRule.from_manifest(encoder["shape_rule"])
            except ValueError as exc:
                lines.append(f"{_child(_child(where, 'style_encoder'), 'shape_rule')}: {exc}")
            if not style_encoder_artifacts(manifest, direction):
                lines.append(
                    f"{_child(where, 'style_encoder')}: declared, but no artifact holds it "
                    f"(graph 'style_encoder')"
                )
    for graph in manifest.get("graphs", {}):
        if graph in RESERVED_GRAPHS:
            lines.append(f"{_child('$.graphs', graph)}: {graph!r} names a built-in graph kind")
        elif not any(artifact_graph(a) == graph for a in manifest["artifacts"]):
            lines.append(f"{_child('$.graphs', graph)}: declared, but no artifact holds it")
    lines.extend(_domain_checks(manifest))
    lines.extend(_non_finite(manifest, "$"))
    return lines


def _domain_checks(manifest: Mapping[str, Any]) -> list[str]:
    """A multi-domain manifest's target domains and indices against its ``domains``, and its
    conditional graph against its artifacts."""
    lines: list[str] = []
    domains = list(manifest["domains"])
    for direction, spec in manifest["directions"].items():
        where = _child("$.directions", direction)
        target, index = spec.get("target_domain"), spec.get("domain_index")
        if target is None:
            if index is not None:
                lines.append(f"{_child(where, 'domain_index')}: given without a target_domain")
            continue
        if target not in domains:
            lines.append(
                f"{_child(where, 'target_domain')}: {target!r} is not one of the manifest's "
                f"domains ({', '.join(domains)})"
            )
        elif index is not None and (index >= len(domains) or domains[index] != target):
            lines.append(
                f"{_child(where, 'domain_index')}: {index} does not name {target!r} in the "
                f"manifest's domains ({', '.join(domains)}); its index there is "
                f"{domains.index(target)}"
            )
    conditional = manifest.get("conditional")
    if conditional is not None:
        try:
            ShapeRule.from_manifest(conditional["shape_rule"])
        except ValueError as exc:
            lines.append(f"$.conditional.shape_rule: {exc}")
        if not conditional_artifacts(manifest):
            lines.append("$.conditional: declared, but no artifact holds it (graph 'conditional')")
        missing = [d for d, s in manifest["directions"].items() if s.get("domain_index") is None]
        if missing:
            lines.append(
                f"$.conditional: declared, but direction(s) {', '.join(missing)} give no "
                f"domain_index, so requests for them cannot use it"
            )
    return lines


def _non_finite(value: Any, path: str) -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}: {value} is not a finite number (JSON cannot hold it)"]
    if isinstance(value, Mapping):
        return [line for k, v in value.items() for line in _non_finite(v, _child(path, k))]
    if isinstance(value, list):
        return [line for i, v in enumerate(value) for line in _non_finite(v, f"{path}[{i}]")]
    return []
