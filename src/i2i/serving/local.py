"""Translation without a server (`i2i translate --repository/--checkpoint`), same backends.

The same decode, size policy, batch runner and encode as the server (`pipeline.prepare`,
`store.batch_runner`, `pipeline.finish`), but one image at a time in the caller's thread:
what users of the reference code do with its test script, with the server's robustness.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from i2i.repository import RepositoryError, read_manifest, version_folder
from i2i.serving.backends import BackendError, load_backend
from i2i.serving.backends.style import StyleEncoder, load_style_encoder
from i2i.serving.errors import InvalidArgument
from i2i.serving.pipeline import Request, check_parameters, finish, prepare
from i2i.serving.store import LoadedDirection, batch_runner

# Samples of one multimodal image, all run in one backend call.
MAX_SAMPLES = 64


class LocalTranslatorError(ValueError):
    """The model, checkpoint or direction cannot be used; the message says what to change."""


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
                known = list(manifest["directions"])
                targets = [s.get("target_domain") for s in manifest["directions"].values()]
                if direction not in known and direction.startswith("to_") and all(targets):
                    raise LocalTranslatorError(
                        f"model {model!r} has no domain {direction[3:]!r}; its domains: "
                        f"{', '.join(manifest['domains'])}"
                    )
                if direction not in known:
                    raise LocalTranslatorError(
                        f"model {model!r} has no direction {direction!r}; its directions: "
                        f"{', '.join(known)}"
                    )
                name, number, family = manifest["name"], manifest["version"], manifest["family"]
                folder = version_folder(repository, name, number)
                runner = load_backend(
                    folder, manifest, direction, choice=backend, precision=precision
                )
                try:
                    encoder = load_style_encoder(folder, manifest, direction, runner)
                except BackendError:
                    runner.close()
                    raise
            else:
                assert checkpoint is not None
                # PyTorch only on this path (train extra); a repository needs none.
                from i2i.serving.backends.pytorch import (
                    load_checkpoint_backend,
                    pytorch_style_encoder,
                )

                runner = load_checkpoint_backend(checkpoint, direction)
                encoder = (  # a second read of the checkpoint: multimodal models only
                    pytorch_style_encoder(checkpoint, direction, device="cpu")
                    if runner.style_size
                    else None
                )
                name, number, family = checkpoint.stem, 0, getattr(runner, "family", "")
        except (RepositoryError, BackendError) as exc:
            raise LocalTranslatorError(str(exc)) from None
        self.direction = LoadedDirection(
            name, number, direction, family, runner, MAX_SAMPLES, style_encoder=encoder
        )
        self._run = batch_runner(runner)

    def translate(
        self,
        data: bytes,
        *,
        size_policy: str = "pad",
        output_format: str = "png",
        quality: int = 0,
        num_samples: int = 1,
        style_seed: int | None = None,
        style_code: Sequence[float] | None = None,
        style_reference: bytes | None = None,
    ) -> list[bytes]:
        """Encoded image in, one encoded output per sample out (ServingError on bad input).

        At most one of `style_seed`, `style_code` and `style_reference` (an encoded image of
        the target domain), for multimodal models; none draws random styles.
        """
        direction = self.direction
        given = [s for s in (style_seed, style_code, style_reference) if s is not None]
        if len(given) > 1:
            raise InvalidArgument("give at most one of a style seed, code and reference image")
        request = Request(
            model=direction.model,
            direction=direction.name,
            image=data,
            num_samples=num_samples,
            style_seed=style_seed,
            style_code=style_code,
            style_reference=style_reference,
            output_format=output_format,
            quality=quality,
            size_policy=size_policy,
        )
        check_parameters(request, direction, max_samples=MAX_SAMPLES)
        prepared = prepare(request, direction, self.max_pixels)
        height, width = prepared.pixels.shape[:2]
        (outputs,) = self._run((height, width), [(prepared.pixels, prepared.style)])
        return [bytes(image) for image in finish(outputs, prepared)]

    @property
    def style_encoder(self) -> StyleEncoder | None:
        """The style encoder reference images go through (None: the model has none)."""
        return self.direction.style_encoder

    def close(self) -> None:
        self.direction.close()

    def __enter__(self) -> LocalTranslator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
