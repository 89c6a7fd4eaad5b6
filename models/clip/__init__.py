"""OpenAI CLIP image + text towers, BPE tokenizer and zero-shot classification (registers the `clip_*` variants)."""

from models.clip import variants  # noqa: F401  (registration)
from models.clip.convert import convert_clip
from models.clip.model import CLIP, TextTower, VisionTower
from models.clip.tokenizer import ClipTokenizer, default_vocab_path
from models.clip.zero_shot import zero_shot_classifier, zero_shot_predict
from models.layers import quick_gelu  # OpenAI CLIP's activation, shared with the other families

__all__ = [
    "CLIP",
    "ClipTokenizer",
    "TextTower",
    "VisionTower",
    "convert_clip",
    "default_vocab_path",
    "quick_gelu",
    "zero_shot_classifier",
    "zero_shot_predict",
]
