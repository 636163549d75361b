"""Which image sizes a translator accepts: part of a family's definition and of contract 2.

A contract module (standard library only): model families state their rule here, the
export writes it into the manifest (:meth:`ShapeRule.to_manifest`), and a server reads it
back (:meth:`ShapeRule.from_manifest`) without importing PyTorch or ``i2i.models``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ShapeRule:
    """Which image sizes (height, width) a model accepts.

    Either any size that is a multiple of ``multiple_of`` on both sides and at least
    ``min_size`` on both sides, or, when ``fixed_size`` is set, exactly ``fixed_size`` x
    ``fixed_size``. ``min_size`` is what the network's padding needs (a ResNet generator
    reflect-pads its 1/4-scale feature map, so it takes no side below 8).
    """

    multiple_of: int = 1
    fixed_size: int | None = None
    min_size: int = 1

    def __post_init__(self) -> None:
        if self.multiple_of < 1:
            raise ValueError(f"multiple_of must be >= 1, got {self.multiple_of}")
        if self.min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {self.min_size}")
        if self.fixed_size is not None and (
            self.fixed_size < self.min_size or self.fixed_size % self.multiple_of
        ):
            raise ValueError(
                f"fixed_size must be a multiple of {self.multiple_of} and at least "
                f"{self.min_size}, got {self.fixed_size}"
            )

    @property
    def smallest(self) -> int:
        """The smallest side length the rule accepts."""
        if self.fixed_size is not None:
            return self.fixed_size
        m = self.multiple_of
        return -(-self.min_size // m) * m

    def check(self, height: int, width: int) -> None:
        """Raise ValueError if this rule does not accept a ``height`` x ``width`` image."""
        if height < 1 or width < 1:
            raise ValueError(f"image size {height}x{width} is empty")
        if self.fixed_size is not None:
            if (height, width) != (self.fixed_size, self.fixed_size):
                raise ValueError(
                    f"image size {height}x{width} is not accepted: this model takes exactly "
                    f"{self.fixed_size}x{self.fixed_size}"
                )
            return
        if min(height, width) < self.smallest:
            raise ValueError(
                f"image size {height}x{width} is too small: this model takes sides of at "
                f"least {self.smallest} (smallest accepted size: {self.smallest}x{self.smallest})"
            )
        if height % self.multiple_of or width % self.multiple_of:
            near_h, near_w = self.nearest(height, width)
            raise ValueError(
                f"image size {height}x{width} is not accepted: height and width must be "
                f"multiples of {self.multiple_of} (nearest accepted size: {near_h}x{near_w})"
            )

    def nearest(self, height: int, width: int) -> tuple[int, int]:
        """The accepted (height, width) closest to the given one; ties round up."""
        if self.fixed_size is not None:
            return self.fixed_size, self.fixed_size
        return self._round(height), self._round(width)

    def _round(self, size: int) -> int:
        m = self.multiple_of
        return max(self.smallest, (size + m // 2) // m * m)

    def describe(self) -> str:
        """The accepted sizes in words, e.g. "multiples of 4, at least 8x8"."""
        if self.fixed_size is not None:
            return f"exactly {self.fixed_size}x{self.fixed_size}"
        parts = [f"multiples of {self.multiple_of}"] if self.multiple_of > 1 else []
        if self.smallest > 1:
            parts.append(f"at least {self.smallest}x{self.smallest}")
        return ", ".join(parts) or "any size"

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``shape_rule`` entry (contract 2)."""
        return {
            "multiple_of": self.multiple_of,
            "fixed_size": self.fixed_size,
            "min_size": self.min_size,
        }

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> ShapeRule:
        """Read a manifest's ``shape_rule`` entry.

        Manifests written before ``min_size`` existed lack it; the only free-size
        generators then were ResNets (multiple_of 4), whose padding needs two cells of the
        1/4-scale grid, so it defaults to twice ``multiple_of``.
        """
        multiple_of = int(entry["multiple_of"])
        min_size = entry.get("min_size")
        return cls(
            multiple_of=multiple_of,
            fixed_size=entry["fixed_size"],
            min_size=int(min_size) if min_size is not None else 2 * multiple_of,
        )
