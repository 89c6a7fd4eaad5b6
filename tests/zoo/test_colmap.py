"""Tests for zoo.data.colmap: COLMAP model I/O (binary and text), scenes, splits, downscaling, the source, errors."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo.data as zd
from zoo.data import colmap

WIDTH, HEIGHT = 21, 15  # odd sizes: downscaling floor-divides


def look_at(center: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera (R, t) of a COLMAP camera (x right, y down, z forward) at `center` looking at `target`."""
    forward = np.asarray(target, float) - center
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return rotation, -rotation @ center


def circle_model(num_images: int = 6, num_points: int = 200, radius: float = 4.0, model: str = "PINHOLE", seed=0):
    """Cameras on a circle looking at the origin, random points with tracks, a few 2-D points per image."""
    rng = np.random.default_rng(seed)
    params = {"PINHOLE": [18.0, 17.5, 10.5, 7.5], "SIMPLE_PINHOLE": [18.0, 10.5, 7.5]}.get(
        model, [18.0, 10.5, 7.5, 0.01]
    )
    cameras = {
        1: colmap.Camera(1, model, WIDTH, HEIGHT, np.array(params)),
        2: colmap.Camera(2, "SIMPLE_PINHOLE", WIDTH, HEIGHT, np.array([16.25, 10.0, 7.0])),
    }
    images = {}
    for k in range(num_images):
        angle = 2 * np.pi * k / num_images
        rotation, translation = look_at(np.array([radius * np.cos(angle), radius * np.sin(angle), 1.0]))
        image_id = 10 + 3 * k  # ids need not be contiguous nor ordered like the names
        num_2d = k % 3
        images[image_id] = colmap.ColmapImage(
            id=image_id,
            qvec=colmap.rotmat_to_qvec(rotation),
            tvec=translation,
            camera_id=1 + (k % 2),
            name=f"view_{num_images - 1 - k:03d}.png",
            xys=rng.uniform(0, WIDTH, (num_2d, 2)),
            point3D_ids=np.array([-1, 5, 7][:num_2d], np.int64),
        )
    lengths = rng.integers(0, 4, num_points)
    points = colmap.Points3D(
        ids=np.arange(1, num_points + 1, dtype=np.int64) * 2,
        xyz=rng.normal(size=(num_points, 3)),
        rgb=rng.integers(0, 256, (num_points, 3), dtype=np.uint8),
        error=rng.uniform(0, 2, num_points),
        track_lengths=lengths.astype(np.int64),
        tracks=rng.integers(0, 1000, (int(lengths.sum()), 2)).astype(np.int32),
    )
    return cameras, images, points


def write_scene(root: Path, ext: str = ".bin", layout: str = "sparse/0", images_folder: str | None = None, **kwargs):
    """A scene folder with a model in `root/layout` and PNG images `images/` beside `sparse/`; returns the model."""
    cameras, images, points = circle_model(**kwargs)
    colmap.write_model(root / layout, cameras, images, points, ext=ext)
    folder = root / (images_folder or ("dense/images" if layout == "dense/sparse" else "images"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for image in images.values():
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(folder / image.name)
    return cameras, images, points


def assert_same_model(first, second) -> None:
    cameras_a, images_a, points_a = first
    cameras_b, images_b, points_b = second
    assert sorted(cameras_a) == sorted(cameras_b)
    for key, camera in cameras_a.items():
        other = cameras_b[key]
        assert (camera.id, camera.model, camera.width, camera.height) == (
            other.id,
            other.model,
            other.width,
            other.height,
        )
        np.testing.assert_array_equal(camera.params, other.params)
    assert sorted(images_a) == sorted(images_b)
    for key, image in images_a.items():
        other = images_b[key]
        assert (image.id, image.camera_id, image.name) == (other.id, other.camera_id, other.name)
        for field in ("qvec", "tvec", "xys", "point3D_ids"):
            np.testing.assert_array_equal(getattr(image, field), getattr(other, field), err_msg=field)
    for field in ("ids", "xyz", "rgb", "error", "track_lengths", "tracks"):
        np.testing.assert_array_equal(getattr(points_a, field), getattr(points_b, field), err_msg=field)
        assert getattr(points_a, field).dtype == getattr(points_b, field).dtype, field


# ------------------------------------------------------------------------------------------ model files
@pytest.mark.parametrize("ext", [".bin", ".txt"])
def test_model_round_trip_is_exact(tmp_path, ext):
    model = circle_model()
    colmap.write_model(tmp_path, *model, ext=ext)
    assert colmap.model_format(tmp_path) == ext
    assert_same_model(model, colmap.read_model(tmp_path))


def test_binary_and_text_models_agree(tmp_path):
    model = circle_model(num_points=0)
    colmap.write_model(tmp_path / "bin", *model, ext=".bin")
    colmap.write_model(tmp_path / "txt", *model, ext=".txt")
    assert_same_model(colmap.read_model(tmp_path / "bin"), colmap.read_model(tmp_path / "txt"))
    assert len(colmap.read_model(tmp_path / "txt")[2]) == 0


def test_images_text_with_empty_points_lines_and_names_with_spaces(tmp_path):
    (tmp_path / "images.txt").write_text(
        "# comment\n1 1 0 0 0 0 0 1 1 a b.jpg\n\n2 1 0 0 0 0 0 2 1 c.jpg\n1.5 2.5 -1 3 4 7\n"
    )
    images = colmap.read_images_text(tmp_path / "images.txt")
    assert [images[1].name, images[2].name] == ["a b.jpg", "c.jpg"]
    assert images[1].xys.shape == (0, 2)
    np.testing.assert_array_equal(images[2].xys, [[1.5, 2.5], [3, 4]])
    np.testing.assert_array_equal(images[2].point3D_ids, [-1, 7])


def test_quaternion_convention():
    # 90 degrees about z in COLMAP's (w, x, y, z) order maps x to y.
    half = np.sqrt(0.5)
    np.testing.assert_allclose(
        colmap.qvec_to_rotmat([half, 0, 0, half]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12
    )
    np.testing.assert_allclose(colmap.qvec_to_rotmat([0, 1, 0, 0]), np.diag([1.0, -1, -1]), atol=1e-12)
    rng = np.random.default_rng(0)
    for qvec in [*rng.normal(size=(50, 4)), [0, 0, 0, 1], [0, 0, 1, 0], [1e-9, 1, 0, 0]]:
        qvec = np.asarray(qvec) / np.linalg.norm(qvec) * np.sign(qvec[0] or 1)
        rotation = colmap.qvec_to_rotmat(qvec)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        back = colmap.rotmat_to_qvec(rotation)
        np.testing.assert_allclose(colmap.qvec_to_rotmat(back), rotation, atol=1e-12)
        assert back[0] >= 0


def projection_scene(root: Path, qvec) -> None:
    cameras = {3: colmap.Camera(3, "PINHOLE", 16, 12, np.array([10.0, 12.0, 8.0, 6.0]))}
    images = {5: colmap.ColmapImage(5, np.asarray(qvec, float), np.array([0.0, 0.0, 5.0]), 3, "a.png")}
    colmap.write_model(root / "sparse", cameras, images, colmap.Points3D.from_arrays(np.zeros((1, 3)), [[1, 2, 3]]))
    (root / "images").mkdir()
    Image.new("RGB", (16, 12)).save(root / "images" / "a.png")


@pytest.mark.parametrize(
    "qvec, expected",
    [([1, 0, 0, 0], (10.0, 7.2)), ([np.sqrt(0.5), 0, 0, np.sqrt(0.5)], (7.0, 8.4))],
    ids=["identity", "z90"],
)
@pytest.mark.parametrize("downscale", [1, 2])
def test_point_projects_to_the_expected_pixel(tmp_path, qvec, expected, downscale):
    # x_cam = R x_world + t; identity: (1, .5, 5) -> (10 * .2 + 8, 12 * .1 + 6); z90: (-.5, 1, 5) -> (7, 8.4).
    projection_scene(tmp_path, qvec)
    example = colmap.ColmapSource(tmp_path, split="all", downscale=downscale)[0]
    camera_point = example["R"] @ np.array([1.0, 0.5, 0.0]) + example["t"]
    pixel = example["K"] @ camera_point
    np.testing.assert_allclose(pixel[:2] / pixel[2], np.array(expected) / downscale, rtol=1e-6)
    assert example["image"].shape == (12 // downscale, 16 // downscale, 3)


# ----------------------------------------------------------------------------------------------- scenes
@pytest.mark.parametrize("ext", [".bin", ".txt"])
def test_scene_views_points_and_normalization(tmp_path, ext):
    cameras, images, points = write_scene(tmp_path, ext=ext)
    scene = colmap.load_scene(tmp_path)
    assert scene.model_dir == tmp_path / "sparse/0" and scene.image_dir == tmp_path / "images"
    assert [view.name for view in scene.images] == sorted(image.name for image in images.values())
    for view in scene.images:
        image = next(image for image in images.values() if image.name == view.name)
        assert view.image_id == image.id and view.path == tmp_path / "images" / view.name
        np.testing.assert_allclose(view.R, colmap.qvec_to_rotmat(image.qvec), atol=1e-6)
        assert view.R.dtype == view.t.dtype == view.K.dtype == np.float32
        # every camera looks at the origin: it lands on the principal point, in front of the camera
        origin = view.K @ view.t
        np.testing.assert_allclose(origin[:2] / origin[2], view.K[:2, 2], atol=1e-4)
        assert view.t[2] > 0
    fx, fy, cx, cy = cameras[1].params
    np.testing.assert_array_equal(scene.images[-1].K, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    np.testing.assert_array_equal(scene.images[-2].K, [[16.25, 0, 10], [0, 16.25, 7], [0, 0, 1]])  # SIMPLE_PINHOLE
    assert scene.points_xyz.dtype == np.float32 and scene.points_xyz.shape == (200, 3)
    np.testing.assert_array_equal(scene.points_rgb, points.rgb)
    center, radius = scene.normalization("all")  # centres on a circle of radius 4 at z = 1
    np.testing.assert_allclose(center, [0, 0, 1], atol=1e-5)
    assert radius == pytest.approx(1.1 * 4, rel=1e-5)
    centers = np.stack([view.center for view in scene.images])
    np.testing.assert_allclose(np.linalg.norm(centers[:, :2], axis=1), 4, rtol=1e-5)


def test_source_examples(tmp_path):
    write_scene(tmp_path, num_images=6)
    source = colmap.ColmapSource(tmp_path, split="train")
    assert len(source) == 5  # every 8th image from the first (index 0) is test
    example = source[0]
    assert set(example) == {"image", "K", "R", "t", "image_id", "width", "height"}
    assert example["image"].dtype == np.uint8 and example["image"].shape == (HEIGHT, WIDTH, 3)
    assert example["K"].shape == example["R"].shape == (3, 3) and example["t"].shape == (3,)
    assert example["image_id"].dtype == np.int32 and (int(example["width"]), int(example["height"])) == (WIDTH, HEIGHT)
    view = source.views[0]
    np.testing.assert_array_equal(example["image"], np.asarray(Image.open(view.path).convert("RGB")))
    assert int(example["image_id"]) == view.image_id
    restored = pickle.loads(pickle.dumps(source))  # grain worker processes get a pickled source
    np.testing.assert_array_equal(restored[-1]["image"], source[-1]["image"])
    with pytest.raises(IndexError):
        source[5]


def test_every_eighth_image_is_test(tmp_path):
    write_scene(tmp_path, num_images=17)
    scene = colmap.load_scene(tmp_path)
    np.testing.assert_array_equal(scene.splits["test"], [0, 8, 16])
    assert len(scene.splits["train"]) == 14 and len(scene.splits["all"]) == 17
    assert len(colmap.ColmapSource(scene, split=None)) == 17
    assert len(colmap.ColmapSource(tmp_path, split="train", holdout=4)) == 12
    with pytest.raises(ValueError, match="unknown split 'val'"):
        colmap.ColmapSource(scene, split="val")


@pytest.mark.parametrize("resample", ["bicubic", "box"])
def test_downscale_on_the_fly(tmp_path, resample):
    write_scene(tmp_path)
    full = colmap.ColmapSource(tmp_path, split="all")
    half = colmap.ColmapSource(tmp_path, split="all", downscale=2, resample=resample)
    assert not half.scene.prescaled
    for index in range(len(full)):
        big, small = full[index], half[index]
        assert small["image"].shape == (HEIGHT // 2, WIDTH // 2, 3)
        assert (int(small["width"]), int(small["height"])) == (WIDTH // 2, HEIGHT // 2)
        np.testing.assert_allclose(small["K"][:2], big["K"][:2] / 2)
        np.testing.assert_array_equal(small["R"], big["R"])
        method = {"bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX}[resample]
        expected = Image.fromarray(big["image"]).resize((WIDTH // 2, HEIGHT // 2), method)
        np.testing.assert_array_equal(small["image"], np.asarray(expected))


def test_downscale_uses_a_prescaled_folder(tmp_path):
    _, images, _ = write_scene(tmp_path)
    (tmp_path / "images_2").mkdir()
    for k, image in enumerate(images.values()):
        # one pixel larger than the floor (ImageMagick rounds): accepted and resized to the floor size
        size = (WIDTH // 2 + (k % 2), HEIGHT // 2)
        Image.new("RGB", size, (k, 2 * k, 3 * k)).save(tmp_path / "images_2" / image.name)
    source = colmap.ColmapSource(tmp_path, split="all", downscale=2)
    assert source.scene.prescaled and source.scene.image_dir == tmp_path / "images_2"
    for index, view in enumerate(source.views):
        example = source[index]
        k = list(images.values()).index(next(i for i in images.values() if i.name == view.name))
        assert example["image"].shape == (HEIGHT // 2, WIDTH // 2, 3)
        np.testing.assert_array_equal(example["image"][0, 0], [k, 2 * k, 3 * k])
    resized = colmap.ColmapSource(tmp_path, split="all", downscale=2, use_downscaled_folder=False)
    assert not resized.scene.prescaled and resized[0]["image"].shape == (HEIGHT // 2, WIDTH // 2, 3)
    (tmp_path / "images_2" / source.views[0].name).unlink()
    with pytest.raises(FileNotFoundError, match="images_2"):
        colmap.ColmapSource(tmp_path, split="all", downscale=2)


def phototourism(tmp_path: Path, rows: str, ext: str = ".bin") -> Path:
    """The Phototourism layout: <scene>/dense/{images,sparse}, <scene>/<scene>.tsv."""
    write_scene(tmp_path, ext=ext, layout="dense/sparse")
    (tmp_path / "gate.tsv").write_text("filename\tid\tsplit\tdataset\n" + rows)
    return tmp_path


def test_phototourism_layout_and_tsv_split(tmp_path):
    rows = (
        "view_000.png\t1\ttrain\tgate\n"
        "view_001.png\t2\ttest\tgate\n"
        "view_002.png\t3\ttrain\tgate\n"
        "view_003.png\t\ttrain\tgate\n"  # no id: dropped, as NeRF-W does
        "view_004.png\t5\ttest\tgate\n"
        "not_registered.jpg\t\ttest\tgate\n"
    )
    root = phototourism(tmp_path, rows)
    train = zd.get_source(f"colmap:{root}", split="train", downscale=2)
    assert isinstance(train, colmap.ColmapSource)
    assert train.scene.model_dir == root / "dense/sparse" and train.scene.image_dir == root / "dense/images"
    assert [view.name for view in train.views] == ["view_000.png", "view_002.png"]
    test = colmap.ColmapSource(train.scene, split="test")
    assert [view.name for view in test.views] == ["view_001.png", "view_004.png"]
    assert test[1]["image"].shape == (HEIGHT // 2, WIDTH // 2, 3)
    assert len(zd.get_source(f"colmap:{root}", split=None)) == 6
    assert "gate.tsv" in train.scene.split_rule
    # the dense/ folder as the scene: its model is dense/sparse, its .tsv one level up
    assert [view.name for view in colmap.ColmapSource(root / "dense", split="test").views] == [
        "view_001.png",
        "view_004.png",
    ]
    assert len(colmap.ColmapSource(root, split="test", tsv=False)) == 1  # the every-8th rule instead
    assert "colmap:<scene dir>" in zd.list_sources()


def test_tsv_naming_files_not_in_the_model(tmp_path):
    root = phototourism(tmp_path, "view_000.png\t1\ttrain\tgate\nghost_a.jpg\t7\ttest\tgate\nghost_b.jpg\t8\ttest\tg\n")
    with pytest.raises(ValueError, match=r"gate\.tsv.*2 images that are not in the COLMAP model: ghost_a.jpg, ghost_b"):
        colmap.ColmapSource(root)
    (tmp_path / "other.tsv").write_text("filename\tid\tsplit\tdataset\n")
    with pytest.raises(ValueError, match="several .tsv"):
        colmap.ColmapSource(root)
    (tmp_path / "bad.tsv").write_text("name,split\na,train\n")
    with pytest.raises(ValueError, match="bad.tsv.*expected tab-separated columns"):
        colmap.ColmapSource(root, tsv="bad.tsv")
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        colmap.ColmapSource(root, tsv=tmp_path / "nope.tsv")


# ----------------------------------------------------------------------------------------------- errors
def test_missing_scene_model_and_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist.*does not exist"):
        zd.get_source(f"colmap:{tmp_path / 'does_not_exist'}")
    with pytest.raises(FileNotFoundError, match=r"no COLMAP model.*sparse/0, sparse, dense/sparse"):
        colmap.ColmapSource(tmp_path)
    write_scene(tmp_path)
    (tmp_path / "sparse/0/points3D.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"points3D\.bin missing"):
        colmap.ColmapSource(tmp_path)


def test_missing_images_are_listed_at_construction(tmp_path):
    write_scene(tmp_path)
    for name in ("view_001.png", "view_004.png"):
        (tmp_path / "images" / name).unlink()
    with pytest.raises(FileNotFoundError, match=r"2 images .* missing: .*view_001\.png.*view_004\.png"):
        colmap.ColmapSource(tmp_path, split="all")
    shutil.rmtree(tmp_path / "images")
    with pytest.raises(FileNotFoundError, match=r"image folder .*images.* does not exist"):
        colmap.ColmapSource(tmp_path, split="all")


@pytest.mark.parametrize("name", ["cameras", "images", "points3D"])
def test_truncated_binary_files(tmp_path, name):
    colmap.write_model(tmp_path, *circle_model(num_points=20))
    path = tmp_path / f"{name}.bin"
    data = path.read_bytes()
    for cut in (3, 8 + 5, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(colmap.ColmapFormatError, match=rf"{name}\.bin.*truncated or corrupt.*byte offset \d+"):
            colmap.read_model(tmp_path)
    path.write_bytes(data + b"\0\0")
    with pytest.raises(ValueError, match=rf"{name}\.bin.*2 unexpected bytes after the last record at byte offset"):
        colmap.read_model(tmp_path)


def test_corrupt_binary_files(tmp_path):
    colmap.write_model(tmp_path, *circle_model(num_points=20))
    points = tmp_path / "points3D.bin"
    good = points.read_bytes()
    points.write_bytes(np.random.default_rng(0).integers(0, 256, len(good), dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"points3D\.bin.*byte offset"):
        colmap.read_points3D_binary(points)
    points.write_bytes((10**12).to_bytes(8, "little") + good[8:])
    with pytest.raises(ValueError, match=r"points3D\.bin.*says 1000000000000 points.*at byte offset 0"):
        colmap.read_points3D_binary(points)
    cameras = tmp_path / "cameras.bin"
    data = bytearray(cameras.read_bytes())
    data[8 + 4 : 8 + 8] = (77).to_bytes(4, "little")  # the model id of the first camera
    cameras.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"cameras\.bin.*unknown camera model id 77 at byte offset 12"):
        colmap.read_cameras_binary(cameras)
    images = tmp_path / "images.bin"
    data = images.read_bytes()
    images.write_bytes((1).to_bytes(8, "little") + data[8 : 8 + 64] + b"name_without_its_nul")
    with pytest.raises(ValueError, match=r"images\.bin.*no terminating NUL byte at byte offset 72"):
        colmap.read_images_binary(images)


def test_malformed_text_files(tmp_path):
    colmap.write_model(tmp_path, *circle_model(num_points=5), ext=".txt")
    path = tmp_path / "points3D.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:4] + ["7 1.0 2.0 three 1 2 3 0.5"] + lines[4:]) + "\n")
    with pytest.raises(colmap.ColmapFormatError, match=r"points3D\.txt', line 5: .*three"):
        colmap.read_model(tmp_path)
    path.write_text("1 0 0 0 1 2 3\n")
    with pytest.raises(ValueError, match=r"points3D\.txt', line 1: expected POINT3D_ID"):
        colmap.read_points3D_text(path)
    (tmp_path / "cameras.txt").write_text("# header\n1 PINHOLE 20 10 5 5 10\n")
    with pytest.raises(ValueError, match=r"cameras\.txt', line 2: a PINHOLE camera: expected 7 values, got 6"):
        colmap.read_cameras_text(tmp_path / "cameras.txt")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 1 1 a.jpg\n2 1 0 0 0 0 0 1 1 b.jpg\n")  # no points lines
    with pytest.raises(ValueError, match=r"images\.txt', line 2: the 2-D points of image 1 .*two lines"):
        colmap.read_images_text(tmp_path / "images.txt")


@pytest.mark.parametrize("ext", [".bin", ".txt"])
@pytest.mark.parametrize("model", ["SIMPLE_RADIAL", "OPENCV"])
def test_unsupported_camera_model(tmp_path, ext, model):
    cameras, images, points = circle_model(model=model)
    if model == "OPENCV":
        cameras[1].params = np.arange(8.0)
    colmap.write_model(tmp_path / "sparse", cameras, images, points, ext=ext)
    (tmp_path / "images").mkdir()
    with pytest.raises(
        ValueError, match=rf"cameras\{ext}'?: camera 1 uses the {model} model.*colmap image_undistorter"
    ):
        colmap.ColmapSource(tmp_path)


def test_corrupt_and_mismatched_image_files(tmp_path):
    write_scene(tmp_path)
    source = colmap.ColmapSource(tmp_path, split="all")
    source.views[1].path.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"cannot decode image .*view_001\.png.*UnidentifiedImageError"):
        source[1]
    data = source.views[2].path.read_bytes()
    source.views[2].path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot decode image .*view_002\.png"):
        source[2]
    Image.new("RGB", (WIDTH + 4, HEIGHT)).save(source.views[3].path)
    with pytest.raises(ValueError, match=r"view_003\.png' is 25x15 but camera \d expects 21x15.*undistorted"):
        source[3]
    np.testing.assert_array_equal(source[0]["image"].shape, (HEIGHT, WIDTH, 3))  # the others still read


def test_inconsistent_model_and_bad_options(tmp_path):
    cameras, images, points = write_scene(tmp_path)
    with pytest.raises(ValueError, match="holdout must be >= 2"):
        colmap.ColmapSource(tmp_path, holdout=1)
    with pytest.raises(ValueError, match="downscale must be a positive integer"):
        colmap.ColmapSource(tmp_path, downscale=1.5)
    with pytest.raises(ValueError, match="unknown resample"):
        colmap.ColmapSource(tmp_path, resample="nearest-ish")
    del cameras[2]
    colmap.write_model(tmp_path / "sparse/0", cameras, images, points)
    with pytest.raises(
        ValueError, match=r"images\.bin'?: image 'view_00\d\.png' refers to camera 2, which .*cameras\.bin"
    ):
        colmap.ColmapSource(tmp_path)
