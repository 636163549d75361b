"""The registry of model families: what each family builds and how it is used.

A family module (for example ``cyclegan.py``) describes itself with a :class:`ModelFamily`
and calls :func:`register_family` once; ``i2i.models`` imports every family module by name.
Training, export and serving look families up here instead of branching on names.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from i2i.models.translators import domain_translators, translators_by_direction
from i2i.shapes import ShapeRule

# (networks, options) -> {direction: translator}
TranslatorFactory = Callable[[Mapping[str, nn.Module], Any], dict[str, nn.Module]]
# (networks, options) -> {direction: style encoder of that direction's target domain}
StyleEncoderFactory = Callable[[Mapping[str, nn.Module], Any], dict[str, nn.Module]]
# (networks, options) -> float module (x [N, C_in, H, W] in [-1, 1], domain int64 [N]) -> y
ConditionalFactory = Callable[[Mapping[str, nn.Module], Any], nn.Module]
# (networks, options, seed) -> {metric name: value}, extra numbers `i2i eval` reports
MetricsFactory = Callable[[Mapping[str, nn.Module], Any, int], dict[str, float]]


@dataclass(frozen=True)
class ExportGraph:
    """One extra graph a family exports beside its translators (for example the two-step
    model's encoder and generator), for clients that compose or inspect a model's parts.

    Attributes:
        module: the graph, in eval mode; ``forward`` takes the inputs in order.
        inputs: the graph's input names, one per ``forward`` argument.
        outputs: its output names.
        examples: ``(batch, seed) -> inputs``: seeded example inputs with ``batch`` rows,
            used to trace the graph and to check its parity. Dimension 0 of every input and
            output is the batch (dynamic in the graph); every other size is the examples'.
    """

    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    examples: Callable[[int, int], tuple[torch.Tensor, ...]]


# (networks, options) -> {graph name: graph}; names are those of the manifest's "graphs"
GraphsFactory = Callable[[Mapping[str, nn.Module], Any], dict[str, ExportGraph]]

# A domain name of a multi-domain model: it becomes part of direction and file names.
DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# The direction that translates any image into domain d is named TARGET_PREFIX + d.
TARGET_PREFIX = "to_"


def target_direction(domain: str) -> str:
    """The direction name of translation into ``domain`` in a multi-domain model."""
    return TARGET_PREFIX + domain


def direction_target(direction: str) -> str | None:
    """The target domain a multi-domain direction name (``to_<domain>``) names, else None."""
    if direction.startswith(TARGET_PREFIX) and len(direction) > len(TARGET_PREFIX):
        return direction[len(TARGET_PREFIX) :]
    return None


def checked_domains(domains: Any) -> tuple[str, ...]:
    """``domains`` (a list or tuple of names) as a tuple, or ValueError saying what is wrong."""
    if isinstance(domains, str) or not isinstance(domains, (list, tuple)):
        raise ValueError(f"domains must be a list of names, got {domains!r}")
    names = tuple(domains)
    if len(names) < 2:
        raise ValueError(f"a multi-domain model needs at least 2 domains, got {list(names)}")
    for name in names:
        if not isinstance(name, str) or not DOMAIN_NAME.match(name):
            raise ValueError(
                f"domain name {name!r} must start with a letter or digit and hold only "
                "letters, digits, '_' and '-'"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"domain names must be unique, got {list(names)}")
    return names


@dataclass(frozen=True)
class ModelFamily:
    """Everything the rest of i2i needs to know about one model family.

    Attributes:
        name: the registry key, as written in configs and checkpoints.
        options_type: a dataclass of the family's architecture options; every field has a
            default.
        build: builds all of the family's networks from an ``options_type`` instance, keyed
            by network name.
        generators: the networks needed for inference and export.
        directions: direction name (for example ``"A2B"``) -> the generator performing it.
        shape_rule: the image sizes the generators accept, given the options.
        description: one line for listings.
        translators: ``(networks, options) -> {direction: translator}``, the inference
            modules of contract 2 (uint8 [N, H, W, C] in and out), in eval mode, one per
            direction whose networks are present in ``networks`` (an imported checkpoint may
            hold one direction only). Left out, each direction's generator is wrapped in an
            :class:`~i2i.models.translators.ImageTranslator`.
        style_dim: the size S of the style code a multimodal family's translators take as
            a second input (float32 [N, S]) with the default options; 0 for families
            without one. A model's own S can differ: see :meth:`style_dim_for`.
        style_encoders: multimodal families only: ``(networks, options) -> {direction:
            module}``, for each direction the module that computes a style code from an
            image of the direction's *target* domain, ``uint8 [N, H, W, C] -> float32 [N,
            S]`` (its ``in_channels`` and ``style_dim`` attributes say C and S), in eval
            mode. Exported beside the translators, so a reference image can set the style.
            None for families without one.
        multi_domain: the model translates between any number of named domains, listed in
            its options' ``domains`` field (a tuple of names; the trainer fills it from the
            data folders when a config leaves it out). Its directions are then
            ``to_<domain>``, one per target (any source), instead of :attr:`directions`,
            which stays empty; see :meth:`direction_names`.
        conditional: multi-domain families only: ``(networks, options) -> module`` whose
            ``forward(x, domain)`` maps float ``x`` [N, C_in, H, W] in [-1, 1] and int64
            target indices ``domain`` [N] (into ``options.domains``) to float [N, C_out, H,
            W] in [-1, 1]. The default :attr:`translators` wrap it into one fused translator
            per target (:class:`~i2i.models.translators.FixedDomainTranslator`); export also
            writes it whole, so requests for different targets can share a batch.
        metrics: optional ``(networks, options, seed) -> {name: value}``: numbers beyond
            PSNR/SSIM that ``i2i eval`` reports for a model of this family (for example the
            two-step model's latent MSE on held-out generator samples).
        graphs: optional ``(networks, options) -> {name: ExportGraph}``: extra graphs that
            export writes beside the translators as ``<name>.onnx`` (and FP16), each
            parity-checked, recorded in the manifest's ``graphs`` and as artifacts with
            ``"graph": name`` and no direction. Servers ignore them. Empty when the
            networks they need are missing.
    """

    name: str
    options_type: type[Any]
    build: Callable[[Any], dict[str, nn.Module]]
    generators: tuple[str, ...]
    directions: dict[str, str]
    shape_rule: Callable[[Any], ShapeRule]
    description: str
    # None is replaced in __post_init__, so readers always find a callable.
    translators: TranslatorFactory = None  # type: ignore[assignment]
    style_dim: int = 0
    style_encoders: StyleEncoderFactory | None = None
    multi_domain: bool = False
    conditional: ConditionalFactory | None = None
    metrics: MetricsFactory | None = None
    graphs: GraphsFactory | None = None

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.options_type):
            raise TypeError(f"family {self.name!r}: options_type must be a dataclass")
        if not self.generators:
            raise ValueError(f"family {self.name!r}: generators must name at least one network")
        unknown = sorted(set(self.directions.values()) - set(self.generators))
        if unknown:
            raise ValueError(
                f"family {self.name!r}: directions use {', '.join(unknown)}, which are not "
                f"among its generators ({', '.join(self.generators)})"
            )
        if self.style_dim < 0:
            raise ValueError(f"family {self.name!r}: style_dim must be >= 0, got {self.style_dim}")
        if self.style_encoders is not None and self.style_dim == 0:
            raise ValueError(f"family {self.name!r}: style_encoders needs a style_dim above 0")
        if self.multi_domain:
            if self.conditional is None:
                raise ValueError(f"family {self.name!r}: a multi-domain family needs conditional")
            if self.directions:
                raise ValueError(
                    f"family {self.name!r}: a multi-domain family's directions come from its "
                    "domains (to_<domain>); leave directions empty"
                )
            if "domains" not in {f.name for f in dataclasses.fields(self.options_type)}:
                raise ValueError(
                    f"family {self.name!r}: a multi-domain family's options need a domains field"
                )
        elif self.conditional is not None:
            raise ValueError(f"family {self.name!r}: conditional is for multi-domain families")
        if self.translators is None and self.multi_domain:
            conditional = self.conditional
            assert conditional is not None

            def by_target(networks: Mapping[str, nn.Module], options: Any) -> dict[str, nn.Module]:
                return domain_translators(conditional(networks, options), options)

            object.__setattr__(self, "translators", by_target)
        if self.translators is None:
            directions = dict(self.directions)
            # Frozen dataclass: __post_init__ is the one place a field may still be set.
            object.__setattr__(
                self,
                "translators",
                lambda networks, options: translators_by_direction(networks, directions),
            )

    def style_dim_for(self, options: Any) -> int:
        """S of a model built with ``options``: their ``style_dim`` field if they have one,
        else the family's :attr:`style_dim`; 0 for families without style."""
        if self.style_dim == 0:
            return 0
        return int(getattr(options, "style_dim", self.style_dim))

    def domains_for(self, options: Any) -> tuple[str, ...]:
        """The domain names of a model built with ``options``: its ``domains`` for a
        multi-domain family, else ("A", "B")."""
        if not self.multi_domain:
            return ("A", "B")
        return checked_domains(options.domains)

    def direction_names(self, options: Any) -> list[str]:
        """The directions a model built with ``options`` translates: ``to_<domain>`` per
        domain for a multi-domain family, else :attr:`directions`' keys."""
        if not self.multi_domain:
            return list(self.directions)
        return [target_direction(d) for d in self.domains_for(options)]


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry; its name must be new."""
    if family.name in _FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> ModelFamily:
    """Look up a registered family; KeyError naming the known ones if there is none."""
    try:
        return _FAMILIES[name]
    except KeyError:
        known = ", ".join(list_families()) or "none"
        raise KeyError(f"unknown model family {name!r}; known families: {known}") from None


def list_families() -> list[str]:
    """Names of the registered families, sorted."""
    return sorted(_FAMILIES)


def options_from_dict(family_name: str, values: Mapping[str, Any]) -> Any:
    """Build a family's options dataclass from a plain dict (for example parsed YAML).

    Keys left out keep their defaults. Unknown keys and values of the wrong basic type
    (bool, int, float, str) raise ValueError; ints are accepted for float fields.
    """
    options_type = get_family(family_name).options_type
    fields = {field.name for field in dataclasses.fields(options_type)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"unknown option(s) for model family {family_name!r}: {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(options_type)
    checked = {key: _checked_value(key, value, hints.get(key)) for key, value in values.items()}
    return options_type(**checked)


def _checked_value(key: str, value: Any, expected: Any) -> Any:
    """``value`` if it suits a field annotated ``expected``; other annotations pass as they are."""
    if expected not in (bool, int, float, str):
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int, so True must not pass for an int field.
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(
            f"option {key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def create_networks(
    family_name: str, options: Mapping[str, Any] | Any | None = None, **overrides: Any
) -> dict[str, nn.Module]:
    """Build all networks of a family, keyed by network name.

    Args:
        family_name: a registered family, see :func:`list_families`.
        options: the family's options dataclass, a plain dict of its fields, or None for the
            defaults.
        **overrides: option fields to change on top of ``options``.
    """
    family = get_family(family_name)
    if options is None:
        values: dict[str, Any] = {}
    elif isinstance(options, Mapping):
        values = dict(options)
    elif isinstance(options, family.options_type):
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    else:
        raise TypeError(
            f"options for model family {family_name!r} must be a dict or "
            f"{family.options_type.__name__}, got {type(options).__name__}"
        )
    return family.build(options_from_dict(family_name, {**values, **overrides}))
