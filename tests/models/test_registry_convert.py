"""Registry behaviour with the vit / clip families: listing, unknown names, pretrained cfgs, missing files."""

from __future__ import annotations

import pytest

import zoo
from zoo.registry import CLIP_MEAN


def test_list_models_by_pattern():
    vit = zoo.list_models("vit_*")
    assert "vit_base_patch16_224" in vit and "vit_tiny_patch16_224" in vit
    assert vit == sorted(vit) and all(name.startswith("vit_") for name in vit)
    assert "clip_vit_b16" in zoo.list_models("clip_*")
    assert set(vit) <= set(zoo.list_models())


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="vit_base_patch16_224"):
        zoo.create_model("vit_base_patch16_22")
    with pytest.raises(KeyError, match="Unknown model"):
        zoo.pretrained_cfg("no_such_model_anywhere")


def test_pretrained_cfgs():
    vit = zoo.pretrained_cfg("vit_base_patch16_224")
    assert vit.input_size == (224, 224, 3) and vit.interpolation == "bicubic" and vit.crop_pct == 0.9
    assert vit.mean == (0.5, 0.5, 0.5) and vit.std == (0.5, 0.5, 0.5) and vit.num_classes == 1000
    assert "timm/vit_base_patch16_224" in vit.url
    clip = zoo.pretrained_cfg("clip_vit_l14_336")
    assert clip.input_size == (336, 336, 3) and clip.crop_pct == 1.0 and clip.mean == CLIP_MEAN
    assert clip.url.endswith("ViT-L-14-336px.pt")
    assert zoo.get_model_entry("clip_vit_b32").converter is not None


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "clip_vit_b32"])
def test_missing_pretrained_file_says_where_to_get_weights(tmp_path, name):
    with pytest.raises(FileNotFoundError) as info:
        zoo.create_model(name, pretrained=str(tmp_path / "nope.pth"))
    assert "nope.pth" in str(info.value) and zoo.pretrained_cfg(name).url in str(info.value)
