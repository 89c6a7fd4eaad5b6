"""SAM2 (Segment Anything 2) in Flax NNX: Hiera trunk, FPN neck, prompt encoder, mask decoder, memory modules.

Importing the package registers `sam2_hiera_{t,s,b+,l}` and `sam2.1_hiera_{t,s,b+,l}` with `zoo`.
`SAM2ImagePredictor` segments images from point / box / mask prompts; `SAM2VideoTracker` tracks an object through a
stream of frames.
"""

from models.sam2.model import SAM2, SAM2Config, build_sam2
from models.sam2.predictor import SAM2ImagePredictor
from models.sam2.video import SAM2VideoPredictor, SAM2VideoTracker

__all__ = ["SAM2", "SAM2Config", "SAM2ImagePredictor", "SAM2VideoPredictor", "SAM2VideoTracker", "build_sam2"]
