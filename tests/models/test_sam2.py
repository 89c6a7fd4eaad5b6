"""SAM2: parameter counts, conversion errors, and parity with the official PyPI `sam2` on random weights (f32).

The reference is the tiny model built by `sam2.build_sam.build_sam2` with every tensor perturbed (so LayerNorm
scales, biases and the zero-initialised position embeddings are exercised), saved as an official `{"model": sd}`
file and loaded through `zoo.create_model(..., pretrained=file)`. Fast tests run at image_size 512 on both sides
(the window / pos-embed logic holds: every stride divides); the slow test runs the full 1024 pipeline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zoo
from tests.helpers import real_photo, require
from zoo.convert import ConversionError

PARAM_COUNTS = {
    "sam2_hiera_t": 38_945_986,
    "sam2_hiera_s": 46_043_842,
    "sam2_hiera_b+": 80_833_666,
    "sam2_hiera_l": 224_430_130,
    "sam2.1_hiera_t": 38_962_498,
    "sam2.1_hiera_s": 46_060_354,
    "sam2.1_hiera_b+": 80_850_178,
    "sam2.1_hiera_l": 224_446_642,
}
# Spec 2.1: B+ parameters by module, counted on the official model.
B_PLUS_MODULES = {
    "image_encoder.trunk": 68_675_712,
    "image_encoder.neck": 431_104,
    "memory_attention": 5_922_304,
    "memory_encoder": 1_384_608,
    "sam_mask_decoder": 4_215_109,
    "sam_prompt_encoder": 6_220,
    "obj_ptr_proj": 197_376,
}
SMALL = 512
POINT = {"point_coords": np.array([[320, 200]]), "point_labels": np.array([1])}
BOX = {"box": np.array([100, 80, 400, 300]), "multimask_output": False}


def _count(module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def test_registered_names():
    assert set(zoo.list_models("sam2*")) == set(PARAM_COUNTS)
    cfg = zoo.pretrained_cfg("sam2.1_hiera_b+")
    assert cfg.input_size == (1024, 1024, 3) and cfg.num_classes == 0
    assert cfg.url.endswith("sam2.1_hiera_base_plus.pt")


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_param_counts(name):
    model = nnx.eval_shape(lambda: zoo.create_model(name))
    assert _count(model) == PARAM_COUNTS[name]
    if name == "sam2_hiera_b+":
        for path, expected in B_PLUS_MODULES.items():
            module = model
            for part in path.split("."):
                module = getattr(module, part)
            assert _count(module) == expected, path


# ----------------------------------------------------------------------------------------------------------------------
# Reference fixtures
# ----------------------------------------------------------------------------------------------------------------------


def _reference(image_size: int, tmp_dir, version: str = "2"):
    torch = require("torch")
    require("sam2")
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    config = "configs/sam2/sam2_hiera_t.yaml" if version == "2" else "configs/sam2.1/sam2.1_hiera_t.yaml"
    ref = build_sam2(config, ckpt_path=None, device="cpu", hydra_overrides_extra=[f"++model.image_size={image_size}"])
    with torch.no_grad():
        for tensor in ref.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.02 * torch.randn_like(tensor))
    ref.eval()
    path = tmp_dir / f"sam{version}_hiera_tiny_{image_size}.pt"
    torch.save({"model": ref.state_dict()}, path)
    return ref, path


def _predictors(ref, model, image, image_size):
    from sam2.sam2_image_predictor import SAM2ImagePredictor as RefPredictor

    from models.sam2.predictor import SAM2ImagePredictor

    ref_predictor = RefPredictor(ref)
    side = image_size // 4  # the official predictor hard-codes the 1024 feature sizes
    ref_predictor._bb_feat_sizes = [(side, side), (side // 2, side // 2), (side // 4, side // 4)]
    ref_predictor.set_image(image)
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(image)
    return ref_predictor, predictor


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    ref, path = _reference(SMALL, tmp_path_factory.mktemp("sam2"))
    model = zoo.create_model("sam2_hiera_t", pretrained=path, image_size=SMALL)
    image = real_photo()  # 427 x 640, upsampled to 512 x 512
    ref_predictor, predictor = _predictors(ref, model, image, SMALL)
    return {"ref": ref, "path": path, "model": model, "image": image, "ref_predictor": ref_predictor, "predictor": predictor}


def _nhwc(tensor) -> np.ndarray:
    return tensor.detach().permute(0, 2, 3, 1).numpy()


def _max_diff(ours, theirs) -> float:
    return float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))))


# ----------------------------------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------------------------------


def test_trunk_parity(small):
    torch = require("torch")
    from models.sam2.predictor import preprocess

    x = preprocess(small["image"], SMALL)[None]
    with torch.no_grad():
        expected = small["ref"].image_encoder.trunk(torch.from_numpy(x).permute(0, 3, 1, 2))
    got = jax.jit(lambda m, v: m.image_encoder.trunk(v))(small["model"], jnp.asarray(x))
    assert len(got) == 4
    for ours, theirs in zip(got, expected):
        assert ours.shape == _nhwc(theirs).shape
        assert _max_diff(ours, _nhwc(theirs)) <= 1e-4


def test_preprocess_and_fpn_parity(small):
    """The cached predictor features: resize + normalise, FPN, conv_s0/conv_s1, no_mem_embed."""
    ours, theirs = small["predictor"]._features, small["ref_predictor"]._features
    assert _max_diff(ours["image_embed"], _nhwc(theirs["image_embed"])) <= 1e-4
    for level in range(2):
        assert _max_diff(ours["high_res_feats"][level], _nhwc(theirs["high_res_feats"][level])) <= 1e-4


def test_fpn_position_encoding_parity(small):
    torch = require("torch")
    from models.sam2.neck import sine_position_encoding

    for side in (SMALL // 4, SMALL // 16):
        with torch.no_grad():
            expected = small["ref"].image_encoder.neck.position_encoding(torch.zeros(1, 256, side, side))
        assert _max_diff(sine_position_encoding(side, side, 256)[None], _nhwc(expected)) <= 1e-5


@pytest.mark.parametrize("prompt", [POINT, BOX], ids=["point-multimask", "box-single"])
def test_predictor_parity(small, prompt):
    torch = require("torch")
    with torch.no_grad():
        ref_masks, ref_iou, ref_low = small["ref_predictor"].predict(return_logits=True, **prompt)
    masks, iou, low = small["predictor"].predict(return_logits=True, **prompt)
    assert masks.shape == ref_masks.shape == (3 if prompt.get("multimask_output", True) else 1, 427, 640)
    assert _max_diff(masks, ref_masks) <= 1e-3
    assert _max_diff(low, ref_low) <= 1e-3
    assert _max_diff(iou, ref_iou) <= 1e-4
    binary, _, _ = small["predictor"].predict(**prompt)
    assert binary.dtype == bool and np.mean(binary == (ref_masks > 0)) > 0.9999


def test_sam_heads_parity(small):
    """Tracking heads: object score, NO_OBJ_SCORE gating, best mask, object pointer (`_forward_sam_heads`)."""
    torch = require("torch")
    ref, model = small["ref"], small["model"]
    theirs_features = small["ref_predictor"]._features
    ours_features = small["predictor"]._features
    coords = POINT["point_coords"][None].astype(np.float32) / np.array([640, 427]) * SMALL
    labels = POINT["point_labels"][None].astype(np.int32)
    with torch.no_grad():
        expected = ref._forward_sam_heads(
            theirs_features["image_embed"],
            point_inputs={"point_coords": torch.from_numpy(coords).float(), "point_labels": torch.from_numpy(labels)},
            high_res_features=theirs_features["high_res_feats"], multimask_output=True,
        )
    got = jax.jit(lambda m, f, c, lab: m.forward_sam_heads(
        f["image_embed"], c, lab, high_res_features=f["high_res_feats"], multimask_output=True
    ))(model, ours_features, jnp.asarray(coords), jnp.asarray(labels))
    names = ["low_res_multimasks", "high_res_multimasks", "ious", "low_res_masks", "high_res_masks", "obj_ptr",
             "object_score_logits"]
    for name, theirs in zip(names, expected):
        tolerance = 1e-3 if "masks" in name else 1e-4
        assert got[name].shape == tuple(theirs.shape), name
        assert _max_diff(got[name], theirs.numpy()) <= tolerance, name


def test_mask_input_parity(small):
    """A previous low-res mask as the prompt (exercises the prompt encoder's mask downscaling)."""
    torch = require("torch")
    _, _, low = small["predictor"].predict(**POINT)
    prompt = dict(POINT, mask_input=low[:1], multimask_output=False)
    with torch.no_grad():
        ref_masks, ref_iou, _ = small["ref_predictor"].predict(return_logits=True, **prompt)
    masks, iou, _ = small["predictor"].predict(return_logits=True, **prompt)
    assert _max_diff(masks, ref_masks) <= 1e-3 and _max_diff(iou, ref_iou) <= 1e-4


# ----------------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------------


def test_predictor_errors(small):
    predictor = small["predictor"]
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\).*\(1, 427, 640, 3\)"):
        predictor.set_image(small["image"][None])
    with pytest.raises(ValueError, match="shape"):
        predictor.set_image(small["image"][..., 0])
    with pytest.raises(ValueError, match=r"point \(x, y\) = \[700.0, 10.0\] lies outside the 640x427 image"):
        predictor.predict(point_coords=np.array([[700, 10]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="box corner .* outside"):
        predictor.predict(box=np.array([10, 10, 50, 500]))
    with pytest.raises(ValueError, match="point_labels must be given"):
        predictor.predict(point_coords=np.array([[10, 10]]))
    with pytest.raises(ValueError, match="needs a prompt"):
        predictor.predict()
    from models.sam2.predictor import SAM2ImagePredictor

    with pytest.raises(RuntimeError, match="set_image"):
        SAM2ImagePredictor(small["model"]).predict(**POINT)


def test_bfloat16_forward(small):
    """bf16 compute, f32 params, a batch of 2 at a tiny image size: runs, finite, outputs in f32.

    Loaded from the checkpoint (eager random init of a whole SAM2 compiles one XLA program per parameter shape).
    """
    model = zoo.create_model("sam2_hiera_t", pretrained=small["path"], image_size=128, dtype=jnp.bfloat16)
    images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 128, 128, 3), np.float32))
    out = jax.jit(lambda m, x: m(x, point_coords=jnp.asarray([[[100.0, 50.0]], [[20.0, 30.0]]]),
                                 point_labels=jnp.ones((2, 1), jnp.int32)))(model, images)
    assert out["low_res_masks"].shape == (2, 3, 32, 32) and out["iou_scores"].shape == (2, 3)
    assert all(v.dtype == jnp.float32 and bool(jnp.isfinite(v).all()) for v in out.values())
    assert model.image_encoder.trunk.blocks[0].attn.qkv.kernel.dtype == jnp.float32


def test_checkpoint_version_errors(small, tmp_path):
    torch = require("torch")
    state = torch.load(small["path"], weights_only=True)["model"]
    v21 = dict(state, no_obj_embed_spatial=torch.zeros(1, 64), **{
        "obj_ptr_tpos_proj.weight": torch.zeros(64, 256), "obj_ptr_tpos_proj.bias": torch.zeros(64)})
    torch.save({"model": v21}, tmp_path / "v21.pt")
    with pytest.raises(ConversionError, match=r"SAM 2.1 checkpoint.*sam2_hiera_t is a SAM 2.0 model.*sam2.1_hiera_t"):
        zoo.create_model("sam2_hiera_t", pretrained=tmp_path / "v21.pt")
    with pytest.raises(ConversionError, match=r"SAM 2.0 checkpoint.*sam2.1_hiera_t is a SAM 2.1 model"):
        zoo.create_model("sam2.1_hiera_t", pretrained=small["path"])
    with pytest.raises(ConversionError, match=r"width 96 and 12 blocks \(it looks like hiera_t\)"):
        zoo.create_model("sam2_hiera_s", pretrained=small["path"])
    # A 2.1 checkpoint loads into the 2.1 model.
    model = zoo.create_model("sam2.1_hiera_t", pretrained=tmp_path / "v21.pt", image_size=SMALL)
    assert model.obj_ptr_tpos_proj.kernel.shape == (256, 64)


# ----------------------------------------------------------------------------------------------------------------------
# Full resolution
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_resolution_parity(tmp_path):
    """1024 x 1024, the official setting: cached features and a point prompt."""
    torch = require("torch")
    ref, path = _reference(1024, tmp_path)
    model = zoo.create_model("sam2_hiera_t", pretrained=path)
    ref_predictor, predictor = _predictors(ref, model, real_photo(), 1024)
    ours, theirs = predictor._features, ref_predictor._features
    assert ours["image_embed"].shape == (1, 64, 64, 256)
    assert _max_diff(ours["image_embed"], _nhwc(theirs["image_embed"])) <= 1e-4
    for level in range(2):
        assert _max_diff(ours["high_res_feats"][level], _nhwc(theirs["high_res_feats"][level])) <= 1e-4
    with torch.no_grad():
        ref_masks, ref_iou, ref_low = ref_predictor.predict(return_logits=True, **POINT)
    masks, iou, low = predictor.predict(return_logits=True, **POINT)
    assert low.shape == (3, 256, 256)
    assert _max_diff(masks, ref_masks) <= 1e-3 and _max_diff(low, ref_low) <= 1e-3
    assert _max_diff(iou, ref_iou) <= 1e-4


# ----------------------------------------------------------------------------------------------------------------------
# Memory modules (forward parity on random inputs; the streaming video predictor is not ported yet)
# ----------------------------------------------------------------------------------------------------------------------


def test_memory_attention_parity(small):
    torch = require("torch")
    side, frames, pointer_tokens = SMALL // 16, 2, 8
    rng = np.random.default_rng(1)
    curr = rng.standard_normal((1, side * side, 256), np.float32)
    curr_pos = rng.standard_normal((1, side * side, 256), np.float32)
    memory = rng.standard_normal((1, frames * side * side + pointer_tokens, 64), np.float32)
    memory_pos = rng.standard_normal(memory.shape, np.float32)
    with torch.no_grad():
        seq_first = [torch.from_numpy(a).transpose(0, 1) for a in (curr, memory, curr_pos, memory_pos)]
        expected = small["ref"].memory_attention(
            curr=seq_first[0], memory=seq_first[1], curr_pos=seq_first[2], memory_pos=seq_first[3],
            num_obj_ptr_tokens=pointer_tokens,
        ).transpose(0, 1).numpy()
    got = jax.jit(lambda m, *a: m.memory_attention(*a, num_obj_ptr_tokens=pointer_tokens))(
        small["model"], curr, memory, curr_pos, memory_pos
    )
    assert _max_diff(got, expected) <= 1e-4


def test_memory_encoder_parity(small):
    torch = require("torch")
    rng = np.random.default_rng(2)
    side = SMALL // 16
    pix_feat = rng.standard_normal((1, side, side, 256), np.float32)
    masks = 4 * rng.standard_normal((1, SMALL, SMALL, 1), np.float32)
    with torch.no_grad():
        expected = small["ref"].memory_encoder(
            torch.from_numpy(pix_feat).permute(0, 3, 1, 2), torch.from_numpy(masks).permute(0, 3, 1, 2)
        )
    features, pos = jax.jit(lambda m, f, k: m.memory_encoder(f, k))(small["model"], pix_feat, masks)
    assert _max_diff(features, _nhwc(expected["vision_features"])) <= 1e-4
    assert _max_diff(pos, _nhwc(expected["vision_pos_enc"][0])) <= 1e-5


@pytest.mark.slow
def test_video_tracking_parity(small, tmp_path):
    """Streaming tracker vs the official SAM2VideoPredictor: a click on frame 0, then 2 tracked frames (512)."""
    torch = require("torch")
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor

    from models.sam2.predictor import preprocess
    from models.sam2.video import SAM2VideoTracker

    frames = [np.roll(small["image"], 12 * k, axis=1) for k in range(3)]  # a camera pan
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{index:05d}.jpg")
    ref = build_sam2_video_predictor("configs/sam2/sam2_hiera_t.yaml", ckpt_path=None, device="cpu",
                                     hydra_overrides_extra=[f"++model.image_size={SMALL}"])
    ref.load_state_dict(torch.load(small["path"], weights_only=True)["model"])
    ref.eval()
    state = ref.init_state(str(tmp_path))
    # Same pixels on both sides: the official video loader resizes with PIL, the image predictor with torchvision.
    state["images"] = torch.stack([torch.from_numpy(preprocess(f, SMALL)).permute(2, 0, 1) for f in frames])
    state["cached_features"] = {}
    with torch.inference_mode():
        _, _, first = ref.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=POINT["point_coords"].tolist(), labels=POINT["point_labels"].tolist())
        expected = {index: masks[0].numpy() for index, _, masks in ref.propagate_in_video(state)}

    tracker = SAM2VideoTracker(small["model"], num_frames=len(frames))
    got = tracker.add_points(0, frames[0], points=POINT["point_coords"], labels=POINT["point_labels"])
    assert got.shape == (1, 427, 640)
    assert _max_diff(got, first[0].numpy()) <= 1e-3
    for index in range(1, len(frames)):
        assert _max_diff(tracker.track(index, frames[index]), expected[index]) <= 1e-3, index
    with pytest.raises(ValueError, match="frame of size"):
        tracker.track(3, frames[0][:100])
