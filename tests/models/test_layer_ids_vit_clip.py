"""Layer ids for layer-wise LR decay (`layer_id` / `max_layer_id`) on ViT and CLIP: the BEiT / timm convention
(embeddings 0, block i -> i + 1, everything after the blocks max_layer_id = depth + 1), on tiny abstract models."""

from __future__ import annotations

import pytest
from flax import nnx

from models.clip import CLIP
from models.vit import VisionTransformer


def _ids(model: nnx.Module) -> dict[str, int]:
    """layer_id of every parameter path the model really has."""
    paths = (".".join(str(p) for p in path) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    return {path: model.layer_id(path) for path in paths}


def _tiny_vit(**overrides) -> VisionTransformer:
    options = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 3, "num_heads": 2, "num_classes": 5}
    return nnx.eval_shape(lambda: VisionTransformer(rngs=nnx.Rngs(0), **dict(options, **overrides)))


def _tiny_clip(vision_layers: int = 3, text_layers: int = 2) -> CLIP:
    return nnx.eval_shape(lambda: CLIP(
        embed_dim=16, img_size=32, patch_size=16, vision_width=32, vision_layers=vision_layers, vision_heads=2,
        context_length=8, vocab_size=50, text_width=32, text_layers=text_layers, text_heads=2, rngs=nnx.Rngs(0),
    ))


def test_vit_layer_ids():
    model = _tiny_vit()
    ids = _ids(model)
    assert model.max_layer_id() == 4
    expected = {
        "patch_embed.proj.kernel": 0, "patch_embed.proj.bias": 0, "cls_token": 0, "pos_embed": 0,
        "blocks.0.norm1.scale": 1, "blocks.0.attn.qkv.kernel": 1, "blocks.1.attn.proj.bias": 2,
        "blocks.2.mlp.fc1.kernel": 3, "blocks.2.mlp.fc2.bias": 3, "norm.scale": 4, "head.kernel": 4, "head.bias": 4,
    }
    assert {path: ids[path] for path in expected} == expected
    assert set(ids.values()) == set(range(model.max_layer_id() + 1))


def test_vit_layer_ids_avg_pool_and_layer_scale():
    model = _tiny_vit(class_token=False, global_pool="avg", init_values=0.1, depth=2)
    ids = _ids(model)
    assert model.max_layer_id() == 3
    assert ids["blocks.1.ls2.gamma"] == 2 and ids["fc_norm.scale"] == 3 and "cls_token" not in ids
    assert model.layer_id("reg_token") == 0  # timm's register tokens, should a variant add them


def test_clip_layer_ids_over_both_towers():
    model = _tiny_clip(vision_layers=3, text_layers=2)
    ids = _ids(model)
    assert model.max_layer_id() == 4
    expected = {
        "visual.patch_embed.proj.kernel": 0, "visual.class_embedding": 0, "visual.positional_embedding": 0,
        "visual.ln_pre.scale": 0, "visual.transformer.resblocks.0.attn.qkv.kernel": 1,
        "visual.transformer.resblocks.2.mlp.fc1.kernel": 3, "visual.ln_post.bias": 4, "visual.proj": 4,
        "text.token_embedding.embedding": 0, "text.positional_embedding": 0,
        "text.transformer.resblocks.1.attn.proj.kernel": 2, "text.ln_final.scale": 4, "text.text_projection": 4,
        "logit_scale": 4,
    }
    assert {path: ids[path] for path in expected} == expected
    assert set(ids.values()) == set(range(model.max_layer_id() + 1))


@pytest.mark.parametrize("vision_layers,text_layers", [(1, 3), (2, 2)])
def test_clip_max_layer_id_follows_the_deeper_tower(vision_layers, text_layers):
    model = _tiny_clip(vision_layers=vision_layers, text_layers=text_layers)
    top = max(vision_layers, text_layers) + 1
    assert model.max_layer_id() == top
    # The shallower tower's final norm and projection still come after every block.
    assert model.layer_id("visual.ln_post.scale") == model.layer_id("text.ln_final.scale") == top
    assert max(_ids(model).values()) == top


def test_vision_tower_layer_ids_on_their_own():
    tower = _tiny_clip(vision_layers=3).visual
    assert tower.max_layer_id() == 4
    assert tower.layer_id("patch_embed.proj.kernel") == tower.layer_id("ln_pre.bias") == 0
    assert tower.layer_id("transformer.resblocks.1.ln_2.scale") == 2
    assert tower.layer_id("proj") == tower.layer_id("ln_post.scale") == 4
