"""The store's batch runner: requests of several samples share one backend call and get
their own outputs back (the multimodal path, with a stand-in backend: no such family yet)."""

from __future__ import annotations

import numpy as np

from i2i.serving.store import _warmup_batches, batch_runner


class StyleEcho:
    """Backend stand-in: each output image is filled with its style's first value."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def run(self, images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        self.calls.append((len(images), None if style is None else len(style)))
        out = np.zeros_like(images)
        if style is not None:
            out[:] = style[:, 0, None, None, None].astype(np.uint8)
        return out


def test_samples_are_split_back_per_request():
    backend = StyleEcho()
    run = batch_runner(backend)  # type: ignore[arg-type]
    pixels = np.zeros((4, 4, 3), np.uint8)
    styles = [np.array([[1.0], [2.0], [3.0]]), np.array([[7.0]]), np.array([[5.0], [6.0]])]
    outputs = run((4, 4), [(pixels, s) for s in styles])
    assert backend.calls == [(6, 6)]  # one call for the whole batch
    assert [o.shape for o in outputs] == [(3, 4, 4, 3), (1, 4, 4, 3), (2, 4, 4, 3)]
    assert [o[:, 0, 0, 0].tolist() for o in outputs] == [[1, 2, 3], [7], [5, 6]]


def test_unimodal_requests_are_one_image_each():
    backend = StyleEcho()
    run = batch_runner(backend)  # type: ignore[arg-type]
    images = [np.full((4, 4, 3), i, np.uint8) for i in range(3)]
    outputs = run((4, 4), [(image, None) for image in images])
    assert backend.calls == [(3, None)] and [o.shape[0] for o in outputs] == [1, 1, 1]


def test_warmup_batches_cover_what_batching_produces():
    assert _warmup_batches(1) == [1]
    assert _warmup_batches(8) == [1, 2, 4, 8]
    assert _warmup_batches(12) == [1, 2, 4, 8, 12]
