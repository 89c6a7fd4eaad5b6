"""Static configuration of the compositing stage (hashable, passed as a non-differentiable argument)."""

from __future__ import annotations

import dataclasses

from kernels.rasterize.conventions import Convention

# Per-slot packed attributes: x, y, conic a, b, c, opacity, then the blended values (features, depth).
NUM_GEOMETRY = 6


@dataclasses.dataclass(frozen=True)
class CompositeConfig:
    """Image size, tiling and the convention's compositing constants for one rasterize call."""

    width: int
    height: int
    tile_size: int
    chunk: int
    alpha_max: float
    alpha_min: float
    transmittance_min: float
    stop_inclusive: bool
    impl: str = "xla"  # "xla" or "pallas"
    interpret: bool = False  # Pallas interpret mode (CPU)
    reduction: str = "scatter"  # per-slot -> per-Gaussian gradient reduction: "scatter" or "sorted" (deterministic)
    pallas_backend: str | None = None  # "triton" | "mosaic_tpu"; None: from jax.default_backend()

    @property
    def tiles_x(self) -> int:
        return -(-self.width // self.tile_size)

    @property
    def tiles_y(self) -> int:
        return -(-self.height // self.tile_size)

    @property
    def num_tiles(self) -> int:
        return self.tiles_x * self.tiles_y

    @property
    def pixels_per_tile(self) -> int:
        return self.tile_size * self.tile_size

    @classmethod
    def from_convention(cls, convention: Convention, width: int, height: int, **kwargs) -> CompositeConfig:
        return cls(
            width=width,
            height=height,
            alpha_max=convention.alpha_max,
            alpha_min=convention.alpha_min,
            transmittance_min=convention.transmittance_min,
            stop_inclusive=convention.stop_inclusive,
            **kwargs,
        )
