"""Tests for referring-VOS data: Ref-YouTube-VOS / MeViS / Ref-DAVIS17 / RefCOCO readers on tiny fake layouts, the
official clip sampling rules, resize + pad geometry, clear errors, and the embedded vtest referring set."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import zoo.data as zd
from tests.helpers import in_ci, temporary_zoo_cache
from zoo.data import refvos, refvos_refcoco
from zoo.data.refvos import RefVOSFormatError

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
H, W = 12, 16


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(tmp_path_factory):
    yield from temporary_zoo_cache(tmp_path_factory)


# ------------------------------------------------------------------------------------------------ fake layouts
def _frame(value: int) -> Image.Image:
    # flat grey frames: the decoded value says which frame was read (JPEG keeps flat areas within ~1 level)
    return Image.fromarray(np.full((H, W, 3), value, np.uint8))


def _ids(t: int) -> np.ndarray:
    """Object-id map of frame t: object 1 a block moving right, object 2 a fixed block, object 3 only from t = 3."""
    ids = np.zeros((H, W), np.uint8)
    ids[2:6, t : t + 3] = 1
    ids[8:11, 10:14] = 2
    if t >= 3:
        ids[0:2, 0:2] = 3
    return ids


def _palette_png(ids: np.ndarray, path: Path) -> None:
    image = Image.fromarray(ids, mode="P")
    image.putpalette([0, 0, 0, 236, 95, 103, 249, 145, 87, 250, 200, 99] + [0] * (256 * 3 - 12))
    image.save(path)


def _write_video(frame_dir: Path, names: list[str], annotation_dir: Path | None = None) -> None:
    frame_dir.mkdir(parents=True)
    if annotation_dir is not None:
        annotation_dir.mkdir(parents=True)
    for t, name in enumerate(names):
        _frame(20 * t + 10).save(frame_dir / f"{name}.jpg", quality=95)
        if annotation_dir is not None:
            _palette_png(_ids(t), annotation_dir / f"{name}.png")


def _ytvos(root: Path, frames: int = 6) -> Path:
    names = [f"{5 * t:05d}" for t in range(frames)]
    for video in ("vid_a", "vid_b"):
        _write_video(root / "train" / "JPEGImages" / video, names, root / "train" / "Annotations" / video)
    (root / "train" / "meta.json").write_text(
        json.dumps(
            {
                "videos": {
                    v: {"objects": {"1": {"category": "person"}, "2": {"category": "dog"}, "3": {"category": "cat"}}}
                    for v in ("vid_a", "vid_b")
                }
            }
        )
    )
    exps = {
        "vid_a": {
            "frames": names[::-1],
            "expressions": {"0": {"exp": "A  Person Walking", "obj_id": "1"}, "1": {"exp": "the dog", "obj_id": "2"}},
        },
        "vid_b": {"frames": names, "expressions": {"0": {"exp": "the late cat", "obj_id": "3"}}},
    }
    (root / "meta_expressions" / "train").mkdir(parents=True)
    (root / "meta_expressions" / "train" / "meta_expressions.json").write_text(json.dumps({"videos": exps}))
    # valid: frames only (scored on the server); vid_t is a test video listed in valid too
    for video in ("vid_v", "vid_t"):
        _write_video(root / "valid" / "JPEGImages" / video, names[:3])
    valid = {v: {"frames": names[:3], "expressions": {"0": {"exp": "something"}}} for v in ("vid_v", "vid_t")}
    for split, videos in (("valid", valid), ("test", {"vid_t": valid["vid_t"]})):
        (root / "meta_expressions" / split).mkdir(parents=True)
        (root / "meta_expressions" / split / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
    return root


def _mean(frame: np.ndarray) -> float:
    return float(frame.astype(np.float64).mean())


def test_ref_youtube_vos_reads_frames_masks_and_expressions(tmp_path):
    root = _ytvos(tmp_path / "ytvos")
    source = zd.get_source(f"ref_youtube_vos:{root}", split="train", num_frames=4, size=None)
    assert isinstance(source, refvos.ReferringVideoSource)
    # one example per (video, expression, anchor 0, T, ...): 3 expressions x anchors {0, 4} of 6 frames
    assert len(source) == 6 and source.sampling == "local"
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(len(source)):
        example = source.sample(i, rng)
        expression = str(example["expression"])
        seen.add(expression)
        positions = example["frame_ids"]
        assert example["frames"].shape == (4, H, W, 3) and example["masks"].shape == (4, H, W)
        obj = {"a person walking": 1, "the dog": 2, "the late cat": 3}[expression]
        for t, position in enumerate(positions):
            # frame names are sorted even though vid_a lists them reversed; name "000xx" -> frame index xx / 5
            index = int(example["frame_names"][t]) // 5
            assert index == position
            assert abs(_mean(example["frames"][t]) - (20 * index + 10)) < 2
            np.testing.assert_array_equal(example["masks"][t], (_ids(index) == obj).astype(np.uint8))
        if obj == 3:  # redrawn until some frame shows the object (the official instance_check)
            assert example["object_present"].any()
    assert seen == {"a person walking", "the dog", "the late cat"}

    valid = refvos.ref_youtube_vos(root, split="valid", size=None)
    assert [v.video_id for v in valid.videos] == ["vid_v"]  # test videos dropped, as the official inference
    example = valid[0]
    assert "masks" not in example and example["frames"].shape[0] == 3 and valid.sampling == "all"


def test_mevis_union_of_anno_ids_and_null_frames(tmp_path):
    root = tmp_path / "mevis"
    names = [f"{t:05d}" for t in range(5)]
    _write_video(root / "train" / "JPEGImages" / "v0", names)
    masks = {"10": [], "11": []}
    for t in range(5):
        ids = _ids(t)
        masks["10"].append(refvos.rle_encode(ids == 1))
        masks["11"].append(None if t == 2 else refvos.rle_encode(ids == 2))
    (root / "train" / "mask_dict.json").write_text(json.dumps(masks))
    (root / "train" / "meta_expressions.json").write_text(
        json.dumps(
            {
                "videos": {
                    "v0": {
                        "frames": names,
                        "expressions": {
                            "0": {"exp": "the two things", "obj_id": [0, 1], "anno_id": [10, 11]},
                            "1": {"exp": "the moving thing", "obj_id": [0], "anno_id": [10]},
                        },
                    }
                }
            }
        )
    )
    source = zd.get_source(f"mevis:{root}", split="train", num_frames=5, sampling="consecutive", size=None)
    both, single = source[0], source[1]
    assert str(both["expression"]) == "the two things"
    for t in range(5):
        union = (_ids(t) == 1) | ((_ids(t) == 2) & (t != 2))
        np.testing.assert_array_equal(both["masks"][t], union)
        np.testing.assert_array_equal(single["masks"][t], _ids(t) == 1)
    assert zd.get_source(f"mevis:{root}", split="train").sampling == "global"
    # "valid" has no mask_dict.json (scored on the server): whole videos, no masks
    _write_video(root / "valid" / "JPEGImages" / "v9", names[:2])
    (root / "valid" / "meta_expressions.json").write_text(
        json.dumps({"videos": {"v9": {"frames": names[:2], "expressions": {"0": {"exp": "x", "anno_id": []}}}}})
    )
    valid = refvos.mevis(root, split="valid", size=None)
    assert valid.sampling == "all" and "masks" not in valid[0] and valid[0]["frames"].shape == (2, H, W, 3)


def test_rle_matches_pycocotools_strings():
    # Strings made once with pycocotools 2.0.11 (mask.encode of the mask below, and frPyObjects of the polygons).
    mask = np.zeros((7, 9), np.uint8)
    mask[2:5, 3:8] = 1
    mask[0, 0] = mask[6, 8] = 1
    assert refvos.rle_encode(mask)["counts"] == "01f02^O00000004N"
    np.testing.assert_array_equal(refvos.rle_decode({"size": [7, 9], "counts": "01f02^O00000004N"}), mask)
    cases = [
        ([2.3, 1.7, 17.9, 4.2, 14.6, 15.8, 5.1, 13.2], 18, 21, "h14>4L3M10O000001O0000010OM3L4Me1", 144),
        (
            [0.0, 0.0, 30.5, 2.0, 12.0, 25.5, -3.0, 10.0, 4.0, 4.0],
            24,
            28,
            "76;KJ75JI86IH:65O1O1O100O1O1O000000N2O1O1O1N2O1O1N2O2N1O1N2O1OO",
            434,
        ),
    ]
    for polygon, height, width, counts, area in cases:
        expected = refvos.rle_decode({"size": [height, width], "counts": counts})
        assert expected.sum() == area
        np.testing.assert_array_equal(refvos_refcoco.polygon_to_mask(polygon, height, width), expected)
    # uncompressed counts (crowd annotations) and random masks round trip
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = rng.random((int(rng.integers(1, 9)), int(rng.integers(1, 9)))) < 0.4
        np.testing.assert_array_equal(refvos.rle_decode(refvos.rle_encode(m)), m)
    np.testing.assert_array_equal(refvos.rle_decode({"size": [2, 2], "counts": [1, 2, 1]}), [[0, 1], [1, 0]])


def _davis_raw(root: Path) -> Path:
    names = [f"{t:05d}" for t in range(4)]
    for video in ("classic-car", "bear"):
        _write_video(
            root / "DAVIS" / "JPEGImages" / "480p" / video,
            names,
            root / "DAVIS" / "Annotations_unsupervised" / "480p" / video,
        )
    sets = root / "DAVIS" / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("classic-car\nbear\n")
    (sets / "train.txt").write_text("")
    text = root / "davis_text_annotations"
    text.mkdir()
    for name, encoding in refvos._DAVIS_TEXT_FILES:
        tag = name.removeprefix("Davis17_").removesuffix(".txt")
        lines = [
            f'clasic-car 2 "the {tag} car two"',
            f'clasic-car 1 "the {tag} car one"',
            f'bear 1 "the {tag} bear café"',
        ]
        (text / name).write_text("\n".join(lines) + "\n", encoding=encoding)
    return root


def test_ref_davis17_raw_layout_order_and_masks(tmp_path):
    root = _davis_raw(tmp_path / "davis")
    source = zd.get_source(f"ref_davis17:{root}", split="valid", size=None)
    assert source.sampling == "all" and [v.video_id for v in source.videos] == ["classic-car", "bear"]
    car = [e for e in source.expressions if e.video == 0]
    # per object (string order of its id), annot1 first, annot1 full, annot2 first, annot2 full: annotator = id % 4
    tags = ["annot1", "annot1_full_video", "annot2", "annot2_full_video"]
    assert [e.exp_id for e in car] == [str(i) for i in range(8)]
    assert [e.text for e in car] == [f"the {t} car {n}" for n in ("one", "two") for t in tags]
    assert [e.targets for e in car] == [(1,)] * 4 + [(2,)] * 4
    bear = [e.text for e in source.expressions if e.video == 1]
    assert bear[2] == "the annot2 bear café"  # latin-1 annotator-2 files decoded
    example = source[5]  # car object 2, whole video
    assert example["frames"].shape == (4, H, W, 3)
    for t in range(4):
        np.testing.assert_array_equal(example["masks"][t], _ids(t) == 2)


def test_refcoco_converted_and_raw_layouts(tmp_path):
    root = tmp_path / "coco"
    (root / "train2014").mkdir(parents=True)
    (root / "refcoco").mkdir()
    Image.fromarray(np.full((24, 28, 3), 90, np.uint8)).save(root / "train2014" / "img1.jpg", quality=95)
    polygon = [0.0, 0.0, 30.5, 2.0, 12.0, 25.5, -3.0, 10.0, 4.0, 4.0]
    ann = {
        "id": 7,
        "image_id": 1,
        "segmentation": [polygon],
        "bbox": [0, 0, 28, 24],
        "iscrowd": 0,
        "area": 434,
        "category_id": 1,
    }
    crowd = dict(ann, id=8, iscrowd=1, segmentation={"size": [24, 28], "counts": [0, 24 * 28]})
    instances = {
        "images": [{"id": 1, "file_name": "img1.jpg", "height": 24, "width": 28}],
        "annotations": [ann, crowd],
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    refs = [
        {
            "ref_id": 0,
            "ann_id": 7,
            "image_id": 1,
            "category_id": 1,
            "split": "train",
            "sentences": [
                {"sent_id": 3, "sent": "Left  Guy", "tokens": ["left", "guy"]},
                {"sent_id": 4, "sent": "man on the left", "tokens": []},
            ],
        },
        {
            "ref_id": 1,
            "ann_id": 8,
            "image_id": 1,
            "category_id": 1,
            "split": "testB",
            "sentences": [{"sent_id": 5, "sent": "crowd", "tokens": []}],
        },
    ]
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    expected = refvos_refcoco.polygon_to_mask(polygon, 24, 28)
    raw = zd.get_source(f"refcoco:{root}", split="train", size=None)
    assert len(raw) == 2 and [str(raw[i]["expression"]) for i in range(2)] == ["left guy", "man on the left"]
    assert raw[0]["frames"].shape == (1, 24, 28, 3) and str(raw[1]["exp_id"]) == "4"
    np.testing.assert_array_equal(raw[0]["masks"][0], expected)
    crowd_only = refvos_refcoco.refcoco(root, split="testB", size=None)
    assert len(crowd_only) == 1 and crowd_only[0]["masks"].sum() == 0  # crowds are dropped, as the official
    # the converted layout (one "image" per sentence) gives the same example
    converted = {
        "images": [
            {"id": 1, "file_name": "img1.jpg", "height": 24, "width": 28, "caption": "left guy", "original_id": 1}
        ],
        "annotations": [dict(ann, image_id=1)],
        "categories": [],
    }
    (root / "refcoco" / "instances_refcoco_train.json").write_text(json.dumps(converted))
    example = refvos_refcoco.refcoco(root, split="train", size=32)[0]
    # short side round(32 * 24 / 28) = 27, long side int(27 * 28 / 24) = 31: torchvision's truncation, not 32
    assert example["frames"].shape == (1, 32, 32, 3) and tuple(example["size"]) == (27, 31)
    assert example["masks"].sum() > 0 and not example["masks"][0, 27:].any() and not example["masks"][0, :, 31:].any()


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refs_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 0, "evil": _Boom()}], protocol=2))
    with pytest.raises(RefVOSFormatError, match="only plain-data pickles"):
        refvos_refcoco.load_plain_pickle(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(RefVOSFormatError, match="not a readable refs pickle"):
        refvos_refcoco.load_plain_pickle(path)


# ------------------------------------------------------------------------------------------------ sampling
def test_local_sampling_rules():
    rng = np.random.default_rng(0)
    for _ in range(400):
        length = int(rng.integers(1, 40))
        frames = int(rng.integers(1, 12))
        anchor = int(rng.integers(length))
        got = refvos.sample_local_frames(anchor, length, frames, rng)
        assert got.shape == (frames,) and (np.diff(got) >= 0).all() and got.min() >= 0 and got.max() < length
        if length >= frames:  # distinct frames from [anchor - 2T, anchor + 2T)
            assert len(set(got.tolist())) == frames
            assert got.min() >= anchor - 2 * frames and got.max() < anchor + 2 * frames
        # T // 2 before and after the anchor when the video has room on both sides
        if anchor >= frames and length - anchor - 1 >= frames:
            assert (got < anchor).sum() >= frames // 2 and (got >= anchor).sum() >= frames // 2
            # those 2 * (T // 2) come from [anchor - T, anchor + T); an odd T adds the anchor or a pool frame
            near = ((got >= anchor - frames) & (got < anchor + frames)).sum()
            assert near >= 2 * (frames // 2) and (frames % 2 or near == frames)
    a = refvos.sample_local_frames(10, 50, 8, np.random.default_rng(3))
    b = refvos.sample_local_frames(10, 50, 8, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_global_sampling_rules():
    rng = np.random.default_rng(0)
    spread = []
    for _ in range(400):
        length = int(rng.integers(1, 60))
        frames = int(rng.integers(1, 12))
        anchor = int(rng.integers(length))
        got = refvos.sample_global_frames(anchor, length, frames, rng)
        assert got.shape == (frames,) and (np.diff(got) >= 0).all() and got.min() >= 0 and got.max() < length
        if frames >= 3:
            assert anchor in got
            if anchor >= 1:  # a local neighbour 1..3 frames before
                assert ((got >= anchor - 3) & (got < anchor)).any()
        if frames >= 4 and length >= 40:
            spread.append(np.abs(got - anchor).max())
    # the T - 3 global frames are spread over the whole video, not around the anchor
    assert np.mean(np.asarray(spread) > 10) > 0.8
    assert refvos.sample_global_frames(0, 1, 8, rng).tolist() == [0] * 8
    np.testing.assert_array_equal(refvos.consecutive_frames(6, 10, 8), [6, 7, 8, 9])


# ------------------------------------------------------------------------------------------------ resize + pad
def test_resize_and_pad_geometry():
    assert refvos.resized_size(576, 768, 1024) == (768, 1024)
    assert refvos.resized_size(768, 576, 1024) == (1024, 768)
    assert refvos.resized_size(48, 32, 64) == (64, 43)  # round(64 * 32 / 48) = 43 on the short side
    assert refvos.resized_size(1024, 1024, 1024) == (1024, 1024)
    frames = np.full((2, 6, 8, 3), 200, np.uint8)
    masks = np.zeros((2, 6, 8), np.uint8)
    masks[0, 1, 2] = 1
    masks[1, 5, 7] = 1
    out = refvos.resize_and_pad(frames, masks, 16)
    assert out["frames"].shape == (2, 16, 16, 3) and out["masks"].shape == (2, 16, 16)
    assert tuple(out["size"]) == (12, 16) and tuple(out["orig_size"]) == (6, 8)
    assert out["valid_region"].sum() == 12 * 16 and out["valid_region"][:12].all()
    assert (out["frames"][:, 12:] == 0).all() and (out["frames"][:, :12] == 200).all()
    # an exact 2x nearest upscale: each mask pixel becomes a 2x2 block, and nothing lands in the padding
    np.testing.assert_array_equal(np.argwhere(out["masks"][0]), [[2, 4], [2, 5], [3, 4], [3, 5]])
    np.testing.assert_array_equal(np.argwhere(out["masks"][1]), [[10, 14], [10, 15], [11, 14], [11, 15]])
    transformed = refvos.ResizePad(16)({"frames": frames, "masks": masks, "expression": "x"})
    assert transformed["expression"] == "x" and transformed["frames"].shape == (2, 16, 16, 3)


def test_sources_resize_and_batch_through_the_pipeline(tmp_path):
    root = _ytvos(tmp_path / "ytvos")
    source = refvos.ref_youtube_vos(root, num_frames=3, size=32)
    pipeline = zd.make_pipeline(source, batch_size=2, train=True, seed=0, num_epochs=1)
    batch = next(iter(pipeline))
    assert batch["frames"].shape == (2, 3, 32, 32, 3) and batch["masks"].shape == (2, 3, 32, 32)
    assert batch["valid_region"][:, :24].all() and not batch["valid_region"][:, 24:].any()
    assert batch["expression"].shape == (2,) and all(str(e) for e in batch["expression"])


# ------------------------------------------------------------------------------------------------ errors
def test_missing_files_are_clear_errors(tmp_path):
    root = _ytvos(tmp_path / "ytvos")
    source = refvos.ref_youtube_vos(root, num_frames=2, sampling="consecutive", size=None)
    frame = root / "train" / "JPEGImages" / "vid_b" / "00000.jpg"
    frame.unlink()
    first_of_b = next(
        i
        for i, (e, anchor) in enumerate(source.entries)
        if source.videos[source.expressions[e].video].video_id == "vid_b" and anchor == 0
    )
    with pytest.raises(FileNotFoundError, match="vid_b/00000.jpg"):
        source[first_of_b]
    mask = root / "train" / "Annotations" / "vid_a" / "00005.png"
    mask.unlink()
    with pytest.raises(FileNotFoundError, match="vid_a/00005.png"):
        source[0]
    (root / "meta_expressions" / "train" / "meta_expressions.json").unlink()
    with pytest.raises(FileNotFoundError, match="meta_expressions.json"):
        refvos.ref_youtube_vos(root)
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        refvos.mevis(tmp_path / "ytvos" / "meta_expressions", split="train")  # a split folder without frames
    with pytest.raises(FileNotFoundError, match="meta_expressions.json"):
        refvos.mevis(tmp_path / "ytvos", split="valid")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        zd.get_source(f"ref_davis17:{tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="mask_dict.json"):
        refvos.RleMasks(tmp_path / "mask_dict.json")
    bad = _ytvos(tmp_path / "bad")
    meta = bad / "meta_expressions" / "train" / "meta_expressions.json"
    data = json.loads(meta.read_text())
    data["videos"]["vid_a"]["expressions"]["0"]["obj_id"] = "9"
    meta.write_text(json.dumps(data))
    with pytest.raises(RefVOSFormatError, match="object 9"):
        refvos.ref_youtube_vos(bad)
    with pytest.raises(RefVOSFormatError, match="counts sum"):
        refvos.rle_decode({"size": [3, 3], "counts": [1, 2]})


# ------------------------------------------------------------------------------------------------ embedded set
@pytest.fixture(scope="module")
def vtest_sets():
    if not VTEST.is_file():
        if in_ci():
            raise FileNotFoundError(f"{VTEST} missing; apt-get install opencv-doc")
        pytest.skip(f"{VTEST} missing; apt-get install opencv-doc")
    return zd.get_source("vtest_referring", split="train"), zd.get_source("vtest_referring", split="eval")


def _centroid_x(mask: np.ndarray) -> float:
    return float(ndimage.center_of_mass(mask)[1])


def test_vtest_referring_masks_and_expressions(vtest_sets):
    train, evaluation = vtest_sets
    assert len(train) >= 100 and len(evaluation) >= 15
    # split by time: every eval clip comes after every train clip
    assert max(int(train[i]["frame_ids"].max()) for i in range(0, len(train), 10)) < min(
        int(evaluation[i]["frame_ids"].min()) for i in range(len(evaluation))
    )
    kinds, texts, clips = set(), set(), {}
    checked = {"leftmost": 0, "rightmost": 0, "left": 0, "right": 0}
    for i in range(len(train)):
        example = train[i]
        kind, text = str(example["kind"]), str(example["expression"])
        kinds.add(kind)
        texts.add(text)
        masks = example["masks"].astype(bool)
        assert example["frames"].shape == (8, 288, 384, 3) and masks.shape == (8, 288, 384)
        assert masks.any(axis=(1, 2)).all(), f"empty mask in example {i} ({text!r})"
        clip = int(example["frame_ids"][0])
        clips.setdefault(clip, set()).add((text, masks[0].tobytes()))
        labels = train.blob_labels(i)
        if kind in ("leftmost", "rightmost"):
            sign = -1.0 if kind == "leftmost" else 1.0
            for t in range(8):
                others = [k for k in range(1, labels[t].max() + 1) if not (masks[t] & (labels[t] == k)).any()]
                assert others, f"{text!r}: no other person in frame {t}"
                mine = _centroid_x(masks[t])
                assert all(sign * (mine - _centroid_x(labels[t] == k)) > 0 for k in others), (i, text, t)
            checked[kind] += 1
        if kind in ("left", "right"):
            first = np.mean([_centroid_x(masks[0] & (labels[0] == k)) for k in np.unique(labels[0][masks[0]])])
            last = np.mean([_centroid_x(masks[-1] & (labels[-1] == k)) for k in np.unique(labels[-1][masks[-1]])])
            assert (last - first) * (1 if kind == "right" else -1) > 4, (i, text, first, last)
            checked[kind] += 1
    assert all(count >= 3 for count in checked.values()), checked
    assert len(kinds) >= 8 and len(texts) >= 25, (kinds, len(texts))
    # text matters: clips where different expressions refer to different people
    assert sum(len({mask for _, mask in refs}) >= 2 for refs in clips.values()) >= 20
    assert {"the two people walking together"} & texts
    resized = zd.get_source("vtest_referring", split="eval", size=64)[0]
    assert resized["frames"].shape == (8, 64, 64, 3) and tuple(resized["size"]) == (48, 64)


def test_vtest_referring_build_is_deterministic(vtest_sets):
    from zoo.data import refvos_embedded

    built = refvos_embedded.build_vtest_referring()  # the cached build
    labels = built["data"]["labels"]
    assignment, counts = refvos_embedded.track_blobs(labels)
    np.testing.assert_array_equal(assignment, built["assignment"])
    assert counts == built["counts"]
    stats = refvos_embedded._blob_stats(labels)
    again = [
        [start, [list(e) for e in refvos_embedded.clip_expressions(stats, assignment, counts, start, 8)]]
        for start, _ in built["clips"]
    ]
    assert again == [[start, [list(e) for e in exps]] for start, exps in built["clips"]]
