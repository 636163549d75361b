"""A run whose epochs end before its planned steps ends there (families without data-free
steps): resuming on a larger data folder changes the steps per epoch, not the family."""

from __future__ import annotations

from pathlib import Path

from i2i.checkpoint import load_checkpoint
from i2i.training import train
from tests.conftest import tiny_config, write_images


def test_a_resume_on_more_data_ends_with_the_epochs(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    for root, n in ((small, 4), (large, 6)):
        write_images(root / "trainA", n, seed=1)
        write_images(root / "trainB", n, seed=2)
    # 2 epochs of 2 steps (4 images, batch 2), stopped after epoch 2's first batch.
    run = tmp_path / "run"
    train(tiny_config(small, n_epochs=1, n_epochs_decay=1, max_steps=3), run)
    # 3 steps per epoch now: 6 planned, but epoch 2 ends after its batches 2 and 3, at 5.
    summary = train(tiny_config(large, n_epochs=1, n_epochs_decay=1), run, resume=True)
    assert summary.step == 5
    assert load_checkpoint(run / "latest.pt")["step"] == 5
