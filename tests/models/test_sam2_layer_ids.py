"""Layer ids for layer-wise LR decay on SAM2 (`layer_id` / `max_layer_id`), on the tiny model built abstractly.

The official training rule (`layer_decay_param_modifier` applied to `image_encoder.trunk`, Hiera's `get_layer_id`):
trunk patch / position embeddings 0, trunk block i -> i + 1, everything else num_blocks + 1.
"""

from __future__ import annotations

from flax import nnx

import zoo


def test_sam2_layer_ids():
    model = nnx.eval_shape(lambda: zoo.create_model("sam2.1_hiera_t", image_size=256))
    paths = [".".join(str(p) for p in path) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    ids = {path: model.layer_id(path) for path in paths}
    assert model.max_layer_id() == 13  # Hiera-T: 1 + 2 + 7 + 2 blocks
    expected = {
        "image_encoder.trunk.patch_embed.proj.kernel": 0,
        "image_encoder.trunk.pos_embed": 0,
        "image_encoder.trunk.pos_embed_window": 0,
        "image_encoder.trunk.blocks.0.norm1.scale": 1,
        "image_encoder.trunk.blocks.0.attn.qkv.kernel": 1,
        "image_encoder.trunk.blocks.3.attn.proj.bias": 4,
        "image_encoder.trunk.blocks.11.mlp.fc2.kernel": 12,
        "image_encoder.neck.convs.0.conv.kernel": 13,
        "sam_mask_decoder.transformer.layers.0.self_attn.q_proj.kernel": 13,
        "sam_prompt_encoder.no_mask_embed": 13,
        "memory_attention.layers.0.cross_attn_image.proj.kernel": 13,
        "memory_encoder.fuser.layers.0.mlp.fc1.kernel": 13,
        "maskmem_tpos_enc": 13,
        "obj_ptr_proj.layers.0.kernel": 13,
    }
    assert {path: ids[path] for path in expected} == expected
    assert set(ids.values()) == set(range(model.max_layer_id() + 1))
