"""Streaming SAMWISE inference (`SAMWISEPredictor.segment`): equal to the model's clips with the carried state, flat
memory and one compilation from 16 to 160 frames, several expressions as one batch, clear errors. A tiny SAMWISE
(Hiera-T at 64 px, a 4-layer 32-wide BERT over MiniLM's vocabulary, random weights) on a real photo panning."""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.samwise import SAMWISE, SAMWISEConfig
from models.samwise.predictor import SAMWISEPredictor
from tests.helpers import numpy_random_init, real_photo

TEXT = {"vocab_size": 30522, "hidden_size": 32, "num_layers": 4, "num_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 32, "type_vocab_size": 2, "pad_token_id": 0, "position_style": "absolute",
        "layer_norm_eps": 1e-12}  # fmt: skip
CONFIG = SAMWISEConfig(sam2_variant="t", image_size=64, text_encoder=tuple(TEXT.items()), fusion_stages_txt=(2, 3, 4),
                       adapter_dim=16, cme_decision_window=2, text_dropout=0.0, cme_dropout=0.0)
CLIP = 2  # frames per clip (the official 8 at full scale; 2 keeps the compiles short)
EPS32 = float(np.finfo(np.float32).eps)
LEFT, RIGHT = "the person on the left", "the person on the right"  # the same number of tokens: one compile


@pytest.fixture(scope="module")
def model():
    # Random weights drawn in numpy onto the abstract model (its own initialisers would compile one program per
    # parameter shape); the prompt encoder's random Fourier matrix is N(0, 1) as SAM's.
    gaussian = np.random.default_rng(1)
    fourier = lambda path, value: gaussian.normal(size=value.shape) if path[-1] == "positional_encoding_gaussian_matrix" \
        else None
    model, _ = numpy_random_init(nnx.eval_shape(lambda: SAMWISE(CONFIG, rngs=nnx.Rngs(0))), 0, other=fourier)
    # Random weights score "no object", which gates every mask to -1024: raise the object-score bias so masks vary.
    last = model.sam.sam_mask_decoder.pred_obj_score_head.layers[-1]
    last.bias.set_value(last.bias.get_value() + 10.0)
    return model


@pytest.fixture(scope="module")
def predictor(model):
    from models.text import bert_tokenizer, offline_minilm_dir

    return SAMWISEPredictor(model, bert_tokenizer(offline_minilm_dir() / "vocab.txt"), clip_length=CLIP)


@pytest.fixture(scope="module")
def frames():
    photo = real_photo()[::4, ::4].copy()  # 107 x 160, resized to 43 x 64 inside
    return [np.roll(photo, 3 * k, axis=1) for k in range(10)]  # a slow camera pan


def _live_bytes() -> int:
    gc.collect()
    return sum(int(x.nbytes) for x in jax.live_arrays())


def test_streaming_equals_the_clips_with_the_carried_state(model, predictor, frames):
    """4 frames in clips of 2: the model's own calls (the first without a state, the next continuing it), cropped and
    resized back to the frame size, give the streamed logits; the frame indices run 0..3."""
    streamed = list(predictor.segment(iter(frames[:4]), LEFT))
    assert [r.index for r in streamed] == list(range(4))
    assert all(r.masks.shape == (1, 107, 160) and r.masks.dtype == bool for r in streamed)

    tokens, mask = (jnp.asarray(a) for a in predictor.tokenize(LEFT))
    images, (height, width) = predictor.prepare(frames[:4])
    assert (height, width) == (43, 64)  # short side 64, long side capped at 64 (the official resize)
    forward = nnx.jit(lambda m, clip, state: m(clip, tokens, mask, train=False, state=state))
    state, expected = None, []
    for start in range(0, 4, CLIP):
        out, state = forward(model, jnp.asarray(images[start:start + CLIP])[None], state)
        logits = out["masks"][0, :, :height, :width]
        expected.append(jax.image.resize(logits, (logits.shape[0], 107, 160), "linear"))
    expected = np.concatenate([np.asarray(e) for e in expected])
    ours = np.stack([r.logits[0] for r in streamed])
    # float32 rounding through ~40 stacked blocks at the logits' magnitude (not tuned): 64 eps x max |ref| x 40.
    bound = 64 * EPS32 * float(np.abs(expected).max()) * 40
    np.testing.assert_allclose(ours, expected, rtol=0, atol=bound)
    assert np.array_equal(np.stack([r.masks[0] for r in streamed]), ours > 0)
    assert 0.0 < np.mean(ours > 0) < 1.0  # masks that are neither empty nor full: the comparison says something


def test_memory_and_compiles_stay_flat_from_16_to_160_frames(predictor, frames):
    """Device memory (every live array, the carried state included) and the compiled functions are the same after
    16 and after 160 frames; the 161st frame makes a last clip of 1 frame (its own compile), and streams out."""

    def video():
        for k in range(161):
            yield frames[k % len(frames)]

    seen = {}
    for result in predictor.segment(video(), LEFT):
        if result.index in (15, 159):  # the ends of clips 8 and 80
            seen[result.index] = (_live_bytes(), predictor._step._cache_size())
    assert seen[15] == seen[159], seen
    assert result.index == 160 and result.masks.shape == (1, 107, 160) and np.isfinite(result.logits).all()
    state = predictor.model.initial_state(1)
    assert state["bank"]["mem"].shape[1] == 6 and state["bank"]["ptr"].shape[1] == 15  # last 6 masks, 15 pointers


def test_several_expressions_are_one_batch(predictor, frames):
    both = predictor.segment_video(frames[:CLIP], [LEFT, RIGHT])
    assert both.shape == (2, CLIP, 107, 160)
    batched = [r.logits for r in predictor.segment(frames[:CLIP], [LEFT, RIGHT])]
    alone = [r.logits[0] for r in predictor.segment(frames[:CLIP], RIGHT)]
    expected = np.stack(alone)
    bound = 64 * EPS32 * float(np.abs(expected).max()) * 40
    np.testing.assert_allclose(np.stack([b[1] for b in batched]), expected, rtol=0, atol=bound)


def test_bad_input_is_a_clear_error(predictor, frames, tmp_path):
    from zoo.data import VideoDecodeError, iter_frames

    with pytest.raises(ValueError, match="non-empty expressions"):
        predictor.segment(frames, "  ")
    with pytest.raises(ValueError, match="non-empty expressions"):
        predictor.segment(frames, [])
    with pytest.raises(ValueError, match=r"frame 1 is 50x50 but the video's first frame was 107x160"):
        list(predictor.segment([frames[0], np.zeros((50, 50, 3), np.uint8)], LEFT))
    with pytest.raises(ValueError, match=r"frame 0: expected uint8 RGB \(H, W, 3\)"):
        list(predictor.segment([np.zeros((8, 8), np.float32)], LEFT))
    with pytest.raises(ValueError, match="got no frames"):
        list(predictor.segment(iter([]), LEFT))
    with pytest.raises(TypeError, match=r"not a path .*zoo.data.iter_frames"):
        predictor.segment(str(tmp_path / "clip.mp4"), LEFT)
    with pytest.raises(VideoDecodeError, match="not found"):
        list(predictor.segment(iter_frames(tmp_path / "missing.mp4"), LEFT))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        list(predictor.segment(iter_frames(broken), LEFT))
    with pytest.raises(TypeError, match="SAMWISE model"):
        SAMWISEPredictor(object(), predictor.tokenizer)
