"""Variable kinds beyond `nnx.Param`."""

from __future__ import annotations

from flax import nnx


class Buffer(nnx.Variable):
    """A non-trainable tensor that the official checkpoint stores (a torch buffer); not counted as a parameter."""
