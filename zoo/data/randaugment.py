"""timm-style RandAugment with PIL, driven by an explicit numpy generator.

Config strings follow timm's `rand_augment_transform`: "rand-m9-mstd0.5-inc1" means magnitude 9
(of 10), magnitude noise std 0.5, the "increasing" op set. Other keys: n (ops per image, default 2),
mmax (magnitude clip, default 10), p (prob of each chosen op, default 0.5). Magnitude-to-argument
maps are timm's (`timm/data/auto_augment.py`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from zoo.data.transforms import _channels, from_pil, resolve_interpolation, to_pil

LEVEL_DENOM = 10.0

Op = Callable[..., Image.Image]


def _negate(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() > 0.5 else value


# magnitude (0..10) -> op argument; some draw a random sign from rng.
def _rotate_arg(level: float, rng: np.random.Generator) -> float:
    return _negate(level / LEVEL_DENOM * 30.0, rng)


def _shear_arg(level: float, rng: np.random.Generator) -> float:
    return _negate(level / LEVEL_DENOM * 0.3, rng)


def _translate_rel_arg(level: float, rng: np.random.Generator) -> float:
    return _negate(level / LEVEL_DENOM * 0.45, rng)


def _enhance_arg(level: float, rng: np.random.Generator) -> float:
    return level / LEVEL_DENOM * 1.8 + 0.1


def _enhance_increasing_arg(level: float, rng: np.random.Generator) -> float:
    return max(0.1, 1.0 + _negate(level / LEVEL_DENOM * 0.9, rng))


def _posterize_arg(level: float, rng: np.random.Generator) -> int:
    return int(level / LEVEL_DENOM * 4)


def _posterize_increasing_arg(level: float, rng: np.random.Generator) -> int:
    return 4 - _posterize_arg(level, rng)


def _solarize_arg(level: float, rng: np.random.Generator) -> int:
    return min(256, int(level / LEVEL_DENOM * 256))


def _solarize_increasing_arg(level: float, rng: np.random.Generator) -> int:
    return 256 - _solarize_arg(level, rng)


def _solarize_add_arg(level: float, rng: np.random.Generator) -> int:
    return min(128, int(level / LEVEL_DENOM * 110))


def _affine(image: Image.Image, matrix: tuple[float, ...], fill: Any, resample: Image.Resampling) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)


def _fill_for(image: Image.Image, fill: tuple[int, ...]) -> Any:
    return fill[0] if image.mode == "L" else fill


def _solarize_add(image: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    lut = [min(255, value + add) if value < threshold else value for value in range(256)]
    if image.mode in ("L", "RGB"):
        return image.point(lut * (3 if image.mode == "RGB" else 1))
    return image


def _posterize(image: Image.Image, bits: int) -> Image.Image:
    # Keep the `bits` most significant bits; 0 gives black, as old PIL did (new PIL rejects bits=0).
    if bits >= 8:
        return image
    mask = ~(2 ** (8 - max(0, bits)) - 1) & 0xFF
    lut = [value & mask for value in range(256)]
    return image.point(lut * len(image.getbands()))


# name -> (apply(image, arg, fill, resample), level_to_arg or None)
OPS: dict[str, tuple[Callable[..., Image.Image], Callable[[float, np.random.Generator], Any] | None]] = {
    "AutoContrast": (lambda im, arg, fill, rs: ImageOps.autocontrast(im), None),
    "Equalize": (lambda im, arg, fill, rs: ImageOps.equalize(im), None),
    "Invert": (lambda im, arg, fill, rs: ImageOps.invert(im), None),
    "Rotate": (lambda im, arg, fill, rs: im.rotate(arg, resample=rs, fillcolor=_fill_for(im, fill)), _rotate_arg),
    "Posterize": (lambda im, arg, fill, rs: _posterize(im, arg), _posterize_arg),
    "PosterizeIncreasing": (lambda im, arg, fill, rs: _posterize(im, arg), _posterize_increasing_arg),
    "Solarize": (lambda im, arg, fill, rs: ImageOps.solarize(im, arg), _solarize_arg),
    "SolarizeIncreasing": (lambda im, arg, fill, rs: ImageOps.solarize(im, arg), _solarize_increasing_arg),
    "SolarizeAdd": (lambda im, arg, fill, rs: _solarize_add(im, arg), _solarize_add_arg),
    "Color": (lambda im, arg, fill, rs: ImageEnhance.Color(im).enhance(arg), _enhance_arg),
    "ColorIncreasing": (lambda im, arg, fill, rs: ImageEnhance.Color(im).enhance(arg), _enhance_increasing_arg),
    "Contrast": (lambda im, arg, fill, rs: ImageEnhance.Contrast(im).enhance(arg), _enhance_arg),
    "ContrastIncreasing": (lambda im, arg, fill, rs: ImageEnhance.Contrast(im).enhance(arg), _enhance_increasing_arg),
    "Brightness": (lambda im, arg, fill, rs: ImageEnhance.Brightness(im).enhance(arg), _enhance_arg),
    "BrightnessIncreasing": (
        lambda im, arg, fill, rs: ImageEnhance.Brightness(im).enhance(arg),
        _enhance_increasing_arg,
    ),
    "Sharpness": (lambda im, arg, fill, rs: ImageEnhance.Sharpness(im).enhance(arg), _enhance_arg),
    "SharpnessIncreasing": (lambda im, arg, fill, rs: ImageEnhance.Sharpness(im).enhance(arg), _enhance_increasing_arg),
    "ShearX": (lambda im, arg, fill, rs: _affine(im, (1, arg, 0, 0, 1, 0), _fill_for(im, fill), rs), _shear_arg),
    "ShearY": (lambda im, arg, fill, rs: _affine(im, (1, 0, 0, arg, 1, 0), _fill_for(im, fill), rs), _shear_arg),
    "TranslateXRel": (
        lambda im, arg, fill, rs: _affine(im, (1, 0, arg * im.size[0], 0, 1, 0), _fill_for(im, fill), rs),
        _translate_rel_arg,
    ),
    "TranslateYRel": (
        lambda im, arg, fill, rs: _affine(im, (1, 0, 0, 0, 1, arg * im.size[1]), _fill_for(im, fill), rs),
        _translate_rel_arg,
    ),
}

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS.
RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)  # fmt: skip
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)  # fmt: skip


def parse_rand_augment(config: str) -> dict[str, Any]:
    """Parse a timm RandAugment string into {magnitude, num_layers, magnitude_std, magnitude_max, prob, ops}."""
    sections = config.split("-")
    if sections[0] != "rand":
        raise ValueError(f"RandAugment config must start with 'rand', got {config!r}")
    parsed: dict[str, Any] = {
        "magnitude": 10.0,
        "num_layers": 2,
        "magnitude_std": 0.0,
        "magnitude_max": LEVEL_DENOM,
        "prob": 0.5,
        "ops": RAND_TRANSFORMS,
    }
    for section in sections[1:]:
        match = re.fullmatch(r"([a-z]+)([-+0-9.e]*|inf)", section)
        if not match or not match.group(2):
            raise ValueError(f"cannot parse RandAugment section {section!r} in {config!r}")
        key, value = match.groups()
        if key == "mstd":
            parsed["magnitude_std"] = float(value)
        elif key == "mmax":
            parsed["magnitude_max"] = float(value)
        elif key == "inc":
            parsed["ops"] = RAND_INCREASING_TRANSFORMS if bool(int(value)) else RAND_TRANSFORMS
        elif key == "m":
            parsed["magnitude"] = float(value)
        elif key == "n":
            parsed["num_layers"] = int(value)
        elif key == "p":
            parsed["prob"] = float(value)
        else:
            raise ValueError(f"unsupported RandAugment key {key!r} in {config!r} (known: m, n, mstd, mmax, inc, p)")
    return parsed


class RandAugment:
    """Apply `num_layers` ops drawn uniformly with replacement; each fires with `prob` at a noisy magnitude.

    Args:
      ops: op names from `OPS`.
      magnitude: 0..10 level; per application it is drawn from N(magnitude, magnitude_std)
        (uniform(0, magnitude) when magnitude_std is inf) and clipped to [0, magnitude_max].
      fill: RGB fill for geometric ops (timm uses the dataset mean * 255).
      interpolation: resampling for geometric ops; "random" picks bilinear/bicubic per op (timm).
    """

    def __init__(
        self,
        ops: Sequence[str] = RAND_INCREASING_TRANSFORMS,
        *,
        magnitude: float = 9.0,
        num_layers: int = 2,
        magnitude_std: float = 0.0,
        magnitude_max: float = LEVEL_DENOM,
        prob: float = 0.5,
        fill: Sequence[int] = (128, 128, 128),
        interpolation: str = "random",
        key: str = "image",
    ):
        unknown = [name for name in ops if name not in OPS]
        if unknown:
            raise ValueError(f"unknown RandAugment ops {unknown}; known: {sorted(OPS)}")
        self.ops = list(ops)
        self.magnitude = magnitude
        self.num_layers = num_layers
        self.magnitude_std = magnitude_std
        self.magnitude_max = magnitude_max
        self.prob = prob
        self.fill = tuple(int(value) for value in fill)
        self.interpolation = "random" if interpolation in ("random", None) else interpolation
        self.key = key

    @classmethod
    def from_config(cls, config: str, **kwargs: Any) -> RandAugment:
        """Build from a timm string such as "rand-m9-mstd0.5-inc1"."""
        return cls(**{**parse_rand_augment(config), **kwargs})

    def _magnitude(self, rng: np.random.Generator) -> float:
        magnitude = self.magnitude
        if self.magnitude_std == math.inf:
            magnitude = rng.uniform(0.0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = rng.normal(magnitude, self.magnitude_std)
        return float(min(max(0.0, magnitude), self.magnitude_max))

    def apply_op(self, image: Image.Image, name: str, magnitude: float, rng: np.random.Generator) -> Image.Image:
        """Apply one named op at `magnitude` (sign and resampling drawn from rng)."""
        apply, level_to_arg = OPS[name]
        arg = level_to_arg(magnitude, rng) if level_to_arg is not None else None
        return apply(image, arg, self.fill, resolve_interpolation(self.interpolation, rng))

    def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        array = example[self.key]
        image = to_pil(array)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        for op_index in rng.integers(0, len(self.ops), size=self.num_layers):
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            image = self.apply_op(image, self.ops[int(op_index)], self._magnitude(rng), rng)
        return {**example, self.key: from_pil(image, _channels(array))}

    def __repr__(self) -> str:
        return (
            f"RandAugment(n={self.num_layers}, m={self.magnitude}, mstd={self.magnitude_std}, "
            f"ops={len(self.ops)}, p={self.prob})"
        )
