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
B_PLUS_SIZE = 256  # base+ parity (slow tests): windows 14 / 7 pad the 16 / 8 stage grids
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


def _config(name: str) -> str:
    """The official hydra config of a zoo name: sam2_hiera_b+ -> configs/sam2/sam2_hiera_b+.yaml."""
    return f"configs/{name.split('_')[0]}/{name}.yaml"


def _reference(image_size: int, tmp_dir, version: str = "2", name: str | None = None, object_bias: float = 0.0):
    """object_bias is added to the object-score head's output bias: random weights otherwise tend to score "no object",
    which gates every tracked mask to the constant -1024 and leaves nothing of the memory path to compare."""
    torch = require("torch")
    require("sam2")
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    name = name or ("sam2_hiera_t" if version == "2" else "sam2.1_hiera_t")
    ref = build_sam2(_config(name), ckpt_path=None, device="cpu",
                     hydra_overrides_extra=[f"++model.image_size={image_size}"])
    with torch.no_grad():
        for tensor in ref.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.02 * torch.randn_like(tensor))
        ref.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(object_bias)
    ref.eval()
    path = tmp_dir / f"{name}_{image_size}.pt"
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


def _setup(name: str, image_size: int, tmp_dir, object_bias: float = 0.0) -> dict:
    ref, path = _reference(image_size, tmp_dir, name=name, object_bias=object_bias)
    model = zoo.create_model(name, pretrained=path, image_size=image_size)
    image = real_photo()  # 427 x 640, resized to image_size x image_size
    ref_predictor, predictor = _predictors(ref, model, image, image_size)
    return {"name": name, "size": image_size, "ref": ref, "path": path, "model": model, "image": image,
            "ref_predictor": ref_predictor, "predictor": predictor}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _setup("sam2_hiera_t", SMALL, tmp_path_factory.mktemp("sam2"))


@pytest.fixture(scope="module")
def small_tracking(tmp_path_factory):
    """tiny with the object-score bias raised, so tracked masks are not all gated to -1024 (see _reference)."""
    return _setup("sam2_hiera_t", SMALL, tmp_path_factory.mktemp("sam2_track"), object_bias=10.0)


@pytest.fixture(scope="module")
def base_plus(tmp_path_factory):
    """base+ (2 heads, 2-3-16-3 blocks, global blocks 12,16,20, 14x14 pos-embed) at a small image size."""
    return _setup("sam2_hiera_b+", B_PLUS_SIZE, tmp_path_factory.mktemp("sam2_b+"), object_bias=10.0)


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


@pytest.mark.slow
def test_base_plus_parity(base_plus):
    """base+ from an official-format checkpoint: Hiera stages, FPN features, point / box decoding with object scores."""
    torch = require("torch")
    from models.sam2.predictor import preprocess

    size, ref, model = base_plus["size"], base_plus["ref"], base_plus["model"]
    diffs = {}
    x = preprocess(base_plus["image"], size)[None]
    with torch.no_grad():
        expected = ref.image_encoder.trunk(torch.from_numpy(x).permute(0, 3, 1, 2))
    got = jax.jit(lambda m, v: m.image_encoder.trunk(v))(model, jnp.asarray(x))
    assert [o.shape for o in got] == [_nhwc(t).shape for t in expected]
    assert got[0].shape == (1, size // 4, size // 4, 112) and got[3].shape == (1, size // 32, size // 32, 896)
    for stage, (ours, theirs) in enumerate(zip(got, expected)):
        diffs[f"trunk stage {stage + 1}"] = _max_diff(ours, _nhwc(theirs))
    ours, theirs = base_plus["predictor"]._features, base_plus["ref_predictor"]._features
    diffs["fpn stride 16 (image_embed)"] = _max_diff(ours["image_embed"], _nhwc(theirs["image_embed"]))
    for level in range(2):
        diffs[f"fpn stride {4 * 2 ** level} (conv_s{level})"] = _max_diff(
            ours["high_res_feats"][level], _nhwc(theirs["high_res_feats"][level]))
    for key, value in diffs.items():
        assert value <= 1e-4, (key, diffs)

    scale = np.array([size / 640, size / 427], np.float32)
    box_corners = BOX["box"].reshape(2, 2).astype(np.float32)
    heads = {  # _forward_sam_heads inputs (a box is two corner points labelled 2 and 3, as in SAM2Base)
        "point": (POINT["point_coords"].astype(np.float32) * scale, POINT["point_labels"].astype(np.int32), True),
        "box": (box_corners * scale, np.array([2, 3], np.int32), False),
    }
    for (label, prompt), (coords, labels, multimask) in zip([("point", POINT), ("box", BOX)], heads.values()):
        with torch.no_grad():
            ref_masks, ref_iou, ref_low = base_plus["ref_predictor"].predict(return_logits=True, **prompt)
        masks, iou, low = base_plus["predictor"].predict(return_logits=True, **prompt)
        assert masks.shape == ref_masks.shape == (3 if multimask else 1, 427, 640)
        mask_diffs = {f"{label} masks": _max_diff(masks, ref_masks), f"{label} low-res": _max_diff(low, ref_low)}
        score_diffs = {f"{label} iou": _max_diff(iou, ref_iou)}
        with torch.no_grad():
            expected = ref._forward_sam_heads(
                theirs["image_embed"], high_res_features=theirs["high_res_feats"], multimask_output=multimask,
                point_inputs={"point_coords": torch.from_numpy(coords[None]), "point_labels": torch.from_numpy(labels[None])},
            )
        got = jax.jit(lambda m, f, c, lab, mm=multimask: m.forward_sam_heads(
            f["image_embed"], c, lab, high_res_features=f["high_res_feats"], multimask_output=mm
        ))(model, ours, jnp.asarray(coords[None]), jnp.asarray(labels[None]))
        score_diffs[f"{label} object score"] = _max_diff(got["object_score_logits"], expected[6].numpy())
        score_diffs[f"{label} heads iou"] = _max_diff(got["ious"], expected[2].numpy())
        score_diffs[f"{label} obj_ptr"] = _max_diff(got["obj_ptr"], expected[5].numpy())
        mask_diffs[f"{label} heads high-res"] = _max_diff(got["high_res_masks"], expected[4].numpy())
        diffs.update(mask_diffs, **score_diffs)
        for key, value in mask_diffs.items():
            assert value <= 1e-3, (key, diffs)
        for key, value in score_diffs.items():
            assert value <= 1e-4, (key, diffs)
    print("base+ max abs diffs:", {k: f"{v:.2e}" for k, v in diffs.items()})


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


def _official_video(setup, frames, tmp_path):
    """The official video predictor on `frames`, loaded from the same checkpoint, fed the same pixels as ours."""
    torch = require("torch")
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor

    from models.sam2.predictor import preprocess

    size = setup["size"]
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{index:05d}.jpg")
    ref = build_sam2_video_predictor(_config(setup["name"]), ckpt_path=None, device="cpu",
                                     hydra_overrides_extra=[f"++model.image_size={size}"])
    ref.load_state_dict(torch.load(setup["path"], weights_only=True)["model"])
    ref.eval()
    state = ref.init_state(str(tmp_path))
    # Same pixels on both sides: the official video loader resizes with PIL, the image predictor with torchvision.
    state["images"] = torch.stack([torch.from_numpy(preprocess(f, size)).permute(2, 0, 1) for f in frames])
    state["cached_features"] = {}
    return ref, state


def _check_video(name, got, expected):
    diffs = [_max_diff(got[index], expected[index]) for index in sorted(expected)]
    print(f"{name} video mask-logit max abs diffs per frame:", [f"{d:.2e}" for d in diffs])
    for index, diff in enumerate(diffs):
        assert diff <= 1e-3, (index, diffs)
    assert all(np.ptp(masks) > 0 for masks in expected.values()), "gated masks: nothing compared"


@pytest.mark.slow
@pytest.mark.parametrize("setup", ["small_tracking", "base_plus"], ids=["tiny-512", "base_plus-256"])
def test_video_tracking_parity(setup, request, tmp_path):
    """Streaming tracker vs the official SAM2VideoPredictor: a click on frame 0, then 2 tracked frames."""
    torch = require("torch")
    from models.sam2.video import SAM2VideoTracker

    setup = request.getfixturevalue(setup)
    frames = [np.roll(setup["image"], 12 * k, axis=1) for k in range(3)]  # a camera pan
    ref, state = _official_video(setup, frames, tmp_path)
    with torch.inference_mode():
        _, _, first = ref.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=POINT["point_coords"].tolist(),
                                                labels=POINT["point_labels"].tolist())
        expected = {index: masks[0].numpy() for index, _, masks in ref.propagate_in_video(state)}

    tracker = SAM2VideoTracker(setup["model"], num_frames=len(frames))
    got = {0: tracker.add_points(0, frames[0], points=POINT["point_coords"], labels=POINT["point_labels"])}
    assert got[0].shape == (1, 427, 640)
    assert _max_diff(got[0], first[0].numpy()) <= 1e-3
    for index in range(1, len(frames)):
        got[index] = tracker.track(index, frames[index])
    _check_video(setup["name"], got, expected)
    with pytest.raises(ValueError, match="frame of size"):
        tracker.track(3, frames[0][:100])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mask", "reverse"])
def test_video_mask_prompt_and_reverse_parity(small_tracking, mode, tmp_path):
    """A mask prompt (`add_new_mask`) on frame 0 then 2 tracked frames; a click on the last frame tracked backwards
    (`propagate_in_video(reverse=True)`)."""
    torch = require("torch")
    from models.sam2.video import SAM2VideoTracker

    setup = small_tracking
    frames = [np.roll(setup["image"], 12 * k, axis=1) for k in range(3)]
    ref, state = _official_video(setup, frames, tmp_path)
    tracker = SAM2VideoTracker(setup["model"], num_frames=len(frames))
    rows, cols = np.mgrid[:427, :640]
    mask = ((rows - 250) / 90.0) ** 2 + ((cols - 300) / 140.0) ** 2 <= 1.0  # an ellipse at video resolution
    with torch.inference_mode():
        if mode == "mask":
            ref.add_new_mask(state, frame_idx=0, obj_id=1, mask=mask)
            expected = {index: masks[0].numpy() for index, _, masks in ref.propagate_in_video(state)}
        else:
            ref.add_new_points_or_box(state, frame_idx=2, obj_id=1, points=POINT["point_coords"].tolist(),
                                      labels=POINT["point_labels"].tolist())
            expected = {index: masks[0].numpy()
                        for index, _, masks in ref.propagate_in_video(state, start_frame_idx=2, reverse=True)}
    if mode == "mask":
        got = {0: tracker.add_mask(0, frames[0], mask)}
        got.update({index: tracker.track(index, frames[index]) for index in (1, 2)})
    else:
        got = {2: tracker.add_points(2, frames[2], points=POINT["point_coords"], labels=POINT["point_labels"])}
        got.update({index: tracker.track(index, frames[index], reverse=True) for index in (1, 0)})
    _check_video(f"{setup['name']} {mode}", got, expected)
