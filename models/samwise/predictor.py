"""Streaming referring segmentation with SAMWISE: frames in (a video file, a camera, any iterator), masks out.

    from models.samwise.predictor import SAMWISEPredictor

    predictor = SAMWISEPredictor(model, tokenizer)            # a SAMWISE and its text tokenizer
    frames = zoo.data.iter_frames("vtest.avi")                 # or a camera generator, or a uint8 array
    for frame in predictor.segment(frames, ["the person walking to the left", "the rightmost person"]):
        frame.index, frame.masks                             # int, bool [E, H, W] (one mask per expression)

Frames are gathered into clips of `clip_length` (8, the official inference) and a clip's masks come out as soon as its
last frame has arrived; the last, shorter clip of a video runs at its own length. Between clips the model's state
carries the memory bank (the last 6 mask memories and 15 object pointers, fixed slots keyed by absolute frame index),
the last CME decision and the frame index, so device memory and the time per frame stay flat over any video length,
and every clip of a video runs through one compiled function.

Several expressions on one video are one batch: the video is decoded, resized and normalised once and every clip
runs once for all of them. (SAMWISE's adapters feed the text into the image encoder, so the visual features differ
per expression; what the expressions share is the decoding and the batched pass.)

Frames are resized as the official inference does (short side `image_size`, long side capped at it; bilinear),
ImageNet-normalised and zero-padded bottom / right; the mask logits are cropped and resized back to the frame's
own size (bilinear), and a pixel is foreground where its logit is > 0 (sigmoid > 0.5).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.sam2.layers import bilinear_matrix, resize_hw
from models.samwise.model import SAMWISE
from zoo.imaging import resize_and_pad_frames
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD


class FrameMasks(NamedTuple):
    """One frame's result: its index in the stream, bool masks [E, H, W] (one per expression, the frame's own size),
    float32 logits [E, H, W], and whether the CME switched the memory on this frame [E] (False without a CME)."""

    index: int
    masks: np.ndarray
    logits: np.ndarray
    cme_applied: np.ndarray


class SAMWISEPredictor:
    """Streams frames through a SAMWISE model (see the module docstring).

    Args:
      model: a `SAMWISE` (trained adapters, or loaded from an official checkpoint).
      tokenizer: the tokenizer of its text encoder (`models.text.roberta_tokenizer` for RoBERTa, `bert_tokenizer`
        for MiniLM); a `TextTokenizer` called as `tokenizer(texts, max_length=)`.
      clip_length: frames per clip (official inference: 8).
      max_text_length: token budget of an expression (special tokens included); longer ones are truncated.
    """

    def __init__(self, model: SAMWISE, tokenizer, *, clip_length: int = 8, max_text_length: int = 32):
        if not isinstance(model, SAMWISE):
            raise TypeError(f"SAMWISEPredictor needs a SAMWISE model; got {type(model).__name__}")
        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1; got {clip_length}")
        self.model, self.tokenizer = model, tokenizer
        self.clip_length, self.max_text_length = int(clip_length), int(max_text_length)
        self.image_size = model.config.image_size
        self._graphdef, self._params = nnx.split(model)
        self._step = jax.jit(self._step_fn, static_argnames=("frame_size", "resized"))

    # ------------------------------------------------------------------------------------------------ the jitted step
    def _step_fn(self, params, images, tokens, mask, state, *, frame_size, resized):
        """One clip for every expression: images [T, S, S, 3] normalised, padded; tokens / mask [E, L]. Returns the
        logits at the frames' own size [E, T, H, W], the CME decisions [E, T] and the next state."""
        model = nnx.merge(self._graphdef, params)
        count = tokens.shape[0]
        clips = jnp.broadcast_to(images[None], (count, *images.shape))
        outputs, state = model(clips, tokens, mask, train=False, state=state)
        height, width = resized
        logits = outputs["masks"][:, :, :height, :width]  # the model crops to the padded input: keep the frame part
        logits = resize_hw(logits, frame_size, bilinear_matrix, axes=(2, 3))
        applied = outputs.get("cme_applied", jnp.zeros(logits.shape[:2], bool))
        return logits, applied, state

    # ------------------------------------------------------------------------------------------------------- helpers
    def tokenize(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Expressions -> token ids and attention mask [E, L] (padded to the longest, truncated to the budget)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"segment() needs one or more non-empty expressions (strings); got {texts!r}")
        encoded = self.tokenizer(texts, max_length=self.max_text_length)
        return np.asarray(encoded.input_ids, np.int32), np.asarray(encoded.attention_mask, np.int32)

    def prepare(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 frames (H, W, 3) of one size -> normalised float32 [T, S, S, 3] zero-padded bottom / right, and the
        resized (h, w)."""
        padded, (height, width) = resize_and_pad_frames(np.stack(frames), self.image_size)
        images = padded.astype(np.float32) / np.float32(255.0)
        images = (images - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        images[:, height:] = 0.0  # zero padding after normalisation, as the model's own padding
        images[:, :, width:] = 0.0
        return images, (height, width)

    @staticmethod
    def _check_frame(frame: Any, index: int, size: tuple[int, int] | None) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {index}: expected uint8 RGB (H, W, 3); got {frame.dtype} {frame.shape}")
        if size is not None and frame.shape[:2] != size:
            raise ValueError(f"frame {index} is {frame.shape[0]}x{frame.shape[1]} but the video's first frame was "
                             f"{size[0]}x{size[1]}: every frame of a stream must have one size (start a new segment())")
        return frame

    @staticmethod
    def _frames(source: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        if isinstance(source, (str, os.PathLike)):
            raise TypeError(f"segment() takes frames, not a path ({source!r}): pass zoo.data.iter_frames(path), which "
                            "decodes the video frame by frame")
        try:
            return iter(source)
        except TypeError as err:
            raise TypeError(f"frames must be a uint8 array [N, H, W, 3] or an iterable of uint8 frames (H, W, 3); "
                            f"got {type(source).__name__}") from err

    # ----------------------------------------------------------------------------------------------------- streaming
    def segment(self, frames: Iterable[np.ndarray], texts: str | Sequence[str]) -> Iterator[FrameMasks]:
        """Segment what each expression refers to in a stream of frames; yields one `FrameMasks` per frame, clip by
        clip, as the clips complete.

        frames: any iterable of uint8 RGB frames (H, W, 3) of one size: a video file through
        `zoo.data.iter_frames(path)` (decoded frame by frame), a generator reading a camera, a uint8 array
        [N, H, W, 3]. texts: one expression or several.
        """
        tokens, mask = self.tokenize(texts)  # bad expressions or frames fail here, before the first frame is asked for
        return self._stream(self._frames(frames), jnp.asarray(tokens), jnp.asarray(mask))

    def _stream(self, frames: Iterator[np.ndarray], tokens: jax.Array, mask: jax.Array) -> Iterator[FrameMasks]:
        state = self.model.initial_state(tokens.shape[0])
        size: tuple[int, int] | None = None
        pending: list[np.ndarray] = []
        first_index = 0
        for index, frame in enumerate(frames):
            frame = self._check_frame(frame, index, size)
            size = frame.shape[:2] if size is None else size
            pending.append(frame)
            if len(pending) == self.clip_length:
                results, state = self._run(pending, tokens, mask, state, first_index, size)
                yield from results
                first_index, pending = first_index + len(pending), []
        if size is None:
            raise ValueError("segment() got no frames: the video or iterator was empty")
        if pending:
            results, state = self._run(pending, tokens, mask, state, first_index, size)
            yield from results

    def _run(self, frames, tokens, mask, state, first_index, size):
        images, resized = self.prepare(frames)
        logits, applied, state = self._step(self._params, jnp.asarray(images), tokens, mask, state,
                                            frame_size=tuple(size), resized=resized)
        logits, applied = np.asarray(logits), np.asarray(applied)
        results = [FrameMasks(first_index + t, logits[:, t] > 0, logits[:, t], applied[:, t])
                   for t in range(len(frames))]
        return results, state

    def segment_video(self, frames: Iterable[np.ndarray], texts: str | Sequence[str]) -> np.ndarray:
        """All of `segment` at once: bool masks [E, N, H, W]."""
        return np.stack([result.masks for result in self.segment(frames, texts)], axis=1)

    def state_nbytes(self, state: dict[str, Any]) -> int:
        """Bytes of a carried state (memory bank, pointers, bookkeeping): constant over a video."""
        return sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(state))
