"""`i2i import unit` / `i2i import munit`: the reference's `gen_XXXXXXXX.pt` + YAML -> an i2i checkpoint.

Both references (mingyuliutw/UNIT and NVlabs/MUNIT) save the two generators together,
``torch.save({"a": gen_a.state_dict(), "b": gen_b.state_dict()}, "gen_%08d.pt")``, and copy
their YAML config into the run folder. i2i's UNIT and MUNIT modules keep the reference's
module names, so conversion is: read the file without unpickling objects, read the
architecture from the YAML (``yaml.safe_load``), build i2i's generators for it, check every
key and shape, and explain a mismatch in the YAML's own terms. The discriminators
(``dis_*.pt``) are not imported: inference needs the generators only.

What the weights cannot tell: the activation (``gen.activ``, unless prelu) and the padding
(``gen.pad_type``) change the output but not the state dict, so they are taken from the
config as given.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from i2i._files import sha256_file
from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.importers.cyclegan import ImportError_, _drop_instance_norm_stats
from i2i.models import get_family, options_from_dict

_IMPLEMENTATIONS = {"unit": "mingyuliutw/UNIT", "munit": "NVlabs/MUNIT"}
# The reference YAML's keys -> i2i's option names (section, key): option.
_GEN_KEYS = {
    "dim": "gen_dim",
    "activ": "gen_activ",
    "n_downsample": "n_downsample",
    "n_res": "n_res",
    "pad_type": "gen_pad_type",
}
_MUNIT_GEN_KEYS = {"style_dim": "style_dim", "mlp_dim": "mlp_dim"}
_DIS_KEYS = {
    "dim": "dis_dim",
    "norm": "dis_norm",
    "activ": "dis_activ",
    "n_layer": "dis_n_layer",
    "num_scales": "num_scales",
    "pad_type": "dis_pad_type",
}
_TOP_KEYS = {"input_dim_a": "input_dim_a", "input_dim_b": "input_dim_b", "init": "init"}
_STEP = re.compile(r"gen_(\d+)\.pt$")
# The reference's YAML name of each option, for messages.
_YAML_NAME = {
    **{option: f"gen.{key}" for key, option in {**_GEN_KEYS, **_MUNIT_GEN_KEYS}.items()},
    **{option: f"dis.{key}" for key, option in _DIS_KEYS.items()},
    **{option: key for key, option in _TOP_KEYS.items()},
}


def read_generators(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Load a reference ``gen_*.pt`` as ``{"a": state_dict, "b": state_dict}`` (weights only)."""
    if not path.is_file():
        raise ImportError_(f"{path}: no such file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise ImportError_(
            f"{path}: not a readable PyTorch file ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(raw, Mapping) and raw.get("format") == "i2i.checkpoint":
        raise ImportError_(f"{path} is already an i2i checkpoint; use it as it is")
    if not isinstance(raw, Mapping) or not {"a", "b"} <= set(raw):
        keys = (
            ", ".join(map(str, list(raw)[:5])) if isinstance(raw, Mapping) else type(raw).__name__
        )
        raise ImportError_(
            f"{path}: expected the reference's generator file gen_XXXXXXXX.pt, a dict "
            f"{{'a': gen_a state dict, 'b': gen_b state dict}}; found {keys}"
        )
    generators = {}
    for side in ("a", "b"):
        state = raw[side]
        if not isinstance(state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise ImportError_(f"{path}: entry {side!r} is not a state dict of tensors")
        generators[side] = {str(k).removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("cnns.") for k in generators["a"]):
        raise ImportError_(
            f"{path} holds discriminators (the reference's dis_XXXXXXXX.pt); pass its "
            "gen_XXXXXXXX.pt"
        )
    return generators


def read_reference_config(path: Path) -> dict[str, Any]:
    """The reference's YAML config as a dict (``yaml.safe_load``)."""
    if not path.is_file():
        raise ImportError_(f"{path}: no such config file")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ImportError_(f"{path}: not a readable YAML file ({exc})") from exc
    if not isinstance(config, dict):
        raise ImportError_(f"{path}: expected a YAML mapping (the reference's config.yaml)")
    return config


def options_from_reference(
    family: str, config: Mapping[str, Any], source: str = "config"
) -> tuple[Any, list[str]]:
    """Map a reference YAML config to the family's options, and notes on what was not used.

    Keys that do not change the generators' architecture (losses, data, logging) are
    ignored; keys left out keep the reference's defaults. Discriminator settings i2i does
    not build (e.g. MUNIT's ``dis.norm: sn``) fall back to i2i's defaults with a note: the
    import holds the generators only.
    """
    values: dict[str, Any] = {}
    sections = {"gen": dict(_GEN_KEYS), "dis": _DIS_KEYS}
    if family == "munit":
        sections["gen"].update(_MUNIT_GEN_KEYS)
    for section, keys in sections.items():
        part = config.get(section, {})
        if part is None:
            continue
        if not isinstance(part, Mapping):
            raise ImportError_(f"{source}: {section!r} must be a mapping, got {part!r}")
        values.update({option: part[key] for key, option in keys.items() if key in part})
    values.update({option: config[key] for key, option in _TOP_KEYS.items() if key in config})
    if family == "unit":
        values["share"] = False  # the reference's master branch shares no layers
    notes = []
    defaults = get_family(family).options_type()
    for option in [o for o in values if o.startswith("dis_") or o == "num_scales"]:
        try:
            options_from_dict(family, {option: values[option]})
        except ValueError as exc:
            notes.append(
                f"{_YAML_NAME[option]} {values[option]!r} is not supported ({exc}); the "
                f"discriminators are not imported, so i2i's default "
                f"{getattr(defaults, option)!r} was recorded"
            )
            del values[option]
    try:
        return options_from_dict(family, values), notes
    except (TypeError, ValueError) as exc:
        raise ImportError_(f"{source}: {_in_yaml_terms(str(exc))}") from exc


def _in_yaml_terms(message: str) -> str:
    """Replace i2i option names in ``message`` with the reference YAML's names."""
    for option, name in sorted(_YAML_NAME.items(), key=lambda item: -len(item[0])):
        message = re.sub(rf"(?<![\w.]){option}\b(?=['\s:])", name, message)
    return message


def _family_of_keys(state: Mapping[str, torch.Tensor]) -> str | None:
    if any(k.startswith("enc_content.") for k in state):
        return "munit"
    if any(k.startswith("enc.") for k in state):
        return "unit"
    return None


def _inferred_options(family: str, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture options read off a generator state dict's keys and shapes."""
    enc = "enc_content" if family == "munit" else "enc"
    found: dict[str, Any] = {}
    first = state.get(f"{enc}.model.0.conv.weight")
    if first is None or first.dim() != 4:
        return found
    found["gen_dim"] = int(first.shape[0])
    n_down = 0
    while f"{enc}.model.{n_down + 1}.conv.weight" in state:
        n_down += 1
    found["n_downsample"] = n_down
    blocks = {
        int(m.group(1))
        for k in state
        if (m := re.match(rf"{enc}\.model\.{n_down + 1}\.model\.(\d+)\.", k))
    }
    found["n_res"] = len(blocks)
    if any(k.endswith("activation.weight") for k in state):
        found["gen_activ"] = "prelu"
    if family == "munit":
        mlp_in = state.get("mlp.model.0.fc.weight")
        if mlp_in is not None and mlp_in.dim() == 2:
            found["mlp_dim"] = int(mlp_in.shape[0])
            found["style_dim"] = int(mlp_in.shape[1])
    return found


def _mismatch(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    return missing, unexpected, wrong


def _diagnose(
    family: str,
    side: str,
    state: Mapping[str, torch.Tensor],
    options: Any,
) -> str:
    """Which config change makes ``state`` fit, in the reference YAML's words, if one does."""
    other = _family_of_keys(state)
    if other is not None and other != family:
        return (
            f"it is a {other.upper()} generator (keys {', '.join(sorted(state)[:2])}, ...): "
            f"use `i2i import {other}`"
        )
    inferred = _inferred_options(family, state)
    channels = state.get(f"{'enc_content' if family == 'munit' else 'enc'}.model.0.conv.weight")
    if channels is not None and channels.dim() == 4:
        inferred[f"input_dim_{side}"] = int(channels.shape[1])
    try:
        candidate = dataclasses.replace(options, **inferred)
    except (TypeError, ValueError):
        return ""
    with torch.device("meta"):
        networks = get_family(family).build(candidate)
    if any(_mismatch(state, networks[f"gen_{side}"].state_dict())):
        return ""
    changes = [f"{_YAML_NAME[k]}: {v}" for k, v in inferred.items() if getattr(options, k) != v]
    return "the file fits with " + ", ".join(changes) if changes else ""


def fit_generators(
    family: str,
    path: Path,
    generators: Mapping[str, Mapping[str, torch.Tensor]],
    networks: Mapping[str, nn.Module],
    options: Any,
    config_path: Path,
    dropped: dict[str, list[str]],
) -> dict[str, dict[str, torch.Tensor]]:
    """Check each of ``{"a", "b"}`` against ``networks["gen_a"|"gen_b"]``; the converted state
    dicts (keyed gen_a, gen_b), or ImportError_ saying what differs and what would fit.

    Stale instance norm statistics are removed first; their keys go into ``dropped``.
    """
    converted = {}
    problems, hints = [], []
    for side in ("a", "b"):
        state = dict(generators[side])
        # Files of PyTorch < 0.4 hold instance norm running statistics the layers never use.
        dropped[f"gen_{side}"] = _drop_instance_norm_stats(state, networks[f"gen_{side}"])
        expected = networks[f"gen_{side}"].state_dict()
        missing, unexpected, wrong = _mismatch(state, expected)
        if not (missing or unexpected or wrong):
            converted[f"gen_{side}"] = {k: state[k].to(expected[k].dtype) for k in expected}
            continue
        details = []
        if missing:
            details.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
        if wrong:
            k = wrong[0]
            details.append(
                f"{len(wrong)} key(s) of another shape, e.g. {k}: file {tuple(state[k].shape)}, "
                f"config {tuple(expected[k].shape)}"
            )
        problems.append(f"generator {side!r}: " + "; ".join(details))
        hint = _diagnose(family, side, state, options)
        if hint and hint not in hints:
            hints.append(hint)
    if problems:
        advice = (
            "; ".join(hints)
            if hints
            else (f"it matches no {family.upper()} generator of the reference with these channels")
        )
        raise ImportError_(
            f"{path} does not fit the {family.upper()} architecture of {config_path}: "
            f"{advice}. ({'. '.join(problems)})"
        )
    return converted


def import_reference(
    family: str,
    gen: str | os.PathLike[str],
    config: str | os.PathLike[str],
    out: str | os.PathLike[str],
) -> dict[str, Any]:
    """Convert a reference UNIT or MUNIT generator file and its config into an i2i checkpoint.

    Args:
        family: ``"unit"`` or ``"munit"``.
        gen: the reference's ``gen_XXXXXXXX.pt``.
        config: the reference's YAML config of that run (``config.yaml`` in its output
            folder, or the ``configs/*.yaml`` it was trained with).
        out: the i2i checkpoint to write.

    Returns a summary: ``out``, ``step``, ``directions``, ``options``, ``notes`` (config
    values not used), ``dropped_keys`` (stale instance norm statistics removed, per
    generator), ``sources`` (file and sha256 of each input).
    """
    if family not in _IMPLEMENTATIONS:
        raise ValueError(f"family must be one of {', '.join(_IMPLEMENTATIONS)}, got {family!r}")
    gen_path, config_path = Path(gen), Path(config)
    generators = read_generators(gen_path)
    options, notes = options_from_reference(
        family, read_reference_config(config_path), source=str(config_path)
    )
    networks = get_family(family).build(options)
    dropped: dict[str, list[str]] = {}
    converted = fit_generators(
        family, gen_path, generators, networks, options, config_path, dropped
    )
    match = _STEP.search(gen_path.name)
    step = int(match.group(1)) if match else 0
    sources = {
        "gen": {"file": str(gen_path), "sha256": sha256_file(gen_path)},
        "config": {"file": str(config_path), "sha256": sha256_file(config_path)},
    }
    payload = make_checkpoint(
        family=family,
        config={"family": family, "model": asdict(options)},
        domains=["A", "B"],
        networks=converted,
        step=step,
        imported_from={"implementation": _IMPLEMENTATIONS[family], **sources},
    )
    save_checkpoint(payload, out)
    return {
        "out": str(out),
        "step": step,
        "directions": ["A2B", "B2A"],
        "options": asdict(options),
        "notes": notes,
        "dropped_keys": dropped,
        "sources": sources,
    }


def import_unit(
    gen: str | os.PathLike[str], config: str | os.PathLike[str], out: str | os.PathLike[str]
) -> dict[str, Any]:
    """`i2i import unit`: see :func:`import_reference`."""
    return import_reference("unit", gen, config, out)


def import_munit(
    gen: str | os.PathLike[str], config: str | os.PathLike[str], out: str | os.PathLike[str]
) -> dict[str, Any]:
    """`i2i import munit`: see :func:`import_reference`."""
    return import_reference("munit", gen, config, out)
