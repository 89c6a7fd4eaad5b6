"""SAM2 (Segment Anything 2) in Flax NNX: Hiera trunk, FPN neck, prompt encoder, mask decoder, memory modules.

Importing the package registers `sam2_hiera_{t,s,b+,l}` and `sam2.1_hiera_{t,s,b+,l}` with `zoo`.
"""

from models.sam2.model import SAM2, SAM2Config, build_sam2

__all__ = ["SAM2", "SAM2Config", "build_sam2"]
