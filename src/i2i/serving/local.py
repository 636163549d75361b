"""Translation without a server (`i2i translate --repository/--checkpoint`), same backends.

The same decode, size policy and encode as the server (`pipeline.prepare` / `finish`), but
one image at a time in the caller's thread: what users of the reference code do with its
test script, with the server's robustness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from i2i.repository import RepositoryError, read_manifest, version_folder
from i2i.serving.backends import Backend, BackendError, load_backend, load_checkpoint_backend
from i2i.serving.pipeline import Request, check_parameters, finish, prepare


class LocalTranslatorError(ValueError):
    """The model, checkpoint or direction cannot be used; the message says what to change."""


class _Direction:
    """The fields of a loaded direction that `prepare`/`finish`/`check_parameters` read."""

    def __init__(
        self, model: str, version: int, name: str, family: str, backend: Backend, rule: Any
    ):
        self.model, self.version, self.name, self.family = model, version, name, family
        self.backend = backend
        self.multiple_of = int(rule["multiple_of"])
        self.fixed_size = rule["fixed_size"]
        self.max_batch = 64
        self.in_channels = backend.in_channels
        self.out_channels = backend.out_channels
        self.style_size = backend.style_size
        self.label = f"{model}:{version} {name}"
        self.preparing = 0


class LocalTranslator:
    """Translates encoded images in this process with a repository model or a checkpoint."""

    def __init__(
        self,
        *,
        repository: Path | None = None,
        checkpoint: Path | None = None,
        model: str | None = None,
        version: int | None = None,
        direction: str,
        backend: str = "auto",
        precision: str = "auto",
        max_pixels: int = 4096 * 4096,
    ) -> None:
        if (repository is None) == (checkpoint is None):
            raise LocalTranslatorError("give either a repository (with a model) or a checkpoint")
        self.max_pixels = max_pixels
        try:
            if repository is not None:
                if not model:
                    raise LocalTranslatorError("--model is needed with --repository")
                manifest = read_manifest(repository, model, version)
                self._check_direction(direction, list(manifest["directions"]), model)
                folder = version_folder(repository, manifest["name"], manifest["version"])
                runner = load_backend(
                    folder, manifest, direction, choice=backend, precision=precision
                )
                rule = manifest["directions"][direction]["shape_rule"]
                self.direction = _Direction(
                    manifest["name"],
                    manifest["version"],
                    direction,
                    manifest["family"],
                    runner,
                    rule,
                )
            else:
                assert checkpoint is not None
                runner, family, rule = _checkpoint_backend(checkpoint, direction)
                self.direction = _Direction(checkpoint.stem, 0, direction, family, runner, rule)
        except (RepositoryError, BackendError) as exc:
            raise LocalTranslatorError(str(exc)) from None

    @staticmethod
    def _check_direction(direction: str, known: list[str], model: str) -> None:
        if direction not in known:
            raise LocalTranslatorError(
                f"model {model!r} has no direction {direction!r}; its directions: "
                f"{', '.join(known)}"
            )

    def translate(
        self,
        data: bytes,
        *,
        size_policy: str = "pad",
        output_format: str = "png",
        quality: int = 0,
        num_samples: int = 1,
        seed: int | None = None,
    ) -> list[bytes]:
        """Encoded image in, one encoded output per sample out (ServingError on bad input)."""
        direction: Any = self.direction
        request = Request(
            model=direction.model,
            direction=direction.name,
            image=data,
            num_samples=num_samples,
            style_seed=seed if direction.style_size else None,
            output_format=output_format,
            quality=quality,
            size_policy=size_policy,
        )
        check_parameters(request, direction, max_samples=64)
        prepared = prepare(request, direction, self.max_pixels)
        k = num_samples if direction.style_size else 1
        batch = prepared.pixels[None].repeat(k, axis=0)  # (k, H, W, C)
        outputs = direction.backend.run(batch, prepared.style)
        return [bytes(image) for image in finish(outputs, prepared)]

    def close(self) -> None:
        self.direction.backend.close()

    def __enter__(self) -> LocalTranslator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checkpoint_backend(checkpoint: Path, direction: str) -> tuple[Backend, str, Any]:
    """A PyTorch backend from a training checkpoint, its family and shape rule."""
    from i2i.checkpoint import CheckpointError, load_checkpoint
    from i2i.models import get_family, options_from_dict

    try:
        payload = load_checkpoint(checkpoint, map_location="cpu", mmap=True)
    except CheckpointError as exc:
        raise LocalTranslatorError(str(exc)) from None
    family = get_family(payload["family"])
    options = options_from_dict(payload["family"], payload["config"].get("model", {}))
    if direction not in family.directions:
        raise LocalTranslatorError(
            f"a {payload['family']} checkpoint has no direction {direction!r}; its directions: "
            f"{', '.join(family.directions)}"
        )
    rule = family.shape_rule(options)
    backend = load_checkpoint_backend(checkpoint, direction)
    return (
        backend,
        payload["family"],
        {"multiple_of": rule.multiple_of, "fixed_size": rule.fixed_size},
    )
