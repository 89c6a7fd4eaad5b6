"""SAM2 streaming video predictor: fixed-size memory bank (flat memory, one compilation), several objects, prompts on
any frame. Tiny model at image_size 256 with random weights (the official-parity test is in test_sam2.py)."""

from __future__ import annotations

import gc

import jax
import numpy as np
import pytest
from flax import nnx

import zoo
from models.sam2.predictor import preprocess, to_device
from models.sam2.video import SAM2VideoPredictor, SAM2VideoTracker
from tests.helpers import real_photo

SIZE = 256


@pytest.fixture(scope="module")
def model():
    model = zoo.create_model("sam2.1_hiera_t", image_size=SIZE, rngs=nnx.Rngs(0))
    # Random weights score "no object", which gates every mask to -1024 and would make the comparisons below empty:
    # raise the object-score head's output bias so tracked masks carry real values.
    last = model.sam_mask_decoder.pred_obj_score_head.layers[-1]
    last.bias.set_value(last.bias.get_value() + 10.0)
    return model


@pytest.fixture(scope="module")
def frames():
    photo = real_photo()[::4, ::4].copy()  # 107 x 160
    return [np.roll(photo, 2 * k, axis=1) for k in range(12)]  # a slow camera pan


def _live_bytes() -> int:
    gc.collect()
    return sum(int(x.nbytes) for x in jax.live_arrays())


def test_memory_stays_flat_and_compiles_once(model, frames):
    predictor = SAM2VideoPredictor(model)
    predictor.add_points(0, frames[0], obj_id="a", points=[[80, 50]], labels=[1])
    predictor.add_points(0, frames[0], obj_id="b", box=[10, 10, 60, 90])
    sizes, compiled = {}, {}
    for index in range(1, 101):
        logits = predictor.track(index, frames[index % len(frames)])
        assert logits.shape == (2, *frames[0].shape[:2])
        if index in (10, 100):
            jax.block_until_ready(predictor.bank)
            sizes[index] = (predictor.state_nbytes(), _live_bytes())
            compiled[index] = predictor._track_step._cache_size()
    assert np.isfinite(logits).all()
    assert sizes[10] == sizes[100], sizes
    # One compilation per memory-frame bucket while the ring fills (1 prompted frame + 0..6 tracked ones: buckets
    # 1, 2, 4, 7), none once it is full (frame 7 on).
    assert predictor.frame_buckets() == (1, 2, 4, 7, 8, 9)
    assert compiled[10] == compiled[100] == 4, compiled
    assert predictor._features._cache_size() == 1


def test_compacted_memory_matches_every_slot(model, frames):
    """Attending over the bucketed, compacted memory frames gives the masked attention over every slot, with two
    prompted frames, a partly filled ring and reverse tracking (frames in another order inside the bank)."""
    predictor = SAM2VideoPredictor(model)
    predictor.add_points(0, frames[0], obj_id=1, points=[[80, 50]], labels=[1])
    for index in range(1, 4):
        predictor.track(index, frames[index])
    predictor.add_points(4, frames[4], obj_id=1, points=[[70, 40]], labels=[1])
    model_state = nnx.merge(predictor._graphdef, predictor._params)
    feature, pos = predictor._features(predictor._params, to_device(preprocess(frames[5], SIZE)[None]))
    meta = predictor._device_meta()
    checked = 0
    for frame_idx, sign in ((5, 1), (2, -1)):
        num_frames = predictor.frames_in_attention(predictor.meta, frame_idx, sign)
        assert num_frames < predictor.num_cond_slots + predictor.num_mem_slots
        everything = predictor.condition(model_state, feature[2], pos, predictor.bank, meta, frame_idx, sign)
        compact = predictor.condition(model_state, feature[2], pos, predictor.bank, meta, frame_idx, sign, num_frames)
        memory, _, mask, _ = predictor.gather(model_state, predictor.bank, meta, frame_idx, sign, num_frames)
        full_memory, _, full_mask, _ = predictor.gather(model_state, predictor.bank, meta, frame_idx, sign)
        assert int(mask.sum()) == int(full_mask.sum()) and memory.shape[1] < full_memory.shape[1]
        # Both sum the same softmax terms in another order: bounded by float32 rounding of the features' size.
        bound = 64 * np.finfo(np.float32).eps * float(np.max(np.abs(everything)))
        np.testing.assert_allclose(compact, everything, rtol=0, atol=bound)
        checked += 1
    assert checked == 2


def test_several_objects_match_one_tracker_each(model, frames):
    """Objects are independent: batching them (one added later, by box) equals one tracker per object."""
    predictor = SAM2VideoPredictor(model, num_frames=6)
    batched = {0: predictor.add_points(0, frames[0], obj_id=7, points=[[80, 50]], labels=[1])}
    for index in range(1, 6):
        if index == 2:
            batched["box"] = predictor.add_points(2, frames[2], obj_id=9, box=[10, 10, 60, 90])
        batched[index] = predictor.track(index, frames[index])
    assert predictor.obj_ids == [7, 9]

    first = SAM2VideoTracker(model, num_frames=6)
    np.testing.assert_allclose(batched[0], first.add_points(0, frames[0], points=[[80, 50]], labels=[1])[0], atol=1e-4)
    for index in range(1, 6):
        expected = first.track(index, frames[index])[0]
        assert np.ptp(expected) > 0, "masks gated to a constant: the comparison would be empty"
        np.testing.assert_allclose(batched[index][0], expected, atol=1e-3)

    second = SAM2VideoTracker(model, num_frames=6)
    np.testing.assert_allclose(batched["box"], second.add_points(2, frames[2], box=[10, 10, 60, 90])[0], atol=1e-4)
    for index in range(3, 6):
        np.testing.assert_allclose(batched[index][1], second.track(index, frames[index])[0], atol=1e-3)


def test_correction_click_on_a_tracked_frame(model, frames):
    predictor = SAM2VideoPredictor(model, max_cond_frames=2)
    predictor.add_points(0, frames[0], obj_id=1, points=[[80, 50]], labels=[1])
    for index in range(1, 4):
        predictor.track(index, frames[index])
    tracked = predictor.meta["mem_valid"][0] & (predictor.meta["mem_frame"][0] == 3)
    assert tracked.any()
    # A negative click on the frame just tracked: memory-conditioned, refines the tracked mask, becomes a prompt.
    refined = predictor.add_points(3, frames[3], obj_id=1, points=[[20, 20]], labels=[0])
    assert refined.shape == frames[0].shape[:2] and np.isfinite(refined).all()
    meta = predictor.meta
    assert not (meta["mem_valid"][0] & (meta["mem_frame"][0] == 3)).any()
    assert sorted(meta["cond_frame"][0][meta["cond_valid"][0]].tolist()) == [0, 3]
    np.testing.assert_allclose(predictor.track(3, frames[3])[0], refined, atol=1e-5)  # a prompted frame
    predictor.track(4, frames[4])
    predictor.add_points(5, frames[5], obj_id=1, points=[[80, 50]], labels=[1])  # a third prompt evicts frame 0
    assert sorted(meta["cond_frame"][0][meta["cond_valid"][0]].tolist()) == [3, 5]
    # Prompts change no shape: one compilation per memory-frame bucket tracked with (1, 2, then 4 frames), no more.
    assert predictor._track_step._cache_size() == 3


def test_errors(model, frames):
    predictor = SAM2VideoPredictor(model)
    with pytest.raises(RuntimeError, match="add_points"):
        predictor.track(0, frames[0])
    with pytest.raises(ValueError, match="outside"):
        predictor.add_points(0, frames[0], points=[[500, 10]], labels=[1])
    predictor.add_points(0, frames[0], points=[[80, 50]], labels=[1])
    with pytest.raises(ValueError, match="frame of size"):
        predictor.track(1, frames[1][:50])
    with pytest.raises(ValueError, match=r"\(H, W\) = \(107, 160\) mask"):
        predictor.add_mask(0, frames[0], obj_id=2, mask=np.ones((50, 50), bool))
    with pytest.raises(ValueError, match="binary mask"):
        predictor.add_mask(0, frames[0], obj_id=2, mask=np.full(frames[0].shape[:2], 0.7, np.float32))
    assert predictor.obj_ids == [0]  # nothing was added by the rejected prompts


def test_mask_prompt_then_points_refine_it(model, frames):
    """A mask prompt is the output on its frame (logits +-10); a click on that frame then refines that mask."""
    predictor = SAM2VideoPredictor(model)
    mask = np.zeros(frames[0].shape[:2], bool)
    mask[20:80, 40:120] = True
    logits = predictor.add_mask(0, frames[0], obj_id="m", mask=mask)
    assert logits.shape == mask.shape and np.abs(logits).max() <= 10.0 + 1e-4
    assert ((logits > 0) == mask).mean() > 0.97  # low-res round trip blurs only the border
    refined = predictor.add_points(0, frames[0], obj_id="m", points=[[60, 50]], labels=[1])
    assert np.isfinite(refined).all() and not np.allclose(refined, logits)
    assert predictor.meta["cond_valid"][0].sum() == 1  # still one prompted frame
    tracked = predictor.track(1, frames[1])
    assert tracked.shape == (1, *mask.shape) and np.isfinite(tracked).all()
