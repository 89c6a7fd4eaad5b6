"""Tests for zoo.data.wild_scene: the embedded in-the-wild duck scene (COLMAP files, depth, occluders, clean copy)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo.data as zd
from tests.helpers import in_ci
from zoo.data import colmap
from zoo.data import wild_scene as ws
from zoo.data.video import VTEST_PATH

OPTIONS = {"resolution": 48, "num_train": 4, "num_test": 2, "num_points": 1500, "occluder_prob": 1.0}


def _require(path: Path, hint: str) -> None:
    if not Path(path).is_file():
        if in_ci():  # CI installs the Debian data (make system-data): missing data there is a failure
            raise FileNotFoundError(f"{path} missing; {hint}")
        pytest.skip(f"{path} missing; {hint}")


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(tmp_path_factory):
    old = os.environ.get("ZOO_CACHE_DIR")
    os.environ["ZOO_CACHE_DIR"] = str(tmp_path_factory.mktemp("zoo_cache"))
    yield
    if old is None:
        os.environ.pop("ZOO_CACHE_DIR", None)
    else:
        os.environ["ZOO_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, Path]:
    _require(ws.DUCK_PATH, "apt-get install assimp-testmodels")
    _require(Path(VTEST_PATH), "apt-get install opencv-doc")
    root = tmp_path_factory.mktemp("wild")
    return ws.build_wild_duck(root / "wild", **OPTIONS), ws.build_wild_duck(root / "clean", clean=True, **OPTIONS)


@pytest.fixture(scope="module")
def mesh() -> ws.TexturedMesh:
    _require(ws.DUCK_PATH, "apt-get install assimp-testmodels")
    return ws.load_duck()


def _model(root: Path):
    """Cameras, images and points read back in float64 straight from the binary files."""
    cameras, images, points = colmap.read_model(root / "sparse" / "0", ".bin")
    return cameras, sorted(images.values(), key=lambda image: image.name), points


def _camera(cameras, image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fx, fy, cx, cy = colmap.pinhole_intrinsics(cameras[image.camera_id])
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), image.rotation, image.tvec


def _raycast(mesh: ws.TexturedMesh, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Ray parameter of the nearest hit of origin + s * direction on any triangle (inf: miss); brute force
    Moller-Trumbore over every triangle, independent of the rasteriser."""
    triangles = mesh.vertices[mesh.faces]
    edge1, edge2 = triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    nearest = np.full(len(directions), np.inf)
    for start in range(0, len(directions), 64):
        d = directions[start : start + 64, None, :]
        p = np.cross(d, edge2[None])
        det = (edge1[None] * p).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = 1.0 / det
            offset = origin - triangles[None, :, 0]
            u = (offset * p).sum(-1) * inverse
            q = np.cross(offset, edge1[None])
            v = (d * q).sum(-1) * inverse
            s = (edge2[None] * q).sum(-1) * inverse
        hit = (np.abs(det) > 1e-15) & (u >= 0) & (v >= 0) & (u + v <= 1) & (s > 1e-9)
        nearest[start : start + 64] = np.where(hit, s, np.inf).min(axis=1)
    return nearest


def test_colmap_files_read_back_through_the_colmap_source(scenes):
    wild, _ = scenes
    cameras, images, points = _model(wild)
    assert [c.model for c in cameras.values()] == ["PINHOLE"] and len(images) == 6 and len(points) == 1500
    train = zd.get_source(f"colmap:{wild}", split="train")
    test = zd.ColmapSource(train.scene, split="test")
    assert (len(train), len(test)) == (4, 2) and ws.SPLIT_FILE in train.scene.split_rule
    meta = json.loads((wild / "scene.json").read_text())
    assert [r["name"] for r in meta["images"] if r["split"] == "test"] == [v.name for v in test.views]
    example = train[0]
    assert example["image"].shape == (48, 48, 3) and example["image"].dtype == np.uint8
    source = zd.get_source("wild_duck", split="test", **OPTIONS)  # the registered source, built in the cache
    item = source[1]
    assert set(item) >= {"image", "K", "R", "t", "depth", "occluder_mask"}
    assert item["depth"].shape == (48, 48) and item["occluder_mask"].shape == (48, 48)
    assert zd.get_source("wild_duck", split="test", **OPTIONS).root == source.root  # cached: built once
    # Deterministic: the cached build (same options, same seed) writes the same files as the one above.
    for name in ("sparse/0/images.bin", "sparse/0/points3D.bin", "images/001.png", "masks/005.png", "depth/003.npy"):
        assert (source.root / name).read_bytes() == (wild / name).read_bytes(), name


def test_depth_equals_an_independent_ray_cast(scenes, mesh):
    wild, _ = scenes
    cameras, images, _ = _model(wild)
    for image in images[:3]:
        K, R, t = _camera(cameras, image)
        depth = np.load(wild / "depth" / f"{Path(image.name).stem}.npy").astype(np.float64)
        height, width = depth.shape
        columns, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        rays_cam = np.stack([columns.ravel(), rows.ravel(), np.ones(height * width)], -1) @ np.linalg.inv(K).T
        hit = _raycast(mesh, -R.T @ t, rays_cam @ R)  # camera z of each ray is 1, so the ray parameter is z
        covered = np.isfinite(hit)
        np.testing.assert_array_equal(covered, depth.ravel() > 0)  # the same silhouette
        # Depth is stored as float32: one float32 ulp (2^-23 relative) bounds the rounding.
        np.testing.assert_allclose(depth.ravel()[covered], hit[covered], rtol=2.0**-23, atol=0)


def test_surface_points_project_onto_the_duck_at_the_saved_depth(scenes, mesh):
    wild, _ = scenes
    cameras, images, _ = _model(wild)
    surface = np.load(wild / "surface_points.npz")
    xyz, normal = surface["xyz"], surface["normal"]
    for image in images[:3]:
        K, R, t = _camera(cameras, image)
        depth = np.load(wild / "depth" / f"{Path(image.name).stem}.npy").astype(np.float64)
        height, width = depth.shape
        cam = xyz @ R.T + t
        z = cam[:, 2]
        u, v = K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2]
        assert u.min() >= 0 and v.min() >= 0 and u.max() < width and v.max() < height  # the duck is in frame
        center = -R.T @ t
        visible = _raycast(mesh, center, xyz - center) >= 1 - 1e-9  # nothing in front of the point
        view = (xyz - center) / np.linalg.norm(xyz - center, axis=1, keepdims=True)
        facing = np.abs((normal * view).sum(1)) >= 0.5  # at most 60 degrees from the ray
        padded = np.pad(depth, 1)
        row, col = np.floor(v).astype(int) + 1, np.floor(u).astype(int) + 1
        block = np.stack([padded[row + di, col + dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)], axis=1)
        assert (block[visible] > 0).any(axis=1).all()  # every visible point lands on duck pixels
        # A pixel centre of the 3x3 block is within 1.5 * sqrt(2) pixels of the point's projection; on a surface at
        # most 60 degrees from the ray that is a depth change of at most 1.5 * sqrt(2) * z / (f * cos 60).
        bound = 1.5 * np.sqrt(2) * z / (K[0, 0] * 0.5)
        error = np.abs(block - z[:, None]).min(axis=1)
        check = visible & facing
        assert check.sum() >= 50  # not vacuous: about a seventh of the samples are visible and facing
        assert (error[check] <= bound[check]).all(), (error[check] / bound[check]).max()
        nearest = np.where(block > 0, block, np.inf).min(axis=1)
        assert (z >= nearest - bound).all()  # no surface point lies in front of the saved depth


def _rerender(mesh, cameras, image, appearance, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    K, R, t = _camera(cameras, image)
    camera = cameras[image.camera_id]
    geometry = ws.render_geometry(mesh, R, t, K, camera.width, camera.height, 3)
    return ws.shade(geometry, appearance, background, 3)


def test_occluders_are_masked_pasted_people(scenes, mesh):
    wild, _ = scenes
    cameras, images, _ = _model(wild)
    meta = json.loads((wild / "scene.json").read_text())
    for image, record in zip(images, meta["images"], strict=True):
        mask = np.asarray(Image.open(wild / "masks" / f"{Path(image.name).stem}.png")) >= 128
        pasted = np.asarray(Image.open(wild / "images" / image.name))
        rendered = _rerender(mesh, cameras, image, record["appearance"])
        assert (mask.sum() > 0) == bool(record["occluders"]) and mask.sum() == record["occluder_pixels"]
        if record["occluders"]:
            pixels = [o["pixels"] for o in record["occluders"]]
            assert max(pixels) <= mask.sum() <= sum(pixels)  # the union of the people's masks
        if record["split"] == "test":
            assert not mask[:, mask.shape[1] // 2 :].any()  # the scored right half of a test view is clean
        # Outside the mask the image is exactly the render; inside, the pasted person's pixels replace it (a few may
        # coincide, e.g. white clothing on the white backdrop, so most and not all must differ).
        np.testing.assert_array_equal(pasted[~mask], rendered[~mask])
        if mask.any():
            assert (pasted[mask] != rendered[mask]).any(axis=-1).mean() > 0.5
    assert sum(bool(r["occluders"]) for r in meta["images"]) == len(images)  # occluder_prob = 1


def test_clean_copy_shares_geometry_and_has_one_appearance(scenes, mesh):
    wild, clean = scenes
    wild_model, clean_model = _model(wild), _model(clean)
    assert wild_model[0][1].params.tolist() == clean_model[0][1].params.tolist()
    for a, b in zip(wild_model[1], clean_model[1], strict=True):
        assert a.name == b.name and a.qvec.tolist() == b.qvec.tolist() and a.tvec.tolist() == b.tvec.tolist()
        stem = Path(a.name).stem
        assert (wild / "depth" / f"{stem}.npy").read_bytes() == (clean / "depth" / f"{stem}.npy").read_bytes()
        assert not np.asarray(Image.open(clean / "masks" / f"{stem}.png")).any()
        # The clean image is the canonical render, with nothing pasted.
        clean_image = np.asarray(Image.open(clean / "images" / a.name))
        np.testing.assert_array_equal(clean_image, _rerender(mesh, clean_model[0], b, ws.canonical_appearance()))
    np.testing.assert_array_equal(wild_model[2].xyz, clean_model[2].xyz)
    np.testing.assert_array_equal(wild_model[2].rgb, clean_model[2].rgb)
    assert (wild / ws.SPLIT_FILE).read_bytes() == (clean / ws.SPLIT_FILE).read_bytes()


def test_appearance_differs_across_images(scenes):
    wild, clean = scenes
    meta = json.loads((wild / "scene.json").read_text())
    ratios = []
    for record in meta["images"]:
        stem = Path(record["name"]).stem
        depth = np.load(wild / "depth" / f"{stem}.npy")
        mask = np.asarray(Image.open(wild / "masks" / f"{stem}.png")) >= 128
        duck = (depth > 0) & ~mask
        wild_image = np.asarray(Image.open(wild / "images" / record["name"]), np.float64)[duck]
        clean_image = np.asarray(Image.open(clean / "images" / record["name"]), np.float64)[duck]
        # Per image, the in-the-wild duck is far (more than 2 of 255 levels on average) from the canonical one.
        assert np.abs(wild_image - clean_image).mean() > 2.0
        ratios.append(wild_image.mean(axis=0) / clean_image.mean(axis=0))
    ratios = np.array(ratios)
    # No two images share an appearance: their mean colour ratios to the clean render differ by more than the
    # 1/255 quantisation of a mean over hundreds of pixels could explain (0.5 levels out of a mean above 50).
    gaps = np.abs(ratios[:, None] - ratios[None]).max(axis=-1) + np.eye(len(ratios))
    assert gaps.min() > 0.5 / 50


def test_missing_assets_name_the_package(tmp_path, scenes):
    with pytest.raises(FileNotFoundError, match="assimp-testmodels"):
        ws.build_wild_duck(tmp_path / "a", duck=tmp_path / "duck.dae", **OPTIONS)
    with pytest.raises(FileNotFoundError, match="opencv-doc"):
        ws.build_wild_duck(tmp_path / "b", vtest=tmp_path / "vtest.avi", **OPTIONS)
    with pytest.raises(ValueError, match="supersample must be odd"):
        ws.build_wild_duck(tmp_path / "c", supersample=2, **OPTIONS)
