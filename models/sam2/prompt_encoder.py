"""SAM prompt encoder (`sam/prompt_encoder.py`): points, boxes and masks -> sparse and dense embeddings.

Points are (x, y) pixels in the model's input frame (image_size x image_size). Labels: 1 foreground, 0 background,
2 / 3 box corners, -1 padding. Dense embeddings are NHWC, [B, h, w, C] with h = w = image_size / 16.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import Buffer, gelu, layer_norm
from models.sam2.layers import Dtype, conv

_HIGHEST = jax.lax.Precision.HIGHEST


class PositionEmbeddingRandom(nnx.Module):
    """Random Fourier features of normalised (x, y) coordinates (a fixed Gaussian matrix from the checkpoint)."""

    def __init__(self, num_features: int, *, param_dtype: Dtype, rngs: nnx.Rngs):
        self.positional_encoding_gaussian_matrix = Buffer(
            jax.random.normal(rngs.params(), (2, num_features), param_dtype)
        )

    def encode(self, coords: jax.Array) -> jax.Array:
        """coords in [0, 1], [..., 2] (x, y) -> [..., 2 * num_features] (sin then cos)."""
        coords = 2.0 * coords.astype(jnp.float32) - 1.0
        matrix = self.positional_encoding_gaussian_matrix[...].astype(jnp.float32)
        coords = 2.0 * math.pi * jnp.matmul(coords, matrix, precision=_HIGHEST)
        return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)

    def dense(self, height: int, width: int) -> jax.Array:
        """Encoding of every cell centre of an (h, w) grid: [h, w, 2 * num_features]."""
        y = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height
        x = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width
        grid = jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None]), axis=-1)
        return self.encode(grid)

    def with_coords(self, coords: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
        """Encoding of pixel coordinates [..., 2] in an image of size (H, W)."""
        scale = jnp.asarray([image_hw[1], image_hw[0]], jnp.float32)
        return self.encode(coords.astype(jnp.float32) / scale)


class PromptEncoder(nnx.Module):
    """Embeds point/box prompts as sparse tokens and a mask prompt as a dense map."""

    def __init__(self, embed_dim: int = 256, image_embedding_size: tuple[int, int] = (64, 64),
                 input_image_size: tuple[int, int] = (1024, 1024), mask_in_chans: int = 16, *, dtype: Dtype = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.dtype = dtype
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2, param_dtype=param_dtype, rngs=rngs)

        def embedding():
            return nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, embed_dim), param_dtype))

        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nnx.List([embedding() for _ in range(4)])
        self.not_a_point_embed = embedding()
        self.no_mask_embed = embedding()
        # Sequential indices 0, 1, 3, 4, 6 as in the checkpoint (2 and 5 are the parameter-free GELUs).
        self.mask_downscaling = nnx.Dict({
            "0": conv(1, mask_in_chans // 4, 2, stride=2, **kw),
            "1": layer_norm(mask_in_chans // 4, eps=1e-6, **kw),
            "3": conv(mask_in_chans // 4, mask_in_chans, 2, stride=2, **kw),
            "4": layer_norm(mask_in_chans, eps=1e-6, **kw),
            "6": conv(mask_in_chans, embed_dim, 1, **kw),
        })

    def dense_pe(self) -> jax.Array:
        """Positional encoding of the image-embedding grid: [1, h, w, C]."""
        return self.pe_layer.dense(*self.image_embedding_size)[None]

    def embed_points(self, coords: jax.Array, labels: jax.Array, pad: bool) -> jax.Array:
        """coords [B, N, 2] pixels, labels [B, N] -> [B, N (+1 padding point), C]."""
        coords = coords.astype(jnp.float32) + 0.5  # centre of the pixel
        labels = labels.astype(jnp.int32)
        if pad:
            coords = jnp.concatenate([coords, jnp.zeros((coords.shape[0], 1, 2), jnp.float32)], axis=1)
            labels = jnp.concatenate([labels, -jnp.ones((labels.shape[0], 1), jnp.int32)], axis=1)
        embedding = self.pe_layer.with_coords(coords, self.input_image_size)
        labels = labels[..., None]
        embedding = jnp.where(labels == -1, self.not_a_point_embed[...].astype(jnp.float32), embedding)
        for label, point_embedding in enumerate(self.point_embeddings):
            embedding = jnp.where(labels == label, embedding + point_embedding[...].astype(jnp.float32), embedding)
        return embedding

    def embed_boxes(self, boxes: jax.Array) -> jax.Array:
        """boxes [B, 4] (x0, y0, x1, y1) pixels -> [B, 2, C]."""
        corners = boxes.astype(jnp.float32).reshape(-1, 2, 2) + 0.5
        embedding = self.pe_layer.with_coords(corners, self.input_image_size)
        corner_embeddings = jnp.concatenate([self.point_embeddings[2][...], self.point_embeddings[3][...]], axis=0)
        return embedding + corner_embeddings.astype(jnp.float32)

    def embed_masks(self, masks: jax.Array) -> jax.Array:
        """masks [B, 1, 4h, 4w] logits -> [B, h, w, C]."""
        layers = self.mask_downscaling
        x = jnp.transpose(masks, (0, 2, 3, 1))
        x = gelu(layers["1"](layers["0"](x)))
        x = gelu(layers["4"](layers["3"](x)))
        return layers["6"](x)

    def __call__(self, points: tuple[jax.Array, jax.Array] | None = None, boxes: jax.Array | None = None,
                 masks: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """-> (sparse [B, N, C], dense [B, h, w, C]). Points get a padding point when no box is given."""
        if points is not None:
            batch = points[0].shape[0]
        elif boxes is not None:
            batch = boxes.shape[0]
        elif masks is not None:
            batch = masks.shape[0]
        else:
            batch = 1
        sparse = [jnp.zeros((batch, 0, self.embed_dim), jnp.float32)]
        if points is not None:
            sparse.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        sparse = jnp.concatenate(sparse, axis=1)
        if masks is not None:
            dense = self.embed_masks(masks)
        else:
            height, width = self.image_embedding_size
            dense = jnp.broadcast_to(self.no_mask_embed[...].reshape(1, 1, 1, -1), (batch, height, width,
                                                                                     self.embed_dim))
        out_dtype = self.dtype or jnp.float32
        return sparse.astype(out_dtype), dense.astype(out_dtype)
