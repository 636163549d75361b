"""The image history buffer of Shrivastava et al. (2017), as the reference CycleGAN uses it."""

from __future__ import annotations

import random
from typing import Any

import torch


class ImagePool:
    """Keeps up to `size` generated images and feeds the discriminator a mix of old and new.

    Until the pool is full every image is stored and returned as is. After that each
    image is, with probability 1/2, swapped for a random stored one (which is returned
    while the new image takes its place), else returned as is: the reference's rule.
    The pool has its own random generator so its state can be checkpointed exactly.
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same shape drawn from `images` and the history."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                idx = self.rng.randint(0, self.size - 1)
                out.append(self.images[idx].clone())
                self.images[idx] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "size": self.size,
            "images": [img.cpu() for img in self.images],
            "rng": {"version": version, "state": list(internal), "gauss": gauss},
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        if state["size"] != self.size:
            raise ValueError(f"image pool size {state['size']} in checkpoint != {self.size}")
        self.images = [img.to(device) for img in state["images"]]
        rng = state["rng"]
        self.rng.setstate((rng["version"], tuple(rng["state"]), rng["gauss"]))
