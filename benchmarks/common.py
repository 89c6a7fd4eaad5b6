"""Runners shared by the benchmark scripts: one AdamW train step and one inference call of a classifier.

Each returns {"train": fn, "infer": fn}; each fn runs once and blocks until the result is ready.
"""

from __future__ import annotations

import numpy as np


def nnx_classifier_runners(model, optimizer, images: np.ndarray, labels: np.ndarray) -> dict:
    """`nnx.jit` train step (cross-entropy, `optimizer.update`) and eval-mode inference of an NNX classifier."""
    import jax.numpy as jnp
    import optax
    from flax import nnx

    x, y = jnp.asarray(images), jnp.asarray(labels)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def infer(model, x):
        return model(x, train=False)

    # cached_partial skips re-walking the object graph on every call (flax performance guide).
    train_step = nnx.cached_partial(train_step, model, optimizer)
    infer = nnx.cached_partial(infer, model)
    return {"train": lambda: train_step(x, y).block_until_ready(), "infer": lambda: infer(x).block_until_ready()}


def torch_classifier_runners(model, optimizer, images: np.ndarray, labels: np.ndarray) -> dict:
    """PyTorch eager train step (cross-entropy, backward, `optimizer.step`) and no-grad inference; NHWC inputs."""
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels).long()

    def run_train():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    def run_infer():
        model.eval()
        with torch.no_grad():
            model(x)

    return {"train": run_train, "infer": run_infer}
