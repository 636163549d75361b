"""A Triton Inference Server model repository written from an i2i model repository.

Layout written (one Triton model per direction, named as i2i-serve's v2 models are)::

    <out>/<model>_<direction>/config.pbtxt
                              <version>/model.onnx        (--platform onnx)
                              <version>/model.plan        (--platform tensorrt, one engine)
                              <version>/model_sm86.plan   (several engines: cc_model_filenames)
    <out>/<model>/config.pbtxt                            (multi-domain: the conditional graph,
                  <version>/model.onnx                     inputs image + domain)

Versions are the i2i repository's versions. Each ``config.pbtxt`` is built as Triton's own
``inference.ModelConfig`` message (``i2i.oip.model_config_pb2``) and written with protobuf's
text format, so it parses by construction. Dims exclude the batch (``max_batch_size`` > 0):
``image`` UINT8 ``[H, W, C_in]``, ``style`` FP32 ``[S]`` (multimodal), ``translated`` UINT8
``[H, W, C_out]``, where H and W are -1 for graphs that take any size and the fixed size for
those that take one (Triton's backends reject -1 against a fixed model dim). The conditional
graph's ``domain`` is int64 ``[N]`` in ONNX: in Triton it is dims ``[1]`` reshaped to ``[]``
(one index per image, a request sends shape ``[N, 1]``).

Files are copied by default, each checked against the manifest's sha256: the Triton
repository is then independent of the i2i one (it can be synced to object storage or another
disk, and editing it cannot corrupt an i2i artifact). ``hardlink=True`` links instead (no
extra disk, same filesystem only): i2i never rewrites a published file in place (replacing
a version or an engine writes new files), so a link keeps the bytes it was made from.

TensorRT plans run only on the GPU type and TensorRT version that built them (see
`i2i.repository.engines`): Triton's TensorRT must be the version recorded in the manifest.
Several engines of one direction for different compute capabilities become Triton's
``cc_model_filenames``; ``gpu`` picks engines by GPU name when more than one fits.
Engines exist for translators only, so a multi-domain model's conditional graph is always
written for ONNX Runtime.

Torch-free: imports the repository contract, Triton's config message and protobuf only.
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from i2i._files import fsync_dir, sha256_file
from i2i.oip import model_config_pb2 as mc
from i2i.repository.engines import gpu_slug
from i2i.repository.layout import RepositoryError, list_models, versions
from i2i.repository.locking import _fsync_tree, _locked
from i2i.repository.schema import conditional_artifacts, translator_artifacts
from i2i.repository.storage import read_manifest

log = logging.getLogger(__name__)

PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
KINDS = {"gpu": mc.ModelInstanceGroup.KIND_GPU, "cpu": mc.ModelInstanceGroup.KIND_CPU}
VERSION_POLICIES = ("latest", "all")
# i2i-serve's default --max-batch (i2i.serving.config.ServerConfig.max_batch; not imported:
# the repository layer must not import serving).
DEFAULT_MAX_BATCH = 8
CONFIG = "config.pbtxt"
_STAGING = ".i2i-triton-tmp-"
_DTYPES = {
    "uint8": mc.TYPE_UINT8,
    "float32": mc.TYPE_FP32,
    "float16": mc.TYPE_FP16,
    "int32": mc.TYPE_INT32,
    "int64": mc.TYPE_INT64,
}


class TritonExportError(RepositoryError):
    """The i2i repository cannot be written as a Triton repository as asked."""


def triton_model_name(model: str, direction: str) -> str:
    """`<model>_<direction>`: the same rule as i2i-serve's `v2_model_name` (i2i.serving.inference,
    not imported: the repository layer must not import serving)."""
    return f"{model}_{direction}"


@dataclass(frozen=True)
class TritonOptions:
    """How the Triton models are configured (each field is a CLI option)."""

    platform: str = "onnx"  # "onnx" (onnxruntime_onnx) or "tensorrt" (tensorrt_plan)
    precision: str = "fp32"  # which ONNX artifact: "fp32" or "fp16"
    max_batch: int | None = None  # None: DEFAULT_MAX_BATCH, capped by TensorRT profiles
    instances: int = 1  # instance_group count
    kind: str = "gpu"  # "gpu" or "cpu"
    max_queue_delay_us: int = 0  # dynamic_batching.max_queue_delay_microseconds
    preferred_batch_sizes: tuple[int, ...] = ()
    version_policy: str = "latest"  # "latest" (newest version only) or "all"
    gpu: str | None = None  # TensorRT: only engines built on this GPU (name or slug)
    hardlink: bool = False  # hard-link artifacts instead of copying them

    def check(self) -> None:
        """Raise TritonExportError naming the first option that cannot work."""
        if self.platform not in PLATFORMS:
            raise TritonExportError(
                f"platform {self.platform!r}: choose from {', '.join(PLATFORMS)}"
            )
        if self.precision not in ("fp32", "fp16"):
            raise TritonExportError(f"precision {self.precision!r}: choose fp32 or fp16")
        if self.kind not in KINDS:
            raise TritonExportError(f"instance kind {self.kind!r}: choose from {', '.join(KINDS)}")
        if self.platform == "tensorrt" and self.kind != "gpu":
            raise TritonExportError("TensorRT plans run on GPUs only: use --kind gpu")
        if self.version_policy not in VERSION_POLICIES:
            raise TritonExportError(
                f"version policy {self.version_policy!r}: choose from {', '.join(VERSION_POLICIES)}"
            )
        if self.max_batch is not None and self.max_batch < 1:
            raise TritonExportError(f"max batch must be >= 1, got {self.max_batch}")
        if self.instances < 1:
            raise TritonExportError(f"instance count must be >= 1, got {self.instances}")
        if self.max_queue_delay_us < 0:
            raise TritonExportError(
                f"max queue delay must be >= 0 microseconds, got {self.max_queue_delay_us}"
            )
        bad = [n for n in self.preferred_batch_sizes if n < 1]
        if bad:
            raise TritonExportError(f"preferred batch sizes must be >= 1, got {bad}")
        if self.gpu is not None and self.platform != "tensorrt":
            raise TritonExportError("--gpu picks TensorRT engines: use it with --platform tensorrt")


@dataclass
class TritonModel:
    """One Triton model to write: its config and, per version, the files of its folder."""

    name: str
    source: str  # the i2i model
    direction: str | None  # None: a multi-domain model's conditional graph
    config: mc.ModelConfig
    files: dict[int, dict[str, Path]] = field(default_factory=dict)  # version -> name -> src
    sha256: dict[Path, str] = field(default_factory=dict)  # what each source must hash to

    @property
    def versions(self) -> list[int]:
        """The versions written, ascending."""
        return sorted(self.files)


def export_triton(
    repository: str | os.PathLike[str],
    out: str | os.PathLike[str],
    models: Sequence[str] | None = None,
    version: int | None = None,
    options: TritonOptions | None = None,
    replace: bool = False,
) -> list[TritonModel]:
    """Write a Triton model repository at `out` from the i2i repository; return its models.

    Args:
        repository: the i2i model repository.
        out: the Triton repository folder; created. It must be empty or absent unless
            `replace`, which replaces the Triton models this export writes (others in `out`
            are left alone).
        models: the i2i models to write (default every model in `repository`).
        version: only this version (needs exactly one model); default every version.
        options: platform, batching and instance settings.

    Raises:
        RepositoryError: a model or version is missing or broken; TritonExportError (a
            RepositoryError): an artifact is missing or changed, the options do not fit the
            models, or `out` is not empty without `replace`. Nothing is written then.
    """
    options = options or TritonOptions()
    planned = plan_triton_models(repository, models, version, options)
    write_triton_models(planned, out, replace=replace, hardlink=options.hardlink)
    return planned


def plan_triton_models(
    repository: str | os.PathLike[str],
    models: Sequence[str] | None,
    version: int | None,
    options: TritonOptions,
) -> list[TritonModel]:
    """The Triton models `export_triton` would write, checked; writes nothing."""
    options.check()
    if models is None:
        names = list(list_models(repository))
        if not names:
            raise TritonExportError(f"no models in {repository}")
    else:
        names = list(dict.fromkeys(models))
    if version is not None and len(names) != 1:
        raise TritonExportError(
            f"a version number belongs to one model: name exactly one model with version "
            f"{version} (got {', '.join(names) or 'every model'})"
        )
    planned: dict[str, TritonModel] = {}
    for name in names:
        found = versions(repository, name)
        if not found:
            read_manifest(repository, name)  # raises, listing the models there
        chosen = [version] if version is not None else found
        manifests = {v: read_manifest(repository, name, v) for v in chosen}
        folders = {v: Path(repository) / name / str(v) for v in chosen}
        for model in _models_of(name, manifests, folders, options):
            if model.name in planned:
                other = planned[model.name]
                raise TritonExportError(
                    f"Triton model name {model.name!r} is written for both i2i model "
                    f"{other.source!r} and {model.source!r}: export them to separate folders"
                )
            planned[model.name] = model
    return list(planned.values())


def _models_of(
    name: str,
    manifests: Mapping[int, Mapping[str, Any]],
    folders: Mapping[int, Path],
    options: TritonOptions,
) -> list[TritonModel]:
    """One i2i model's Triton models: one per direction, and the conditional graph if any."""
    latest = manifests[max(manifests)]
    out = []
    for direction in latest["directions"]:
        missing = [v for v, m in manifests.items() if direction not in m["directions"]]
        if missing:
            raise TritonExportError(
                f"{name}: direction {direction} is in version {max(manifests)} but not in "
                f"version(s) {', '.join(map(str, missing))}; export one version with --version"
            )
        out.append(_direction_model(name, direction, manifests, folders, options))
    if "conditional" in latest:
        out.append(_conditional_model(name, manifests, folders, options))
    return out


def _direction_model(
    name: str,
    direction: str,
    manifests: Mapping[int, Mapping[str, Any]],
    folders: Mapping[int, Path],
    options: TritonOptions,
) -> TritonModel:
    """The Triton model of one direction, over every version."""
    triton = triton_model_name(name, direction)
    signatures = {}
    model = TritonModel(triton, name, direction, mc.ModelConfig())
    engine_batches: list[int] = []
    cc_files: dict[int, dict[str, str]] = {}
    for number, manifest in manifests.items():
        spec = manifest["directions"][direction]
        tensors = [("input", spec["input"]), ("input", spec["style"]), ("output", spec["output"])]
        signatures[number] = [(kind, t) for kind, t in tensors if t is not None]
        where = f"{name} version {number} {direction}"
        artifacts = translator_artifacts(manifest, direction)
        if options.platform == "onnx":
            artifact = _onnx_artifact(artifacts, options.precision, where)
            _add_file(model, number, "model.onnx", folders[number], artifact)
        else:
            engines = _engines(artifacts, options.gpu, where)
            files = _plan_files(engines)
            cc_files[number] = {cc: file for cc, (file, _) in files.items()}
            for file, engine in files.values():
                _add_file(model, number, file, folders[number], engine)
                engine_batches.append(_engine_batch(engine, where))
    signature = _same_signature(triton, signatures)
    max_batch = _max_batch(triton, options, engine_batches)
    platform = PLATFORMS[options.platform]
    config = _config(triton, platform, signature, max_batch, options)
    if cc_files:
        first = cc_files[min(cc_files)]
        differing = [v for v, files in cc_files.items() if files != first]
        if differing:
            raise TritonExportError(
                f"{triton}: the versions hold engines for different compute capabilities "
                f"({_describe_ccs(cc_files)}); Triton's config is one per model: export one "
                f"version with --version, or pick a GPU with --gpu"
            )
        if len(first) > 1:  # Triton picks the file by its GPU's compute capability
            for cc, file in sorted(first.items()):
                config.cc_model_filenames[cc] = file
    model.config = config
    return model


def _conditional_model(
    name: str,
    manifests: Mapping[int, Mapping[str, Any]],
    folders: Mapping[int, Path],
    options: TritonOptions,
) -> TritonModel:
    """The Triton model `<name>` of a multi-domain model's conditional graph (ONNX only)."""
    model = TritonModel(name, name, None, mc.ModelConfig())
    signatures = {}
    for number, manifest in manifests.items():
        spec = manifest.get("conditional")
        if spec is None:
            raise TritonExportError(
                f"{name}: version {max(manifests)} has a conditional graph but version "
                f"{number} has none; export one version with --version"
            )
        signatures[number] = [
            ("input", spec["input"]),
            ("input", spec["domain"]),
            ("output", spec["output"]),
        ]
        artifact = _onnx_artifact(
            conditional_artifacts(manifest),
            options.precision,
            f"{name} version {number} conditional",
        )
        _add_file(model, number, "model.onnx", folders[number], artifact)
    if options.platform == "tensorrt":
        log.info(
            "%s: no TensorRT engines exist for conditional graphs; written for ONNX Runtime", name
        )
    signature = _same_signature(name, signatures)
    max_batch = options.max_batch or DEFAULT_MAX_BATCH
    model.config = _config(name, PLATFORMS["onnx"], signature, max_batch, options)
    return model


def _onnx_artifact(
    artifacts: Sequence[Mapping[str, Any]], precision: str, where: str
) -> Mapping[str, Any]:
    """The ONNX artifact of `precision` among `artifacts`, or an error naming what exists."""
    for artifact in artifacts:
        if artifact["format"] == "onnx" and artifact["precision"] == precision:
            return artifact
    present = ", ".join(f"{a['file']} ({a['format']} {a['precision']})" for a in artifacts)
    hint = "re-export with --formats onnx,onnx-fp16" if precision == "fp16" else "re-export it"
    raise TritonExportError(
        f"{where}: no ONNX {precision} artifact (it has: {present or 'none'}); {hint}"
    )


def _engines(
    artifacts: Sequence[Mapping[str, Any]], gpu: str | None, where: str
) -> list[Mapping[str, Any]]:
    """The TensorRT engines of one direction, those of `gpu` only when it is given."""
    engines = [a for a in artifacts if a["format"] == "tensorrt"]
    if not engines:
        raise TritonExportError(
            f"{where}: no TensorRT engine; build one on the serving GPU with `i2i models "
            f"build-engines`, or use --platform onnx"
        )
    if gpu is not None:
        chosen = [a for a in engines if gpu_slug(str(a["tensorrt"]["gpu"])) == gpu_slug(gpu)]
        if not chosen:
            raise TritonExportError(
                f"{where}: no TensorRT engine built on GPU {gpu!r}; engines: {_describe(engines)}"
            )
        engines = chosen
    return engines


def _plan_files(engines: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """Compute capability -> (file name in the Triton version folder, engine).

    One engine is `model.plan`; several (one per compute capability) are `model_sm<cc>.plan`.
    """
    by_cc: dict[str, list[Mapping[str, Any]]] = {}
    for engine in engines:
        by_cc.setdefault(str(engine["tensorrt"]["compute_capability"]), []).append(engine)
    clashes = {cc: found for cc, found in by_cc.items() if len(found) > 1}
    if clashes:
        raise TritonExportError(
            "several TensorRT engines for one compute capability "
            f"({_describe([e for found in clashes.values() for e in found])}): Triton picks a "
            "plan by compute capability only; choose one GPU with --gpu"
        )
    if len(by_cc) == 1:
        ((cc, (engine,)),) = by_cc.items()
        return {cc: ("model.plan", engine)}
    return {cc: (f"model_sm{cc.replace('.', '')}.plan", found[0]) for cc, found in by_cc.items()}


def _engine_batch(engine: Mapping[str, Any], where: str) -> int:
    """The largest batch an engine's first optimisation profile takes (Triton uses that one)."""
    profile = engine["tensorrt"]["profiles"][0]
    if profile["min"][0] != 1:
        raise TritonExportError(
            f"{where}: {engine['file']}'s profile starts at batch {profile['min'][0]}; Triton's "
            f"dynamic batcher sends batches from 1: rebuild it with a minimum batch of 1"
        )
    return int(profile["max"][0])


def _max_batch(triton: str, options: TritonOptions, engine_batches: Sequence[int]) -> int:
    """max_batch_size: the option or the default, never above what the engines take."""
    if not engine_batches:
        return options.max_batch or DEFAULT_MAX_BATCH
    limit = min(engine_batches)
    if options.max_batch is None:
        return min(DEFAULT_MAX_BATCH, limit)
    if options.max_batch > limit:
        raise TritonExportError(
            f"{triton}: --max-batch {options.max_batch} is above the {limit} images its "
            f"TensorRT engines take; lower it or rebuild the engines with a larger --max-batch"
        )
    return options.max_batch


Signature = list[tuple[str, Mapping[str, Any]]]


def _same_signature(triton: str, signatures: Mapping[int, Signature]) -> Signature:
    """The tensors every version shares (Triton has one config per model), or an error."""
    first = min(signatures)
    differing = [
        v for v, s in signatures.items() if _tensor_dims(s) != _tensor_dims(signatures[first])
    ]
    if differing:
        raise TritonExportError(
            f"{triton}: versions {first} and {differing[0]} have different inputs or outputs "
            f"({_tensor_dims(signatures[first])} vs {_tensor_dims(signatures[differing[0]])}); "
            f"Triton has one config per model: export one version with --version"
        )
    return signatures[first]


def _tensor_dims(signature: Signature) -> list[tuple[str, str, str, list[int]]]:
    return [(kind, t["name"], t["dtype"], _dims(t)) for kind, t in signature]


def _dims(tensor: Mapping[str, Any]) -> list[int]:
    """A manifest tensor's dims without the batch: fixed sizes kept, symbols (H, W) -1."""
    shape = tensor["shape"]
    if isinstance(shape[0], int):
        raise TritonExportError(
            f"tensor {tensor['name']!r} has a fixed batch of {shape[0]}; Triton's dynamic "
            f"batching needs a dynamic first dimension: re-export the model"
        )
    return [size if isinstance(size, int) else -1 for size in shape[1:]]


def _config(
    triton: str, platform: str, signature: Signature, max_batch: int, options: TritonOptions
) -> mc.ModelConfig:
    """The ModelConfig message of one Triton model."""
    config = mc.ModelConfig(name=triton, platform=platform, max_batch_size=max_batch)
    for kind, tensor in signature:
        if tensor["dtype"] not in _DTYPES:
            raise TritonExportError(
                f"{triton}: tensor {tensor['name']!r} has dtype {tensor['dtype']}"
            )
        dims = _dims(tensor)
        entry = (config.input if kind == "input" else config.output).add(
            name=tensor["name"], data_type=_DTYPES[tensor["dtype"]]
        )
        if dims:
            entry.dims.extend(dims)
        else:  # one scalar per image ([N] in the graph): Triton wants dims [1], reshaped away
            entry.dims.append(1)
            entry.reshape.SetInParent()
    too_big = [n for n in options.preferred_batch_sizes if n > max_batch]
    if too_big:
        raise TritonExportError(
            f"{triton}: preferred batch sizes {too_big} exceed max_batch_size {max_batch}"
        )
    config.dynamic_batching.SetInParent()
    config.dynamic_batching.preferred_batch_size.extend(sorted(set(options.preferred_batch_sizes)))
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.instance_group.add(count=options.instances, kind=KINDS[options.kind])
    if options.version_policy == "all":
        config.version_policy.all.SetInParent()
    else:
        config.version_policy.latest.num_versions = 1
    return config


def _add_file(
    model: TritonModel, number: int, file: str, folder: Path, artifact: Mapping[str, Any]
) -> None:
    source = folder / artifact["file"]
    model.files.setdefault(number, {})[file] = source
    model.sha256[source] = str(artifact["sha256"])


def _describe(engines: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(
        f"{e['file']} ({e['tensorrt']['gpu']}, compute capability "
        f"{e['tensorrt']['compute_capability']}, TensorRT {e['tensorrt']['version']})"
        for e in engines
    )


def _describe_ccs(cc_files: Mapping[int, Mapping[str, str]]) -> str:
    return "; ".join(
        f"version {v}: {', '.join(sorted(f)) or 'none'}" for v, f in sorted(cc_files.items())
    )


def config_text(model: TritonModel) -> str:
    """The model's config.pbtxt: a comment naming its source, then the text-format message."""
    what = f"direction {model.direction}" if model.direction else "conditional graph"
    head = (
        f"# Written by i2i (i2i models export-triton) from i2i model {model.source!r}, {what}, "
        f"versions {', '.join(map(str, model.versions))}.\n"
    )
    return head + text_format.MessageToString(model.config)


def write_triton_models(
    models: Sequence[TritonModel],
    out: str | os.PathLike[str],
    *,
    replace: bool = False,
    hardlink: bool = False,
) -> None:
    """Write `models` into `out`: all built in a hidden folder first, then renamed into place.

    `out` must be absent or empty unless `replace`; then each model folder written replaces
    the one of its name (others are left alone).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TritonExportError(f"{out} is a file; the Triton repository must be a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Writers of one OUT take turns (a lock file beside it, so OUT holds only models): the
    # leftovers removed below are then a killed export's, never a running one's.
    with _locked(out.parent, f".{out.name}.lock"):
        _write_locked(models, out, replace, hardlink)


def _write_locked(models: Sequence[TritonModel], out: Path, replace: bool, hardlink: bool) -> None:
    leftovers = list(out.parent.glob(f".{glob.escape(out.name)}{_STAGING}*"))
    present = []
    if out.is_dir():
        for entry in out.iterdir():
            if entry.name.startswith(_STAGING):
                leftovers.append(entry)
            else:
                present.append(entry.name)
        present.sort()
    for entry in leftovers:  # left by a killed export (the lock is held)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        log.warning("removed %s, left by an interrupted export", entry)
    if present and not replace:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise TritonExportError(
            f"{out} is not empty (it holds {shown}): choose an empty folder, or pass --force "
            f"to replace the Triton models this export writes "
            f"({', '.join(m.name for m in models)}) and keep the others"
        )
    # Built inside OUT when it exists (the renames then stay on its filesystem, also when
    # OUT is a mount point), else beside it; hidden, and removed whatever happens.
    if out.is_dir():
        staging = out / f"{_STAGING}{secrets.token_hex(4)}"
    else:
        staging = out.parent / f".{out.name}{_STAGING}{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        for model in models:
            _write_model(model, staging / model.name, hardlink)
        _fsync_tree(staging)  # what is renamed into place survives a power cut
        if not out.exists():
            os.rename(staging, out)
            fsync_dir(out.parent)
            log.info("wrote the Triton repository %s", out)
            return
        moved: list[tuple[Path, Path | None]] = []  # (target, the folder it held before)
        try:
            for model in models:
                target = out / model.name
                aside = None
                if target.exists() or target.is_symlink():
                    aside = staging / f".old-{model.name}"
                    os.rename(target, aside)
                moved.append((target, aside))
                os.rename(staging / model.name, target)
        except BaseException:
            for target, aside in reversed(moved):  # put back what was there
                if target.exists() and not target.is_symlink():
                    shutil.rmtree(target)
                if aside is not None:
                    os.rename(aside, target)
            raise
        fsync_dir(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %d Triton models into %s", len(models), out)


def _write_model(model: TritonModel, folder: Path, hardlink: bool) -> None:
    folder.mkdir()
    (folder / CONFIG).write_text(config_text(model), encoding="utf-8")
    for number, files in model.files.items():
        (folder / str(number)).mkdir()
        for file, source in files.items():
            target = folder / str(number) / file
            if hardlink:
                try:
                    os.link(source, target)
                except OSError as exc:
                    raise TritonExportError(
                        f"cannot hard-link {source} to {target} ({exc.strerror}): hard links "
                        f"need one filesystem; leave out --hardlink to copy the files"
                    ) from None
            else:
                shutil.copyfile(source, target)
            digest = sha256_file(target)
            if digest != model.sha256[source]:
                raise TritonExportError(
                    f"{source}: sha256 {digest}, its manifest says {model.sha256[source]}; "
                    f"restore the file or re-export this version"
                )
