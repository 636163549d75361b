"""What a user sees while training: JSONL loss log, TensorBoard, PNG sample grids, progress."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from i2i.data.transforms import to_uint8

log = logging.getLogger(__name__)


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile uint8 HWC images (rows of equal-height cells) into one uint8 image."""
    height = max(img.shape[0] for row in rows for img in row)
    width = max(img.shape[1] for row in rows for img in row)
    n_cols = max(len(row) for row in rows)
    grid = np.full(
        (len(rows) * (height + pad) + pad, n_cols * (width + pad) + pad, 3), 255, dtype=np.uint8
    )
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            if img.ndim == 2:
                img = img[:, :, None]
            if img.shape[2] == 1:
                img = np.repeat(img, 3, axis=2)
            y, x = pad + r * (height + pad), pad + c * (width + pad)
            grid[y : y + img.shape[0], x : x + img.shape[1]] = img
    return grid


def visuals_grid(
    visuals: dict[str, torch.Tensor], rows: list[tuple[str, ...]], max_images: int = 4
) -> np.ndarray:
    """A grid with, for each of the first images of the batch, one row per visual row."""
    n = min(max_images, next(iter(visuals.values())).shape[0])
    cells: list[list[np.ndarray]] = []
    for i in range(n):
        for names in rows:
            cells.append([to_uint8(visuals[name][i].float().cpu()) for name in names])
    return image_grid(cells)


class TrainingMonitor:
    """Writes the loss log, TensorBoard events and sample grids of one run (rank 0 only)."""

    def __init__(self, out_dir: Path, tensorboard: bool = True) -> None:
        self.out_dir = out_dir
        self.samples_dir = out_dir / "samples"
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.loss_log = (out_dir / "losses.jsonl").open("a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))

    def log_losses(
        self, step: int, epoch: int, losses: dict[str, float], lrs: dict[str, float]
    ) -> None:
        record: dict[str, Any] = {"step": step, "epoch": epoch, "time": round(time.time(), 3)}
        record.update({f"lr_{k}": v for k, v in lrs.items()})
        record.update(losses)
        self.loss_log.write(json.dumps(record) + "\n")
        self.loss_log.flush()
        if self.writer is not None:
            for name, value in losses.items():
                self.writer.add_scalar(f"loss/{name}", value, step)
            for name, value in lrs.items():
                self.writer.add_scalar(f"lr/{name}", value, step)

    def log_samples(self, step: int, grid: np.ndarray) -> Path:
        path = self.samples_dir / f"step_{step:08d}.png"
        Image.fromarray(grid).save(path)
        if self.writer is not None:
            self.writer.add_image("samples", grid, step, dataformats="HWC")
        return path

    def close(self) -> None:
        self.loss_log.close()
        if self.writer is not None:
            self.writer.close()


def read_loss_log(path: Path) -> list[dict[str, Any]]:
    """The records of a run's losses.jsonl."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
