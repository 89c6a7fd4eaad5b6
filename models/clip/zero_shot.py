"""Zero-shot classification with CLIP: class embeddings from text prompts, then cosine similarity with images."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# A short subset of OpenAI's 80 ImageNet prompt templates.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "itap of a {}.",
    "art of the {}.",
)


def zero_shot_classifier(
    model,
    tokenizer: Callable[[Sequence[str]], np.ndarray],
    classnames: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 256,
) -> jax.Array:
    """[embed_dim, num_classes] class weights: per class, the renormalised mean of its L2-normalised prompt embeddings.

    `templates` are format strings with one `{}` (e.g. "a photo of a {}.").
    """
    encode = jax.jit(lambda m, tokens: m.encode_text(tokens, normalize=True))
    prompts = [template.format(name) for name in classnames for template in templates]
    tokens = tokenizer(prompts)
    chunks = [encode(model, jnp.asarray(tokens[i : i + batch_size])) for i in range(0, len(prompts), batch_size)]
    embeddings = jnp.concatenate(chunks).astype(jnp.float32).reshape(len(classnames), len(templates), -1)
    mean = embeddings.mean(axis=1)
    mean = mean / jnp.linalg.norm(mean, axis=-1, keepdims=True)
    return mean.T


def zero_shot_predict(model, classifier: jax.Array, images: jax.Array) -> jax.Array:
    """Class probabilities [batch, num_classes]: softmax(exp(logit_scale) * cos(image, class)).

    `images` are NHWC floats normalised with CLIP's mean / std (`zoo.pretrained_cfg(name)`).
    """
    features = model.encode_image(images, normalize=True).astype(jnp.float32)
    logits = jnp.exp(model.logit_scale[...].astype(jnp.float32)) * features @ classifier
    return jax.nn.softmax(logits, axis=-1)
