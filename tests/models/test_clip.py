"""CLIP: parity with open_clip on random weights (full-width towers, reduced depth), tokenizer, zero-shot, counts."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

import zoo
from tests.helpers import real_photo, require
from zoo.registry import CLIP_MEAN, CLIP_STD

# open_clip 3.3.0: sum(p.numel() for p in open_clip.create_model(name, pretrained=None).parameters()).
OPEN_CLIP_PARAM_COUNTS = {
    "clip_vit_b32": 151_277_313,
    "clip_vit_b16": 149_620_737,
    "clip_vit_l14": 427_616_513,
    "clip_vit_l14_336": 427_944_193,
}
TOLERANCE = 1e-4
LAYERS = 2
PROMPTS = [
    "a photo of a cat.",
    "A DIAGRAM of the   Chinese temple &amp; its garden!",
    "it's 42 degrees, isn't it? café naïve",
    "word " * 100,  # longer than the context: truncated, end-of-text kept last
]


def _photos(size: int = 224) -> np.ndarray:
    images = np.stack([real_photo("china", size), real_photo("flower", size)]).astype(np.float32) / 255.0
    return (images - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """open_clip ViT-B/32 (QuickGELU) at full width with 2 layers per tower, its outputs, and its saved state dict."""
    torch = require("torch")
    open_clip = require("open_clip")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=512,
        vision_cfg=dict(image_size=224, patch_size=32, width=768, layers=LAYERS),  # noqa: C408
        text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=LAYERS),  # noqa: C408
        quick_gelu=True,
    ).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)  # not the init value, so the scale is really loaded
    tokens = open_clip.get_tokenizer("ViT-B-32")(PROMPTS)
    images = _photos()
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        image_embeddings = model.encode_image(x)
        text_embeddings = model.encode_text(tokens)
        image_features, text_features, scale = model(x, tokens)[:3]
        logits = (scale * image_features @ text_features.T).numpy()
    directory = tmp_path_factory.mktemp("clip")
    torch.save(model.state_dict(), directory / "clip.pth")
    return {
        "model": model, "tokens": tokens.numpy(), "images": images, "image": image_embeddings.numpy(),
        "text": text_embeddings.numpy(), "logits": logits, "path": str(directory / "clip.pth"),
    }


@jax.jit
def _outputs(model, images, tokens):
    return model.encode_image(images), model.encode_text(tokens), model(images, tokens), model.forward_features(images)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_parity_with_open_clip(reference, tmp_path, fmt):
    path = reference["path"]
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = str(tmp_path / "clip.safetensors")
        save_file({k: v.contiguous() for k, v in reference["model"].state_dict().items()}, path)
    model = zoo.create_model("clip_vit_b32", pretrained=path, vision_layers=LAYERS, text_layers=LAYERS)
    image, text, logits, tokens = _outputs(model, reference["images"], reference["tokens"].astype(np.int32))
    assert image.shape == (2, 512) and text.shape == (len(PROMPTS), 512) and logits.shape == (2, len(PROMPTS))
    assert np.abs(np.asarray(image) - reference["image"]).max() <= TOLERANCE
    assert np.abs(np.asarray(text) - reference["text"]).max() <= TOLERANCE
    assert np.abs(np.asarray(logits) - reference["logits"]).max() <= TOLERANCE
    assert tokens.shape == (2, 50, 768)
    np.testing.assert_allclose(tokens[:, 0] @ model.visual.proj[...], image, atol=1e-5)


def test_hidden_states_follow_hugging_face_convention(reference):
    model = zoo.create_model("clip_vit_b32", pretrained=reference["path"], vision_layers=LAYERS, text_layers=LAYERS)
    abstract = jax.eval_shape(lambda x: model.forward_features(x, return_hidden_states=True), reference["images"])
    tokens, hidden = abstract
    assert len(hidden) == LAYERS + 1  # ln_pre output, then each block
    assert all(h.shape == tokens.shape == (2, 50, 768) for h in hidden)


def test_tokenizer_matches_open_clip(reference):
    from models.clip import ClipTokenizer

    ours = ClipTokenizer()(PROMPTS)
    assert ours.dtype == np.int32 and ours.shape == (len(PROMPTS), 77)
    np.testing.assert_array_equal(ours, reference["tokens"])
    assert ours[-1, -1] == 49407
    tokenizer = ClipTokenizer()
    assert tokenizer.decode(tokenizer.encode("a photo of a cat.")).strip() == "a photo of a cat ."


def test_tokenizer_without_vocab_is_a_clear_error(tmp_path):
    from models.clip import ClipTokenizer

    with pytest.raises(FileNotFoundError):
        ClipTokenizer(tmp_path / "missing.txt.gz")


def test_zero_shot_on_real_photos(reference):
    from models.clip import ClipTokenizer, zero_shot_classifier, zero_shot_predict

    model = zoo.create_model("clip_vit_b32", pretrained=reference["path"], vision_layers=LAYERS, text_layers=LAYERS)
    classnames = ["temple", "flower", "dog"]
    classifier = zero_shot_classifier(model, ClipTokenizer(), classnames, ["a photo of a {}.", "a picture of a {}."])
    assert classifier.shape == (512, len(classnames))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(classifier), axis=0), 1.0, rtol=1e-5)
    probs = np.asarray(jax.jit(zero_shot_predict)(model, classifier, reference["images"]))
    assert probs.shape == (2, len(classnames))
    assert np.all(probs >= 0) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_wrong_inputs_are_clear_errors():
    model = nnx.eval_shape(lambda: zoo.create_model("clip_vit_b32", vision_layers=1, text_layers=1))
    with pytest.raises(ValueError, match="NCHW"):
        model.encode_image(np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(ValueError, match="integer token ids"):
        model.encode_text(np.zeros((1, 77), np.float32))


@pytest.mark.parametrize("name", sorted(OPEN_CLIP_PARAM_COUNTS))
def test_param_counts_match_open_clip(name):
    abstract = nnx.eval_shape(lambda: zoo.create_model(name))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert count == OPEN_CLIP_PARAM_COUNTS[name]
    assert set(zoo.list_models("clip_*")) == set(OPEN_CLIP_PARAM_COUNTS)


def test_teacher_at_another_resolution_resamples_positions(reference):
    """img_size=256 from a 224 checkpoint: the positional embedding is resampled like open_clip's resize_pos_embed."""
    torch = require("torch")

    model = zoo.create_model(
        "clip_vit_b32", pretrained=reference["path"], vision_layers=LAYERS, text_layers=LAYERS, img_size=256
    )
    original = reference["model"].visual.positional_embedding.detach()
    grid = original[1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    expected = torch.cat([original[:1], resized.permute(0, 2, 3, 1).reshape(64, -1)]).numpy()
    np.testing.assert_allclose(np.asarray(model.visual.positional_embedding[...]), expected, atol=1e-5)
