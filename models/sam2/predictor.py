"""Interactive image segmentation with SAM2, like the official `SAM2ImagePredictor`.

    predictor = SAM2ImagePredictor(zoo.create_model("sam2_hiera_t", pretrained="sam2_hiera_tiny.pt"))
    predictor.set_image(image_uint8_hwc)             # encodes once
    masks, scores, low_res = predictor.predict(point_coords=[[500, 375]], point_labels=[1])
    masks, scores, low_res = predictor.predict(box=[425, 600, 700, 875], multimask_output=False)

Pre-processing is the official one: scale to [0, 1], resize to image_size x image_size with antialiased bilinear
(torchvision `Resize` on tensors), normalise with the ImageNet mean/std. Masks come back at the original resolution
(bilinear, `align_corners=False`), thresholded at `mask_threshold` unless `return_logits=True`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.sam2.layers import bilinear_matrix, resize_hw
from models.sam2.model import SAM2
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> normalised float32 [size, size, 3] (antialiased bilinear resize, ImageNet mean/std)."""
    x = image.astype(np.float32) / np.float32(255.0)
    rows = bilinear_matrix(image.shape[0], size, antialias=True).astype(np.float32)
    cols = bilinear_matrix(image.shape[1], size, antialias=True).astype(np.float32)
    x = np.einsum("oh,hwc,pw->opc", rows, x, cols, optimize=True)
    return ((x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)).astype(np.float32)


def to_device(tree: Any) -> Any:
    """Host (numpy) arrays -> device arrays whose transfer has completed.

    A host-to-device transfer on CPU may read its numpy source after the call returns (while the computation that
    consumes it is queued). Handing over a temporary, or a bookkeeping array that is updated in place right after the
    step is dispatched, then lets the step read freed or next-step memory: nondeterministic results. Copying and
    waiting for the (tiny) transfers here makes every step see exactly the values it was given.
    """
    return jax.block_until_ready(jax.tree.map(lambda a: jnp.array(np.array(a, copy=True)), tree))


def _as_array(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(value, np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric array-like; got {type(value).__name__}") from err


class SAM2ImagePredictor:
    """Encode an image once with `set_image`, then decode any number of point / box / mask prompts with `predict`."""

    def __init__(self, model: SAM2, mask_threshold: float = 0.0):
        if not isinstance(model, SAM2):
            raise TypeError(f"SAM2ImagePredictor needs a models.sam2.SAM2 model; got {type(model).__name__}")
        self.model = model
        self.mask_threshold = mask_threshold
        self.image_size = model.config.image_size
        self.low_res_size = 4 * model.config.embedding_size
        self._graphdef, self._state = nnx.split(model)
        self._encode = jax.jit(self._encode_fn)
        self._decode = jax.jit(self._decode_fn, static_argnames=("multimask_output", "orig_hw"))
        self.reset_predictor()

    @classmethod
    def from_pretrained(cls, name: str, checkpoint: str, **overrides: Any) -> SAM2ImagePredictor:
        """Build a registered SAM2 variant (e.g. "sam2.1_hiera_l") from a checkpoint file or orbax directory."""
        import zoo

        return cls(zoo.create_model(name, pretrained=checkpoint, **overrides))

    # -- jitted pure functions -----------------------------------------------------------------------------------------

    def _encode_fn(self, state, images):
        return nnx.merge(self._graphdef, state).image_embeddings(images)

    def _decode_fn(self, state, features, coords, labels, mask_input, *, multimask_output, orig_hw):
        model = nnx.merge(self._graphdef, state)
        low_res, iou, _ = model.predict_masks(features, coords, labels, None, mask_input, multimask_output)
        masks = resize_hw(low_res, orig_hw, bilinear_matrix, axes=(2, 3))
        return masks, iou, jnp.clip(low_res, -32.0, 32.0)

    # -- public API ---------------------------------------------------------------------------------------------------

    def reset_predictor(self) -> None:
        """Forget the current image."""
        self._features = None
        self._orig_hw: tuple[int, int] | None = None

    @property
    def is_image_set(self) -> bool:
        """True after `set_image`."""
        return self._features is not None

    def set_image(self, image: Any) -> None:
        """Encode an RGB image: a uint8 numpy array [H, W, 3] (or a PIL image)."""
        if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
            image = np.asarray(image.convert("RGB"))
        if not isinstance(image, np.ndarray):
            raise TypeError(f"set_image expects a numpy array (H, W, 3) or a PIL image; got {type(image).__name__}")
        if image.ndim != 3 or image.shape[-1] != 3:
            hint = " (a batch? call set_image once per image)" if image.ndim == 4 else ""
            raise ValueError(f"set_image expects one RGB image of shape (H, W, 3); got shape {image.shape}{hint}")
        if image.dtype != np.uint8:
            raise ValueError(f"set_image expects uint8 pixels in [0, 255]; got dtype {image.dtype}")
        self.reset_predictor()
        x = preprocess(image, self.image_size)[None]
        self._features = self._encode(self._state, to_device(x))
        self._orig_hw = (int(image.shape[0]), int(image.shape[1]))

    def get_image_embedding(self) -> jax.Array:
        """The cached stride-16 image embedding [1, h, w, 256] (with `no_mem_embed` added, as in the official code)."""
        self._require_image()
        return self._features["image_embed"]

    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts on the current image.

        point_coords: (N, 2) or (B, N, 2) (x, y) pixels of the original image; point_labels (N,) or (B, N): 1
        foreground, 0 background. box: (4,) or (B, 4) x0, y0, x1, y1. mask_input: low-res logits (1, h, w) or
        (B, 1, h, w) from a previous call. With `normalize_coords=False` coordinates are already in [0, 1].
        Returns (masks (C, H, W) bool or logits, IoU scores (C,), low-res logits (C, h, w)); a leading B when
        several prompt sets are given. C = 3 with `multimask_output`, else 1.
        """
        self._require_image()
        height, width = self._orig_hw
        coords = labels = None
        batch = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            coords = _as_array(point_coords, "point_coords")
            labels = np.asarray(point_labels)
            if coords.ndim == 2:
                coords, labels = coords[None], labels[None]
            if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
                raise ValueError(
                    f"point_coords must be (N, 2) or (B, N, 2) and point_labels (N,) or (B, N); got "
                    f"{np.shape(point_coords)} and {np.shape(point_labels)}"
                )
            if not np.isin(labels, (-1, 0, 1, 2, 3)).all():
                raise ValueError(f"point_labels must be 1 (foreground) or 0 (background); got {np.unique(labels)}")
            self._check_inside(coords.reshape(-1, 2), "point", normalize_coords)
            batch = coords.shape[0]
        if box is not None:
            boxes = _as_array(box, "box")
            boxes = boxes[None] if boxes.ndim == 1 else boxes
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"box must be (4,) or (B, 4) as x0, y0, x1, y1; got shape {np.shape(box)}")
            if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
                raise ValueError(f"box must be x0, y0, x1, y1 with x0 <= x1 and y0 <= y1; got {boxes.tolist()}")
            self._check_inside(boxes.reshape(-1, 2), "box corner", normalize_coords)
            if batch is not None and batch != boxes.shape[0]:
                raise ValueError(f"{boxes.shape[0]} boxes but {batch} point sets; give one point set per box")
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = np.broadcast_to(np.asarray([[2, 3]]), corners.shape[:2])
            coords = corners if coords is None else np.concatenate([corners, coords], axis=1)
            labels = corner_labels if labels is None else np.concatenate([corner_labels, labels], axis=1)
            batch = boxes.shape[0]
        if coords is not None:
            scale = np.asarray([width, height], np.float32) if normalize_coords else np.ones(2, np.float32)
            coords, labels = to_device(((coords / scale * self.image_size).astype(np.float32),
                                        np.asarray(labels, np.int32)))
        masks_in = None
        if mask_input is not None:
            masks_in = _as_array(mask_input, "mask_input")
            masks_in = masks_in[None] if masks_in.ndim == 3 else masks_in
            side = self.low_res_size
            if masks_in.ndim != 4 or masks_in.shape[1:] != (1, side, side):
                raise ValueError(
                    f"mask_input must be low-res logits (1, {side}, {side}) or (B, 1, {side}, {side}) as returned by "
                    f"predict; got shape {np.shape(mask_input)}"
                )
            masks_in = to_device(np.asarray(masks_in, np.float32))
        if coords is None and masks_in is None:
            raise ValueError("predict needs a prompt: point_coords/point_labels, box or mask_input")
        masks, iou, low_res = self._decode(
            self._state, self._features, coords, labels, masks_in, multimask_output=bool(multimask_output),
            orig_hw=(height, width),
        )
        masks, iou, low_res = np.asarray(masks), np.asarray(iou), np.asarray(low_res)
        if not return_logits:
            masks = masks > self.mask_threshold
        if masks.shape[0] == 1:
            masks, iou, low_res = masks[0], iou[0], low_res[0]
        return masks, iou, low_res

    # -- helpers ------------------------------------------------------------------------------------------------------

    def _require_image(self) -> None:
        if self._features is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    def _check_inside(self, points: np.ndarray, what: str, normalized_input: bool) -> None:
        height, width = self._orig_hw
        limit = np.asarray([width, height], np.float32) if normalized_input else np.ones(2, np.float32)
        outside = ~np.all((points >= 0) & (points <= limit), axis=-1) | ~np.all(np.isfinite(points), axis=-1)
        if outside.any():
            bad = points[outside][0].tolist()
            frame = f"the {width}x{height} image" if normalized_input else "[0, 1] (normalize_coords=False)"
            raise ValueError(f"{what} (x, y) = {bad} lies outside {frame}")
