"""Tests for zoo.data: sources, transforms, mixup, pipeline determinism, resume and host sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo.data as zd
from tests.helpers import in_ci, run_result_script
from zoo.data import embedded
from zoo.data.randaugment import OPS, RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS

REPO_ROOT = Path(__file__).resolve().parents[2]


def _nearest_centroid_accuracy(train: zd.ArraySource, test: zd.ArraySource) -> float:
    """Held-out accuracy of a nearest-class-mean classifier: high only if images and labels really agree."""
    train_x = train.arrays["image"].reshape(len(train), -1).astype(np.float32)
    test_x = test.arrays["image"].reshape(len(test), -1).astype(np.float32)
    centroids = np.stack([train_x[train.arrays["label"] == c].mean(0) for c in range(10)])
    distances = ((test_x[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((distances.argmin(1) == test.arrays["label"]).mean())


# ----------------------------------------------------------------------------------------------- sources


def test_sklearn_digits_real_split():
    train = zd.get_source("sklearn_digits", split="train")
    test = zd.get_source("sklearn_digits", split="test")
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) < 10
    example = train[0]
    assert example["image"].shape == (32, 32, 3) and example["image"].dtype == np.uint8
    assert example["label"].dtype == np.int32 and 0 <= example["label"] < 10
    assert train.class_names == [str(d) for d in range(10)]
    assert sorted(np.unique(test.arrays["label"]).tolist()) == list(range(10))
    # Deterministic and disjoint: the split indices are a fixed partition of the 1797 digits.
    labels = np.asarray(__import__("sklearn.datasets").datasets.load_digits().target)
    train_idx = embedded.stratified_split_indices(labels, "train", test_fraction=0.2, seed=0)
    test_idx = embedded.stratified_split_indices(labels, "test", test_fraction=0.2, seed=0)
    assert not set(train_idx) & set(test_idx) and len(set(train_idx) | set(test_idx)) == 1797
    np.testing.assert_array_equal(zd.sklearn_digits("test").arrays["image"], test.arrays["image"])
    assert not np.array_equal(embedded.stratified_split_indices(labels, "test", test_fraction=0.2, seed=1), test_idx)
    assert _nearest_centroid_accuracy(train, test) > 0.85  # real labelled digits
    native = zd.sklearn_digits("all", image_size=None)
    assert len(native) == 1797 and native[0]["image"].shape == (8, 8, 3)


def test_labels_per_class_is_a_fixed_subset_of_the_split():
    train = zd.sklearn_digits("train", image_size=None)
    few = zd.sklearn_digits("train", image_size=None, labels_per_class=7)
    assert np.bincount(few.arrays["label"]).tolist() == [7] * 10
    # Drawn from the train split (every few-shot image is a train image), and the same draw every time.
    train_rows = {row.tobytes() for row in train.arrays["image"]}
    assert all(row.tobytes() in train_rows for row in few.arrays["image"])
    np.testing.assert_array_equal(zd.sklearn_digits("train", image_size=None, labels_per_class=7).arrays["image"],
                                  few.arrays["image"])
    with pytest.raises(ValueError, match="has only"):
        zd.sklearn_digits("test", labels_per_class=100)
    with pytest.raises(ValueError, match="positive"):
        zd.sklearn_digits("train", labels_per_class=-1)


def test_opencv_digits_grid_layout(tmp_path):
    # A synthetic digits.png with opencv's layout (50 x 100 cells, 5 rows per class): label = row // 5.
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, size=(50, 100, 20, 20), dtype=np.uint8)
    cells[:, :, 0, 0] = np.arange(50)[:, None]  # tag each cell with its row
    grid = cells.transpose(0, 2, 1, 3).reshape(1000, 2000)
    path = tmp_path / "digits.png"
    Image.fromarray(grid).save(path)
    images, labels = embedded.load_opencv_digits_grid(path)
    assert images.shape == (5000, 20, 20) and np.bincount(labels).tolist() == [500] * 10
    np.testing.assert_array_equal(labels, images[:, 0, 0] // 5)
    train = zd.opencv_digits("train", path=path, image_size=None)
    test = zd.opencv_digits("test", path=path, image_size=None)
    assert (len(train), len(test)) == (4000, 1000) and train[0]["image"].shape == (20, 20, 3)


def test_opencv_digits_real():
    try:
        path = embedded.find_opencv_digits()
    except FileNotFoundError as error:
        if in_ci():  # CI installs opencv-doc (Makefile: system-data); missing data there is a failure
            raise
        pytest.skip(f"{error}")
    train = zd.get_source("opencv_digits", split="train", path=path)
    test = zd.get_source("opencv_digits", split="test", path=path)
    assert (len(train), len(test)) == (4000, 1000)
    assert train[0]["image"].shape == (32, 32, 3) and train[0]["image"].dtype == np.uint8
    assert np.bincount(test.arrays["label"]).tolist() == [100] * 10
    assert _nearest_centroid_accuracy(train, test) > 0.75


def test_opencv_digits_missing_is_clear(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "OPENCV_DIGITS_PATHS", (str(tmp_path / "nope.png"),))
    monkeypatch.delenv(embedded.OPENCV_DIGITS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install opencv-doc"):
        zd.opencv_digits("train")


def test_registry_unknown_name_lists_valid():
    with pytest.raises(KeyError) as error:
        zd.get_source("imagenet_please")
    for name in ("sklearn_digits", "opencv_digits", "tfds:<name>", "folder:<path>"):
        assert name in str(error.value)
    assert "sklearn_digits" in zd.list_sources()


def _write_image_tree(root: Path) -> dict[str, list[Path]]:
    rng = np.random.default_rng(0)
    written: dict[str, list[Path]] = {}
    for class_name, extension in (("zebra", ".png"), ("ant", ".jpg"), ("moth", ".png")):
        (root / class_name).mkdir(parents=True)
        written[class_name] = []
        for i in range(3):
            path = root / class_name / f"img_{i}{extension}"
            pixels = rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)
            if class_name == "moth" and i == 0:
                Image.fromarray(pixels[..., 0]).save(path)  # a grey image is converted to RGB
            else:
                Image.fromarray(pixels).save(path)
            written[class_name].append(path)
    (root / "ant" / "notes.txt").write_text("not an image")
    return written


def test_image_folder_source(tmp_path):
    root = tmp_path / "data" / "train"
    _write_image_tree(root)
    corrupt = root / "ant" / "img_1.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    source = zd.get_source(f"folder:{tmp_path / 'data'}", split="train")
    assert source.class_names == ["ant", "moth", "zebra"] and len(source) == 9
    assert source.files[1] == str(corrupt)
    assert source[0]["label"] == 0 and source[3]["label"] == 1 and source[8]["label"] == 2
    assert source[3]["image"].shape == (20, 24, 3) and source[3]["image"].dtype == np.uint8
    assert source.num_corrupt == 0
    with pytest.warns(RuntimeWarning, match="img_1.jpg"):
        replaced = source[1]
    # The corrupt file is skipped: the next readable file takes its place, and it is counted once.
    np.testing.assert_array_equal(replaced["image"], source[2]["image"])
    assert source.num_corrupt == 1 and source.corrupt_files == [str(corrupt)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned only once per file
        transform = zd.make_image_transform(train=False, image_size=16, crop_pct=1.0)
        batches = list(zd.make_pipeline(source, batch_size=4, train=False, transform=transform, num_threads=0))
    assert source.num_corrupt == 1
    assert [b["image"].shape for b in batches] == [(4, 16, 16, 3)] * 3
    assert np.concatenate([b["_mask"] for b in batches]).sum() == 9

    with pytest.warns(RuntimeWarning, match="img_1.jpg"):
        validated = zd.ImageFolderSource(root, validate=True)
    assert len(validated) == 8 and validated.num_corrupt == 1


def test_image_folder_missing_path_is_clear(tmp_path):
    missing = tmp_path / "no_such_dataset"
    with pytest.raises(FileNotFoundError, match="no_such_dataset") as error:
        zd.ImageFolderSource(missing)
    assert "<class_name>/<image>" in str(error.value)
    with pytest.raises(FileNotFoundError, match="val"):
        zd.get_source(f"folder:{tmp_path}", split="val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="class"):
        zd.ImageFolderSource(tmp_path / "empty")


# ------------------------------------------------------------------------------------------------- TFDS

_TFDS_SCRIPT = r"""
import sys, json
import numpy as np
import tensorflow_datasets as tfds

class ZooTinyDigits(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 3), dtype=np.uint8),
            "label": tfds.features.Scalar(dtype=np.int64),
            "id": tfds.features.Scalar(dtype=np.int64),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 10), "test": self._generate_examples(10, 14)}

    def _generate_examples(self, start, stop):
        for i in range(start, stop):
            yield i, {"image": np.full((8, 8, 3), i, np.uint8), "label": i % 3, "id": i}

data_dir = sys.argv[1]
builder = ZooTinyDigits(data_dir=data_dir, file_format="array_record")
builder.download_and_prepare()

import zoo.data as zd
out = {"builder_dir": str(builder.data_dir), "tf": "tensorflow" in sys.modules}
source = zd.get_source("tfds:zoo_tiny_digits", split="train", data_dir=data_dir)
example = source[0]
out["len"] = len(source)
out["image"] = [list(example["image"].shape), str(example["image"].dtype)]
out["label_dtype"] = str(example["label"].dtype)
out["ids"] = sorted(int(source[i]["id"]) for i in range(len(source)))
out["consistent"] = all(int(source[i]["label"]) == int(source[i]["id"]) % 3 for i in range(len(source)))
out["shards"] = [
    sorted(int(s[i]["id"]) for i in range(len(s)))
    for s in (zd.TfdsSource("zoo_tiny_digits", split="train", data_dir=data_dir, shard_by_process=True,
                            process_index=p, process_count=2) for p in range(2))
]
test = zd.TfdsSource(builder_dir=builder.data_dir, split="test", feature_map={"image": "image", "label": "label"})
out["test_len"] = len(test)
out["test_keys"] = sorted(test[0])
pipeline = zd.make_pipeline(source, batch_size=4, train=True, seed=0, num_threads=0)
out["batch_shape"] = list(next(iter(pipeline))["image"].shape)
out["tf_after"] = "tensorflow" in sys.modules
print("RESULT" + json.dumps(out))
"""


def test_tfds_data_source_without_tensorflow(tmp_path):
    # A fresh interpreter: the builder class must be registered there, and we check TensorFlow is never imported.
    out = run_result_script(_TFDS_SCRIPT, tmp_path / "make_tfds.py", str(tmp_path / "tfds"))
    assert out["tf"] is False and out["tf_after"] is False
    assert out["len"] == 10 and out["ids"] == list(range(10)) and out["consistent"]
    assert out["image"] == [[8, 8, 3], "uint8"] and out["label_dtype"] == "int32"
    first, second = out["shards"]
    assert not set(first) & set(second) and sorted(first + second) == list(range(10))
    assert out["test_len"] == 4 and out["test_keys"] == ["image", "label"]
    assert out["batch_shape"] == [4, 8, 8, 3]


def test_tfds_missing_dataset_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepared"):
        zd.TfdsSource(builder_dir=tmp_path / "nope", split="train")
    with pytest.raises(FileNotFoundError, match="zoo_no_such_dataset.*tfds build"):
        zd.get_source("tfds:zoo_no_such_dataset", split="train", data_dir=tmp_path)


# -------------------------------------------------------------------------------------------- transforms


def _photo(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)


def test_example_rng_is_a_pure_function():
    a = zd.example_rng(1, 2, 3).random(4)
    np.testing.assert_array_equal(a, zd.example_rng(1, 2, 3).random(4))
    assert not np.array_equal(a, zd.example_rng(1, 3, 3).random(4))
    assert not np.array_equal(a, zd.example_rng(1, 2, 4).random(4))


def test_train_and_eval_transforms_shapes_and_determinism():
    example = {"image": _photo(), "label": np.int32(3)}
    train = zd.make_image_transform(
        train=True, image_size=32, auto_augment="rand-m9-mstd0.5-inc1", interpolation="random", reprob=0.5
    )
    out = train(example, zd.example_rng(0, 0, 7))
    assert out["image"].shape == (32, 32, 3) and out["image"].dtype == np.float32 and out["label"] == 3
    np.testing.assert_array_equal(out["image"], train(example, zd.example_rng(0, 0, 7))["image"])
    assert not np.array_equal(out["image"], train(example, zd.example_rng(0, 1, 7))["image"])
    assert example["image"].dtype == np.uint8 and example["image"].shape == (48, 64, 3)  # input untouched

    evaluate = zd.make_image_transform(train=False, image_size=(24, 24), crop_pct=0.75)
    out = evaluate(example, zd.example_rng(0, 0, 0))
    assert out["image"].shape == (24, 24, 3) and out["image"].dtype == np.float32
    # Eval is deterministic regardless of the rng.
    np.testing.assert_array_equal(out["image"], evaluate(example, zd.example_rng(5, 5, 5))["image"])
    # Normalize: a constant image of the mean maps to 0.
    mean_image = np.tile(np.round(np.asarray(zd.IMAGENET_MEAN) * 255).astype(np.uint8), (4, 4, 1))
    assert np.abs(zd.Normalize()({"image": mean_image}, None)["image"]).max() < 0.01


def test_resize_center_crop_matches_short_side_rule():
    image = _photo(40, 80)
    out = zd.ResizeCenterCrop(20, crop_pct=0.5, interpolation="bilinear")({"image": image})["image"]
    # Short side 40 -> 40, long side 80 -> 80: no resize, the crop is the exact centre.
    np.testing.assert_array_equal(out, image[10:30, 30:50])


def test_horizontal_flip_uses_its_rng():
    image = _photo()
    flipped = zd.RandomHorizontalFlip(1.0)({"image": image}, np.random.default_rng(0))["image"]
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    same = zd.RandomHorizontalFlip(0.0)({"image": image}, np.random.default_rng(0))["image"]
    np.testing.assert_array_equal(same, image)
    flip = zd.RandomHorizontalFlip(0.5)
    outcomes = [np.array_equal(flip({"image": image}, zd.example_rng(0, 0, i))["image"], image) for i in range(40)]
    assert 5 < sum(outcomes) < 35
    assert outcomes == [
        np.array_equal(flip({"image": image}, zd.example_rng(0, 0, i))["image"], image) for i in range(40)
    ]


def test_random_resized_crop():
    image = _photo(50, 50)
    full = zd.RandomResizedCrop(50, scale=(1.0, 1.0), ratio=(1.0, 1.0), interpolation="bilinear")
    np.testing.assert_array_equal(full({"image": image}, np.random.default_rng(0))["image"], image)
    crop = zd.RandomResizedCrop((16, 24), scale=(0.08, 1.0))
    boxes = set()
    for i in range(20):
        rng = zd.example_rng(0, 0, i)
        top, left, height, width = crop.crop_box(50, 50, rng)
        assert 0 <= top and top + height <= 50 and 0 <= left and left + width <= 50
        area = height * width / 2500
        assert 0.05 < area <= 1.0 and 0.6 < width / height < 1.6
        boxes.add((top, left, height, width))
        out = crop({"image": image}, zd.example_rng(0, 0, i))["image"]
        assert out.shape == (16, 24, 3) and out.dtype == np.uint8
    assert len(boxes) > 15
    # Impossible ratio -> fallback centre crop within the ratio range.
    top, left, height, width = zd.RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(2.0, 2.0)).crop_box(
        50, 50, np.random.default_rng(0)
    )
    assert (height, width) == (25, 50) and top == 12


def test_random_erasing_pixel_mode():
    image = np.zeros((32, 32, 3), np.float32)
    erase = zd.RandomErasing(1.0, mode="pixel")
    out = erase({"image": image}, np.random.default_rng(0))["image"]
    erased = np.any(out != 0, axis=-1)
    rows, cols = np.flatnonzero(erased.any(1)), np.flatnonzero(erased.any(0))
    box_area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    assert erased.sum() == box_area  # one solid rectangle
    assert 0.02 * 1024 * 0.5 <= box_area <= 1024 / 3 * 1.5
    assert 0.5 < out[erased].std() < 1.5  # per-pixel normal noise
    np.testing.assert_array_equal(out, erase({"image": image}, np.random.default_rng(0))["image"])
    assert np.array_equal(zd.RandomErasing(0.0)({"image": image}, np.random.default_rng(0))["image"], image)
    assert np.all(image == 0)


def test_rand_augment_parsing_and_ops():
    parsed = zd.parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert parsed["magnitude"] == 9 and parsed["magnitude_std"] == 0.5 and parsed["num_layers"] == 2
    assert parsed["ops"] == RAND_INCREASING_TRANSFORMS
    parsed = zd.parse_rand_augment("rand-m7-n3-mmax12-p0.8")
    assert (parsed["magnitude"], parsed["num_layers"], parsed["magnitude_max"], parsed["prob"]) == (7, 3, 12, 0.8)
    assert parsed["ops"] == RAND_TRANSFORMS
    for bad in ("auto-m9", "rand-q3", "rand-mx"):
        with pytest.raises(ValueError):
            zd.parse_rand_augment(bad)

    image = _photo(32, 32)
    augment = zd.RandAugment(fill=(124, 116, 104))
    rng = np.random.default_rng(0)
    for name in OPS:
        for magnitude in (0.0, 5.0, 10.0):
            out = np.asarray(augment.apply_op(Image.fromarray(image), name, magnitude, rng))
            assert out.shape == image.shape and out.dtype == np.uint8, name
    pil = Image.fromarray(image)
    np.testing.assert_array_equal(np.asarray(augment.apply_op(pil, "Invert", 9, rng)), 255 - image)
    np.testing.assert_array_equal(np.asarray(augment.apply_op(pil, "Rotate", 0.0, rng)), image)
    np.testing.assert_array_equal(np.asarray(augment.apply_op(pil, "PosterizeIncreasing", 10.0, rng)), 0 * image)
    np.testing.assert_array_equal(np.asarray(augment.apply_op(pil, "SolarizeIncreasing", 0.0, rng)), image)
    shifted = np.asarray(augment.apply_op(pil, "TranslateXRel", 10.0, np.random.default_rng(3)))
    assert (shifted == np.array([124, 116, 104], np.uint8)).all(-1).any()  # fill colour comes in

    full = zd.RandAugment.from_config("rand-m9-mstd0.5-inc1", prob=1.0)
    outs = [full({"image": image}, zd.example_rng(0, 0, i))["image"] for i in range(8)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    assert sum(not np.array_equal(o, image) for o in outs) >= 6
    np.testing.assert_array_equal(outs[3], full({"image": image}, zd.example_rng(0, 0, 3))["image"])
    grey = full({"image": image[..., :1]}, zd.example_rng(0, 0, 0))["image"]
    assert grey.shape == (32, 32, 1)


# ----------------------------------------------------------------------------------------------- mixup


def _float_batch(size: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.standard_normal((size, 16, 16, 3)).astype(np.float32),
        "label": np.arange(size, dtype=np.int32) % 5,
    }


def test_mixup_soft_labels_and_pairs():
    batch = _float_batch()
    mixup = zd.Mixup(5, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1)
    out = mixup(batch, np.random.default_rng(0))
    assert out["label"].shape == (8, 5) and out["label"].dtype == np.float32
    np.testing.assert_allclose(out["label"].sum(-1), 1.0, rtol=1e-6)
    # Recover lam from the labels of row 0 (class 0) mixed with row 7 (class 2).
    on, off = 1 - 0.1 + 0.02, 0.02
    lam = (out["label"][0, 0] - off) / (on - off)
    np.testing.assert_allclose(out["image"], lam * batch["image"] + (1 - lam) * batch["image"][::-1], atol=1e-5)
    assert 0 < lam < 1
    np.testing.assert_array_equal(batch["label"], np.arange(8) % 5)  # input untouched
    again = zd.mixup_cutmix(batch, np.random.default_rng(0), num_classes=5, mixup_alpha=0.8, cutmix_alpha=0.0)
    np.testing.assert_array_equal(again["image"], out["image"])


def test_cutmix_pastes_boxes_and_corrects_lam():
    batch = _float_batch()
    cutmix = zd.Mixup(5, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
    for seed in range(5):
        out = cutmix(batch, np.random.default_rng(seed))
        from_self = np.all(out["image"] == batch["image"], axis=-1)
        from_pair = np.all(out["image"] == batch["image"][::-1], axis=-1)
        assert np.all(from_self | from_pair)
        lam = 1.0 - from_pair[0].mean()
        np.testing.assert_allclose(out["label"][0, 0], lam, atol=1e-6)  # row 0 is class 0, row 7 class 2
        np.testing.assert_allclose(out["label"].sum(-1), 1.0, rtol=1e-6)
    both = zd.Mixup(5, mode="elem", prob=0.7)
    out = both(batch, np.random.default_rng(1))
    np.testing.assert_allclose(out["label"].sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(TypeError):
        both({"image": np.zeros((2, 4, 4, 3), np.uint8), "label": np.zeros(2, np.int32)}, np.random.default_rng(0))


# -------------------------------------------------------------------------------------------- pipeline


def _index_source(n: int = 50) -> zd.ArraySource:
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 8, 8, 3)).copy()
    return zd.ArraySource({"image": images, "label": (np.arange(n) % 10).astype(np.int32)})


def _train_pipeline(**kwargs):
    transform = zd.make_image_transform(train=True, image_size=8, auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25)
    settings = {"batch_size": 8, "train": True, "transform": transform, "seed": 3, "num_threads": 2} | kwargs
    return zd.make_pipeline(_index_source(), **settings)


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_pipeline_resume_gives_the_same_batches():
    pipeline = _train_pipeline()
    iterator = iter(pipeline)
    first_five = [next(iterator) for _ in range(5)]
    state = json.loads(json.dumps(iterator.get_state()))
    next_three = [next(iterator) for _ in range(3)]
    assert state["step"] == 5 and iterator.get_state()["step"] == 8

    restored = iter(_train_pipeline())
    restored.set_state(state)
    _assert_same_batches(next_three, [next(restored) for _ in range(3)])
    rerun = list(zip(range(8), _train_pipeline(num_threads=0).iterator()))
    _assert_same_batches(first_five + next_three, [batch for _, batch in rerun])  # threads do not change order

    other_seed = next(iter(_train_pipeline(seed=4)))
    assert not np.array_equal(other_seed["_index"], first_five[0]["_index"])
    with pytest.raises(ValueError, match="seed"):
        _train_pipeline(seed=4).iterator(state)


def test_iterator_checkpoints_with_grains_orbax_handler(tmp_path):
    import grain

    iterator = _train_pipeline(process_index=1, process_count=2).iterator()
    for _ in range(3):
        next(iterator)
    handler = grain.checkpoint.CheckpointHandler()
    handler.save(tmp_path, args=grain.checkpoint.CheckpointSave(iterator))
    expected = next(iterator)
    restored = _train_pipeline(process_index=1, process_count=2).iterator()
    handler.restore(tmp_path, args=grain.checkpoint.CheckpointRestore(restored))
    assert restored.step == 3
    _assert_same_batches([expected], [next(restored)])


def test_pipeline_epochs_shuffle_and_cover():
    pipeline = _train_pipeline(num_epochs=2)
    batches = list(pipeline)
    assert pipeline.epoch_length == 48 and pipeline.steps_per_epoch == 6 and len(batches) == pipeline.num_batches == 12
    indices = np.concatenate([b["_index"] for b in batches])
    first_epoch, second_epoch = indices[:48], indices[48:]
    assert len(set(first_epoch)) == 48 and len(set(second_epoch)) == 48  # no repeats within an epoch
    assert not np.array_equal(first_epoch, second_epoch)  # reshuffled per epoch
    assert all(b["_mask"].all() for b in batches)
    # Each batch row is the transformed source example it claims to be (labels travel with images).
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), indices % 10)


def test_eval_pipeline_pads_with_mask():
    source = _index_source(50)
    pipeline = zd.make_pipeline(source, batch_size=16, train=False, num_threads=0)
    batches = list(pipeline)
    assert pipeline.num_batches == 4 and all(b["image"].shape == (16, 8, 8, 3) for b in batches)
    mask = np.concatenate([b["_mask"] for b in batches])
    indices = np.concatenate([b["_index"] for b in batches])
    assert mask.sum() == 50 and not mask[50:].any()
    np.testing.assert_array_equal(indices[:50], np.arange(50))  # eval keeps source order
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches])[:50, 0, 0, 0], np.arange(50))


def test_host_sharding_is_disjoint_and_complete():
    single = list(zip(range(8), _train_pipeline(process_index=0, process_count=1).iterator()))
    hosts = [list(zip(range(8), _train_pipeline(process_index=p, process_count=2).iterator())) for p in range(2)]
    for (_, whole), (_, part0), (_, part1) in zip(single, *hosts, strict=True):
        assert part0["image"].shape == (4, 8, 8, 3)
        a, b = set(part0["_index"].tolist()), set(part1["_index"].tolist())
        assert not a & b
        assert a | b == set(whole["_index"].tolist())  # global batch independent of the host count
    # One eval epoch over two hosts: disjoint shards whose union is the whole source.
    source = _index_source(50)
    shards = []
    for p in range(2):
        pipeline = zd.make_pipeline(source, batch_size=8, train=False, process_index=p, process_count=2)
        batches = list(pipeline)
        assert len(batches) == pipeline.num_batches == 7
        shards.append(np.concatenate([b["_index"][b["_mask"]] for b in batches]).tolist())
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(50))
    with pytest.raises(ValueError, match="multiple of process_count"):
        zd.make_pipeline(source, batch_size=7, train=True, process_index=0, process_count=2)


def test_pipeline_batch_transform_mixup_is_resumable():
    mixup = zd.Mixup(10, label_smoothing=0.1)
    pipeline = _train_pipeline(batch_transform=mixup)
    iterator = pipeline.iterator()
    for _ in range(4):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(2)]
    assert expected[0]["label"].shape == (8, 10)
    np.testing.assert_allclose(expected[0]["label"].sum(-1), 1.0, rtol=1e-6)
    _assert_same_batches(
        expected, [b for b, _ in zip(_train_pipeline(batch_transform=mixup).iterator(state), range(2))]
    )


def test_to_global_arrays():
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    batch = next(iter(zd.make_pipeline(_index_source(), batch_size=16, train=True, num_threads=0)))
    arrays = zd.to_global_arrays(batch, sharding)
    assert arrays["image"].shape == (16, 8, 8, 3) and arrays["image"].sharding == sharding
    np.testing.assert_array_equal(np.asarray(arrays["label"]), batch["label"])


def test_zoo_data_imports_no_models_or_trainer():
    code = (
        "import sys, zoo.data; bad = [m for m in sys.modules if m.split('.')[0] in ('models', 'kernels') "
        "or m.startswith('zoo.train') or m.startswith('tensorflow')]; print(bad); assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-2000:]
