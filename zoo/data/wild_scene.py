"""An embedded "in-the-wild" multi-view scene made offline from real assets: the textured Collada duck ("wild_duck").

    train = zoo.data.get_source("wild_duck", split="train")      # ColmapSource examples + "depth", "occluder_mask"
    test = zoo.data.get_source("wild_duck", split="test")
    clean = zoo.data.get_source("wild_duck_clean", split="train")  # same cameras, constant appearance, no occluders
    root = build_wild_duck("/tmp/duck")                            # or write the scene folder yourself
    same = zoo.data.get_source(f"colmap:{train.root}", split="train")  # it is a plain COLMAP scene

Assets (specs/offline_data.md §3, §2b): the duck of Debian's `assimp-testmodels` (`Collada/duck.dae`, 2399
vertices, 4212 faces, the 512x512 texture `duckCM.tga`; BSD-3-Clause in Debian, the duck is Sony's COLLADA sample,
CC-BY in the glTF samples, so attribute it), loaded with trimesh + pycollada; the transient occluders are real
pedestrians cut from opencv-doc's `vtest.avi` with their background-subtraction masks (`zoo.data.video`).

Rendering: a vectorised numpy triangle z-buffer rasteriser (pixel centres at +0.5, as COLMAP) with
perspective-correct barycentrics (1/z interpolated in screen space), bilinear texture lookup and smooth vertex
normals, supersampled `supersample` x `supersample` (odd, so the centre sub-pixel is the output pixel centre, where
depth is taken) and box-filtered. The duck is scaled into the unit sphere (world units: its bounding-sphere radius;
Y up, as in the file). Cameras: PINHOLE, on the upper hemisphere (golden-angle spiral in azimuth, elevations
`elevation_deg`), looking at the origin with a small jitter of the aim point; every `test_every`-th view is "test".

Appearance ("in the wild"): every image has its own sun (a random direction on the upper hemisphere) and ambient
level (Lambertian, two-sided normals, in linear light: texture sRGB -> linear), white balance (per-channel gains,
log-normal, green fixed at 1) and exposure (2^EV); then clipping and sRGB encoding. The background is a constant
colour in the final image, the same in every view and not changed by the per-image appearance (a keyed-out
backdrop, the way the renderer's background colour models it; `background`, default white). The clean copy uses
one canonical sun, ambient 0.4, unit gains and EV 0.

Occluders: with probability `occluder_prob` an image gets 1 or 2 people (a vtest blob that looks like one
standing person, cropped to its box, resized to 30-65% of the image height, pasted with its binary mask at a
random place; in test views only inside the left half, so the right half that the appearance protocol scores stays
clean while the left half the appearance comes from has transients). `masks/<stem>.png` is the union of the
pasted masks (255 = occluder).

Layout written (the `colmap:` source reads it):
    sparse/0/{cameras,images,points3D}.bin   one PINHOLE camera; points3D: `num_points` area-uniform surface
                                             samples coloured by the canonically lit texture, plus Gaussian noise
                                             of `points_noise` (world units), no tracks ("SfM-like")
    images/<NNN>.png  depth/<NNN>.npy (float32 camera z, 0 = background)  masks/<NNN>.png (uint8 0/255)
    wild_duck.tsv                            NeRF-W style split file (filename id split dataset)
    surface_points.npz                       exact surface samples: xyz, normal (face), rgb, face
    scene.json                               parameters, per-image appearance and occluder boxes

Everything is seeded (`seed`). Built scenes are cached under `$ZOO_CACHE_DIR` (default `~/.cache/zoo`) by a hash of
the parameters and the asset files; a build takes a few seconds at 128x128 (the first one also decodes vtest.avi).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from zoo.data import colmap
from zoo.imaging import join_with_gap, overlay_mask

ASSIMP_COLLADA = Path("/usr/share/assimp/models/Collada")
DUCK_PATH = ASSIMP_COLLADA / "duck.dae"
DUCK_TEXTURE_PATH = ASSIMP_COLLADA / "duckCM.tga"
SCENE_VERSION = 1  # bump when the rendering changes, so cached scenes are rebuilt
SPLIT_FILE = "wild_duck.tsv"
CANONICAL_LIGHT = (0.45, 1.0, 0.6)  # world direction towards the sun of the clean copy (Y up)
CANONICAL_AMBIENT = 0.4


# ------------------------------------------------------------------------------------------------- assets
@dataclasses.dataclass(eq=False)
class TexturedMesh:
    """A triangle mesh in the unit sphere: per-vertex positions, UVs and smooth normals, and an RGB texture."""

    vertices: np.ndarray  # float64 (V, 3)
    faces: np.ndarray  # int64 (F, 3)
    uv: np.ndarray  # float64 (V, 2), origin bottom-left (COLLADA / OpenGL)
    normals: np.ndarray  # float64 (V, 3), unit
    texture: np.ndarray  # float32 (Ht, Wt, 3), sRGB in [0, 1], row 0 = top

    @property
    def face_normals(self) -> np.ndarray:
        """Unit geometric normals (F, 3) from the winding."""
        a, b, c = (self.vertices[self.faces[:, k]] for k in range(3))
        normal = np.cross(b - a, c - a)
        return normal / np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-30)


def load_duck(path: str | os.PathLike = DUCK_PATH, texture: str | os.PathLike | None = None) -> TexturedMesh:
    """The assimp-testmodels duck, centred on its bounding box and scaled to a unit bounding sphere.

    trimesh does not attach the .tga (specs/offline_data.md §3), so the texture is read with PIL from `texture`
    (default: `duckCM.tga` beside the .dae).
    """
    path = Path(path)
    texture_path = Path(texture) if texture is not None else path.with_name("duckCM.tga")
    for needed in (path, texture_path):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{needed} not found; the duck ships in Debian's assimp-testmodels package "
                "(apt-get install assimp-testmodels, or `make system-data`)"
            )
    try:
        import collada  # noqa: F401  (trimesh reads .dae through pycollada)
        import trimesh
    except ImportError as error:
        raise ImportError(
            f"loading {path.name} needs trimesh and pycollada ({error}); pip install trimesh pycollada"
        ) from error
    loaded = trimesh.load(str(path), process=False)
    mesh = loaded.to_mesh() if isinstance(loaded, trimesh.Scene) else loaded
    uv = getattr(mesh.visual, "uv", None)
    if uv is None or len(uv) != len(mesh.vertices):
        raise ValueError(f"{path}: expected per-vertex texture coordinates, got {type(mesh.visual).__name__}")
    vertices = np.asarray(mesh.vertices, np.float64)
    center = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    vertices = vertices - center
    vertices /= np.linalg.norm(vertices, axis=-1).max()
    with PILImage.open(texture_path) as image:
        rgb = np.asarray(image.convert("RGB"), np.float32) / 255.0
    normals = np.array(mesh.vertex_normals, np.float64)
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-30)
    return TexturedMesh(vertices, np.asarray(mesh.faces, np.int64), np.asarray(uv, np.float64), normals, rgb)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve (IEC 61966-2-1) on values in [0, 1]."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The sRGB encoding curve on linear values, clipped to [0, 1] first."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of an (Ht, Wt, C) texture at UVs (..., 2) with v up (texel centres at +0.5, edges clamped)."""
    height, width = texture.shape[:2]
    x = np.clip(uv[..., 0] * width - 0.5, 0, width - 1)
    y = np.clip((1.0 - uv[..., 1]) * height - 0.5, 0, height - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


# --------------------------------------------------------------------------------------------- rasteriser
@dataclasses.dataclass(eq=False)
class Fragments:
    """Per-pixel z-buffer result: the visible face (-1: none), its perspective-correct barycentrics and depth."""

    face: np.ndarray  # int64 (H, W)
    barycentric: np.ndarray  # float64 (H, W, 3)
    depth: np.ndarray  # float64 (H, W), camera z; 0 where no face

    @property
    def covered(self) -> np.ndarray:
        """(H, W) bool: a face is visible."""
        return self.face >= 0


def rasterize(
    points_cam: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    near: float = 1e-3,
    max_fragments: int = 2_000_000,
) -> Fragments:
    """Z-buffer rasterisation of triangles given in camera coordinates (x right, y down, z forward).

    A pixel (row i, column j) samples its centre (j + 0.5, i + 0.5); a triangle covers it when the three
    screen-space edge functions agree in sign (either winding: no back-face culling). Depth is z = 1 / interpolated
    1/z, exact for planar triangles, and the returned barycentrics are perspective-correct. Triangles are processed
    in chunks of at most `max_fragments` candidate pixels (their bounding boxes), each chunk resolved per pixel by
    sorting on (pixel, z) and merged into the running buffer. Triangles with a vertex at z <= near are dropped.
    """
    points_cam = np.asarray(points_cam, np.float64)
    faces = np.asarray(faces, np.int64)
    K = np.asarray(K, np.float64)
    z = points_cam[:, 2]
    safe_z = np.where(z > near, z, 1.0)
    u = K[0, 0] * points_cam[:, 0] / safe_z + K[0, 2]
    v = K[1, 1] * points_cam[:, 1] / safe_z + K[1, 2]
    tu, tv, tz = u[faces], v[faces], z[faces]  # (F, 3)
    area = (tu[:, 1] - tu[:, 0]) * (tv[:, 2] - tv[:, 0]) - (tv[:, 1] - tv[:, 0]) * (tu[:, 2] - tu[:, 0])
    x_min = np.maximum(np.ceil(tu.min(axis=1) - 0.5), 0)
    x_max = np.minimum(np.floor(tu.max(axis=1) - 0.5), width - 1)
    y_min = np.maximum(np.ceil(tv.min(axis=1) - 0.5), 0)
    y_max = np.minimum(np.floor(tv.max(axis=1) - 0.5), height - 1)
    box_w = np.maximum(x_max - x_min + 1, 0).astype(np.int64)
    box_h = np.maximum(y_max - y_min + 1, 0).astype(np.int64)
    valid = (tz > near).all(axis=1) & (np.abs(area) > 1e-12)
    counts = np.where(valid, box_w * box_h, 0)
    x_min, y_min = x_min.astype(np.int64), y_min.astype(np.int64)

    best_z = np.full(height * width, np.inf)
    best_face = np.full(height * width, -1, np.int64)
    best_bary = np.zeros((height * width, 3))
    candidates = np.flatnonzero(counts)
    cumulative = np.cumsum(counts[candidates])
    start = 0
    while start < len(candidates):
        # Chunk boundaries: as many triangles as fit in max_fragments (at least one).
        stop = max(
            int(
                np.searchsorted(cumulative, cumulative[start] - counts[candidates[start]] + max_fragments, side="right")
            ),
            start + 1,
        )
        chunk = candidates[start:stop]
        start = stop
        n = counts[chunk]
        tri = np.repeat(chunk, n)
        local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        px = x_min[tri] + local % box_w[tri]
        py = y_min[tri] + local // box_w[tri]
        sx, sy = px + 0.5, py + 0.5
        u0, u1, u2 = tu[tri, 0], tu[tri, 1], tu[tri, 2]
        v0, v1, v2 = tv[tri, 0], tv[tri, 1], tv[tri, 2]
        w0 = ((u2 - u1) * (sy - v1) - (v2 - v1) * (sx - u1)) / area[tri]
        w1 = ((u0 - u2) * (sy - v2) - (v0 - v2) * (sx - u2)) / area[tri]
        w2 = 1.0 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        tri, px, py, w = tri[inside], px[inside], py[inside], np.stack([w0, w1, w2], -1)[inside]
        inverse_z = (w / tz[tri]).sum(axis=1)
        depth = 1.0 / inverse_z
        pixel = py * width + px
        order = np.lexsort((depth, pixel))
        first = order[np.r_[True, pixel[order][1:] != pixel[order][:-1]]] if len(order) else order
        pixel, depth = pixel[first], depth[first]
        better = depth < best_z[pixel]
        pixel, first = pixel[better], first[better]
        best_z[pixel] = depth[better]
        best_face[pixel] = tri[first]
        best_bary[pixel] = (w[first] / tz[tri[first]]) * depth[better][:, None]
    covered = best_face >= 0
    return Fragments(
        face=best_face.reshape(height, width),
        barycentric=best_bary.reshape(height, width, 3),
        depth=np.where(covered, best_z, 0.0).reshape(height, width),
    )


# ------------------------------------------------------------------------------------------------ cameras
def look_at(center: np.ndarray, target: np.ndarray, up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """World-to-camera rotation (3, 3) of an OpenCV / COLMAP camera (x right, y down, z forward)."""
    forward = np.asarray(target, np.float64) - center
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, np.float64))
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward])


def hemisphere_cameras(
    count: int, *, distance: float, elevation_deg: tuple[float, float], aim_jitter: float, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(R, t) world-to-camera of `count` cameras on the upper (Y > 0) hemisphere looking near the origin.

    Azimuths follow the golden angle and elevations rise evenly, so any subset of every k-th view still covers
    the hemisphere.
    """
    golden = np.pi * (3.0 - np.sqrt(5.0))
    low, high = np.deg2rad(elevation_deg)
    cameras = []
    for index in range(count):
        azimuth = index * golden + rng.uniform(-0.1, 0.1)
        elevation = low + (high - low) * (index + rng.uniform(0.2, 0.8)) / count
        center = distance * np.array(
            [np.cos(elevation) * np.cos(azimuth), np.sin(elevation), np.cos(elevation) * np.sin(azimuth)]
        )
        rotation = look_at(center, rng.uniform(-aim_jitter, aim_jitter, 3))
        cameras.append((rotation, -rotation @ center))
    return cameras


# ---------------------------------------------------------------------------------------------- occluders
def person_cutouts(
    path: str | os.PathLike | None = None, *, min_height: int = 30, min_aspect: float = 1.6
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(uint8 RGB patch, bool mask) crops of the vtest.avi person blobs that look like one standing person.

    Blobs at least `min_height` pixels tall (half resolution), `min_aspect` times taller than wide, not touching the
    frame border (cut-off people), in frame order. `path`: vtest.avi (default: opencv-doc's copy).
    """
    from scipy import ndimage

    from zoo.data.video import VTEST_PATH, vtest_frames_and_masks

    data = vtest_frames_and_masks(VTEST_PATH if path is None else path)
    frames, labels = data["frames"], data["labels"]
    cutouts = []
    for frame, label in zip(frames, labels, strict=True):
        for blob, box in enumerate(ndimage.find_objects(label), start=1):
            if box is None:
                continue
            rows, cols = box
            height, width = rows.stop - rows.start, cols.stop - cols.start
            touches = rows.start == 0 or cols.start == 0 or rows.stop == label.shape[0] or cols.stop == label.shape[1]
            if height >= min_height and height >= min_aspect * width and not touches:
                cutouts.append((frame[box].copy(), label[box] == blob))
    if not cutouts:
        raise ValueError("no single-person blobs found in vtest.avi (is it the opencv-doc file?)")
    return cutouts


def paste_occluders(
    image: np.ndarray,
    cutouts: Sequence[tuple[np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    *,
    count: int,
    region: str = "any",
    height_range: tuple[float, float] = (0.3, 0.65),
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Paste `count` people into a uint8 image; returns (image, bool occluder mask, per-person records).

    region "any": the person may stand anywhere (partly outside the frame); "left": entirely in the left half.
    """
    height, width = image.shape[:2]
    out, mask, records = image.copy(), np.zeros((height, width), bool), []
    for _ in range(count):
        which = int(rng.integers(len(cutouts)))
        patch, patch_mask = cutouts[which]
        target_h = max(4, round(rng.uniform(*height_range) * height))
        target_w = max(2, round(patch.shape[1] * target_h / patch.shape[0]))
        if region == "left" and target_w > width // 2:
            target_h, target_w = round(target_h * (width // 2) / target_w), width // 2
        size = (target_w, target_h)
        resized = np.asarray(PILImage.fromarray(patch).resize(size, PILImage.Resampling.BILINEAR))
        resized_mask = (
            np.asarray(PILImage.fromarray(patch_mask.astype(np.uint8) * 255).resize(size, PILImage.Resampling.BILINEAR))
            >= 128
        )
        if region == "left":
            left = int(rng.integers(0, width // 2 - target_w + 1))
        else:
            left = int(rng.integers(-target_w // 3, width - 2 * target_w // 3 + 1))
        top = round(rng.uniform(0.55, 1.1) * height) - target_h
        # Clip the patch to the frame.
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + target_h, height), min(left + target_w, width)
        if y1 <= y0 or x1 <= x0:
            continue
        piece = resized_mask[y0 - top : y1 - top, x0 - left : x1 - left]
        out[y0:y1, x0:x1][piece] = resized[y0 - top : y1 - top, x0 - left : x1 - left][piece]
        mask[y0:y1, x0:x1] |= piece
        records.append({"cutout": which, "box": [x0, y0, x1, y1], "pixels": int(piece.sum())})
    return out, mask, records


# ----------------------------------------------------------------------------------------------- rendering
@dataclasses.dataclass(eq=False)
class ViewGeometry:
    """Supersampled G-buffer of one view: coverage, albedo (linear), world normals; and depth at output pixels."""

    covered: np.ndarray  # bool (H*s, W*s)
    albedo: np.ndarray  # float64 (H*s, W*s, 3), linear
    normal: np.ndarray  # float64 (H*s, W*s, 3), world, facing the camera
    depth: np.ndarray  # float32 (H, W)


def render_geometry(
    mesh: TexturedMesh, R: np.ndarray, t: np.ndarray, K: np.ndarray, width: int, height: int, supersample: int
) -> ViewGeometry:
    """Rasterise the mesh at `supersample` x the resolution and look up texture and normals per sub-pixel."""
    s = supersample
    K_s = np.diag([s, s, 1.0]) @ K  # pixel centres at +0.5 on both grids, so the scaling is exact
    points_cam = mesh.vertices @ R.T + t
    fragments = rasterize(points_cam, mesh.faces, K_s, width * s, height * s)
    covered = fragments.covered
    # Attributes only where a face is visible (about a third of the sub-pixels).
    face = fragments.face[covered]
    bary = fragments.barycentric[covered][..., None]  # (P, 3, 1)
    corners = mesh.faces[face]  # (P, 3)
    uv = (bary * mesh.uv[corners]).sum(axis=1)
    normal = (bary * mesh.normals[corners]).sum(axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-30)
    # Two-sided shading: turn every normal towards the camera (the mesh is not closed).
    center = -R.T @ t
    surface = (bary * mesh.vertices[corners]).sum(axis=1)
    toward = np.sign(((center - surface) * normal).sum(axis=-1, keepdims=True))
    normals = np.zeros(covered.shape + (3,))
    normals[covered] = normal * np.where(toward == 0, 1.0, toward)
    albedo = np.zeros(covered.shape + (3,))
    albedo[covered] = srgb_to_linear(sample_texture(mesh.texture, uv).astype(np.float64))
    centre = s // 2
    depth = fragments.depth[centre::s, centre::s].astype(np.float32)
    return ViewGeometry(covered, albedo, normals, depth)


def shade(
    geometry: ViewGeometry, appearance: dict[str, Any], background: Sequence[float], supersample: int
) -> np.ndarray:
    """uint8 (H, W, 3) image: Lambertian sun + ambient, white balance and exposure, sRGB, box filter, backdrop."""
    light = np.asarray(appearance["light"], np.float64)
    light /= np.linalg.norm(light)
    ambient = float(appearance["ambient"])
    lambert = np.maximum((geometry.normal * light).sum(axis=-1, keepdims=True), 0.0)
    radiance = geometry.albedo * (ambient + (1.0 - ambient) * lambert)
    sensor = radiance * np.asarray(appearance["gains"]) * 2.0 ** float(appearance["exposure_ev"])
    coverage = geometry.covered[..., None].astype(np.float64)
    colour = linear_to_srgb(sensor) * coverage
    s = supersample
    h, w = colour.shape[0] // s, colour.shape[1] // s
    colour = colour.reshape(h, s, w, s, 3).mean(axis=(1, 3))
    alpha = coverage.reshape(h, s, w, s, 1).mean(axis=(1, 3))
    image = colour + (1.0 - alpha) * np.asarray(background, np.float64)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def random_appearance(
    rng: np.random.Generator,
    *,
    ev_range: tuple[float, float] = (-1.0, 0.6),
    gain_sigma: float = 0.15,
    ambient_range: tuple[float, float] = (0.15, 0.55),
) -> dict[str, Any]:
    """An in-the-wild appearance: sun direction (upper hemisphere, elevation 10-80 deg), ambient, gains, EV."""
    azimuth, elevation = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(10, 80))
    light = [np.cos(elevation) * np.cos(azimuth), np.sin(elevation), np.cos(elevation) * np.sin(azimuth)]
    gains = np.exp(rng.normal(0.0, gain_sigma, 3))
    gains[1] = 1.0
    return {
        "light": [float(x) for x in light],
        "ambient": float(rng.uniform(*ambient_range)),
        "gains": [float(x) for x in gains],
        "exposure_ev": float(rng.uniform(*ev_range)),
    }


def canonical_appearance() -> dict[str, Any]:
    """The clean copy's appearance, identical in every image."""
    light = np.asarray(CANONICAL_LIGHT) / np.linalg.norm(CANONICAL_LIGHT)
    return {
        "light": [float(x) for x in light],
        "ambient": CANONICAL_AMBIENT,
        "gains": [1.0, 1.0, 1.0],
        "exposure_ev": 0.0,
    }


def surface_samples(mesh: TexturedMesh, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Area-uniform surface points: xyz, face normal, canonically lit sRGB colour (uint8) and face index."""
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=-1)
    face = rng.choice(len(areas), size=count, p=areas / areas.sum())
    r1, r2 = np.sqrt(rng.uniform(size=(count, 1))), rng.uniform(size=(count, 1))
    weights = np.concatenate([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)  # uniform on the triangle
    corners = mesh.faces[face]
    xyz = (weights[..., None] * mesh.vertices[corners]).sum(axis=1)
    uv = (weights[..., None] * mesh.uv[corners]).sum(axis=1)
    normal = mesh.face_normals[face]
    light = np.asarray(canonical_appearance()["light"])
    lambert = np.abs(normal @ light)[:, None]  # two-sided, as the renderer
    albedo = srgb_to_linear(sample_texture(mesh.texture, uv).astype(np.float64))
    rgb = linear_to_srgb(albedo * (CANONICAL_AMBIENT + (1 - CANONICAL_AMBIENT) * lambert))
    return {"xyz": xyz, "normal": normal, "rgb": np.round(rgb * 255).astype(np.uint8), "face": face}


# ------------------------------------------------------------------------------------------------- building
@dataclasses.dataclass(frozen=True)
class WildSceneConfig:
    """Parameters of a built scene (all of them enter the cache key)."""

    resolution: int = 128
    num_train: int = 40
    num_test: int = 10
    seed: int = 0
    supersample: int = 3
    fov_deg: float = 45.0
    distance: float = 2.7
    elevation_deg: tuple[float, float] = (5.0, 65.0)
    aim_jitter: float = 0.05
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    occluder_prob: float = 0.7
    num_points: int = 4000
    points_noise: float = 0.005

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8 pixels, got {self.resolution}")
        if self.num_train < 1 or self.num_test < 1:
            raise ValueError(f"num_train and num_test must be >= 1, got {self.num_train}, {self.num_test}")
        if self.supersample < 1 or self.supersample % 2 == 0:
            raise ValueError(
                f"supersample must be odd (its centre sub-pixel is the pixel centre), got {self.supersample}"
            )
        if not 0.0 <= self.occluder_prob <= 1.0:
            raise ValueError(f"occluder_prob must be in [0, 1], got {self.occluder_prob}")
        if len(self.background) != 3:
            raise ValueError(f"background must be an RGB triple in [0, 1], got {self.background}")

    @property
    def test_every(self) -> int:
        """Every test_every-th view (from the first) is a test view."""
        return (self.num_train + self.num_test) // self.num_test


def _split_flags(config: WildSceneConfig) -> np.ndarray:
    total = config.num_train + config.num_test
    test = np.zeros(total, bool)
    test[np.arange(config.num_test) * config.test_every] = True
    return test


def build_wild_duck(
    root: str | os.PathLike,
    *,
    clean: bool = False,
    duck: str | os.PathLike = DUCK_PATH,
    vtest: str | os.PathLike | None = None,
    **options: Any,
) -> Path:
    """Render the duck scene into `root` (created; existing files are overwritten) and return `root`.

    Args:
      root: the scene folder to write (see the module docstring for the layout).
      clean: the baseline copy: the canonical appearance in every image and no occluders (cameras, points and
        depth are the same as the in-the-wild build with the same options).
      duck: the .dae file (its `duckCM.tga` beside it).
      vtest: the video the occluders are cut from (default: opencv-doc's vtest.avi).
      options: `WildSceneConfig` fields (resolution, num_train, num_test, seed, supersample, fov_deg, ...).
    """
    config = WildSceneConfig(**options)
    config.validate()
    root = Path(root)
    mesh = load_duck(duck)
    cutouts = None if clean else person_cutouts(vtest)
    # Independent streams, so the clean and in-the-wild builds share cameras and points exactly.
    camera_rng, point_rng, appearance_rng, occluder_rng = (np.random.default_rng([config.seed, k]) for k in range(4))
    size = config.resolution
    focal = 0.5 * size / np.tan(np.deg2rad(config.fov_deg) / 2)
    K = colmap.intrinsics_matrix(focal, focal, size / 2, size / 2).astype(np.float64)
    poses = hemisphere_cameras(
        config.num_train + config.num_test,
        distance=config.distance,
        elevation_deg=config.elevation_deg,
        aim_jitter=config.aim_jitter,
        rng=camera_rng,
    )
    is_test = _split_flags(config)

    for folder in ("images", "depth", "masks", "sparse/0"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    records, images = [], []
    for index, (rotation, translation) in enumerate(poses):
        stem = f"{index:03d}"
        geometry = render_geometry(mesh, rotation, translation, K, size, size, config.supersample)
        appearance = canonical_appearance() if clean else random_appearance(appearance_rng)
        image = shade(geometry, appearance, config.background, config.supersample)
        occluders, mask = [], np.zeros((size, size), bool)
        if not clean:
            # Drawn for every view (even when unused), so one view's draw does not shift another's.
            wanted = occluder_rng.uniform() < config.occluder_prob
            count = int(occluder_rng.integers(1, 3))
            stream = np.random.default_rng(occluder_rng.integers(2**63))
            if wanted:
                image, mask, occluders = paste_occluders(
                    image, cutouts, stream, count=count, region="left" if is_test[index] else "any"
                )
        PILImage.fromarray(image).save(root / "images" / f"{stem}.png")
        PILImage.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
        np.save(root / "depth" / f"{stem}.npy", geometry.depth)
        images.append(colmap.ColmapImage(index + 1, colmap.rotmat_to_qvec(rotation), translation, 1, f"{stem}.png"))
        records.append(
            {
                "name": f"{stem}.png",
                "split": "test" if is_test[index] else "train",
                "appearance": appearance,
                "occluders": occluders,
                "occluder_pixels": int(mask.sum()),
                "duck_pixels": int((geometry.depth > 0).sum()),
            }
        )

    samples = surface_samples(mesh, config.num_points, point_rng)
    noisy = samples["xyz"] + point_rng.normal(0.0, config.points_noise, samples["xyz"].shape)
    camera = colmap.Camera(1, "PINHOLE", size, size, np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]]))
    colmap.write_model(root / "sparse" / "0", [camera], images, colmap.Points3D.from_arrays(noisy, samples["rgb"]))
    exact = surface_samples(mesh, config.num_points, np.random.default_rng([config.seed, 4]))
    np.savez(root / "surface_points.npz", **exact)
    with (root / SPLIT_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["filename", "id", "split", "dataset"])
        for image, record in zip(images, records, strict=True):
            writer.writerow([image.name, image.id, record["split"], "wild_duck"])
    meta = {
        "version": SCENE_VERSION,
        "clean": clean,
        "config": dataclasses.asdict(config),
        "background": list(config.background),
        "depth": "camera z (float32), 0 = background",
        "assets": {"duck": str(duck), "occluders": "vtest.avi person blobs (zoo.data.video)"},
        "images": records,
    }
    (root / "scene.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return root


def _cache_dir() -> Path:
    return Path(os.environ.get("ZOO_CACHE_DIR", Path.home() / ".cache" / "zoo"))


def cached_wild_duck(
    *, clean: bool = False, duck: str | os.PathLike = DUCK_PATH, vtest: str | os.PathLike | None = None, **options: Any
) -> Path:
    """The scene folder of `build_wild_duck(clean=clean, **options)` under `$ZOO_CACHE_DIR`, built once."""
    config = WildSceneConfig(**options)
    config.validate()
    duck = Path(duck)
    files = [duck, duck.with_name("duckCM.tga")]
    if not clean:
        from zoo.data.video import VTEST_PATH

        files.append(Path(VTEST_PATH if vtest is None else vtest))
    stamp = [(str(p), p.stat().st_size) if p.is_file() else (str(p), None) for p in files]
    key = hashlib.sha1(repr((SCENE_VERSION, clean, dataclasses.astuple(config), stamp)).encode()).hexdigest()[:12]
    final = _cache_dir() / f"wild_duck{'_clean' if clean else ''}_{key}"
    if (final / "scene.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build_wild_duck(tmp, clean=clean, duck=duck, vtest=vtest, **options)
        try:
            os.replace(tmp, final)  # atomic: concurrent builders never see a partial scene
        except OSError:
            if not (final / "scene.json").is_file():  # another process did not finish it either
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------------- source
class WildSceneSource:
    """A `ColmapSource` of a built wild-duck scene plus, per example, "depth" (float32 (H, W), camera z, 0 =
    background) and "occluder_mask" (uint8 (H, W), 1 = pasted person). `scene`, `views` and `meta` (scene.json)
    are exposed; `background` is the constant backdrop colour (the renderer's background)."""

    def __init__(self, root: str | os.PathLike, split: str | None = "train", **kwargs: Any):
        self.root = Path(root)
        if kwargs.get("downscale", 1) != 1:
            raise ValueError("the wild-duck scene is rendered at its resolution; pass resolution= instead of downscale")
        self.colmap = colmap.ColmapSource(self.root, split, **kwargs)
        self.meta = json.loads((self.root / "scene.json").read_text(encoding="utf-8"))
        self.background = np.asarray(self.meta["background"], np.float32)

    @property
    def scene(self) -> colmap.Scene:
        """The COLMAP scene (cameras, SfM points, splits)."""
        return self.colmap.scene

    @property
    def views(self) -> list[colmap.SceneImage]:
        """The views of this split."""
        return self.colmap.views

    def __len__(self) -> int:
        return len(self.colmap)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        example = self.colmap[index]
        view = self.scene.images[self.colmap.indices[int(index)]]
        stem = Path(view.name).stem
        example["depth"] = np.load(self.root / "depth" / f"{stem}.npy")
        with PILImage.open(self.root / "masks" / f"{stem}.png") as mask:
            example["occluder_mask"] = (np.asarray(mask) >= 128).astype(np.uint8)
        return example

    def __repr__(self) -> str:
        return f"WildSceneSource({str(self.root)!r}, split={self.colmap.split!r}, len={len(self)})"


def wild_duck(split: str | None = "train", **options: Any) -> WildSceneSource:
    """The "wild_duck" source: per-image appearance and vtest occluders (options: `WildSceneConfig` fields)."""
    return WildSceneSource(cached_wild_duck(clean=False, **options), split)


def wild_duck_clean(split: str | None = "train", **options: Any) -> WildSceneSource:
    """The "wild_duck_clean" source: the same cameras, one constant appearance, no occluders."""
    return WildSceneSource(cached_wild_duck(clean=True, **options), split)


# ------------------------------------------------------------------------------------------- contact sheet
def contact_sheet(wild_root: str | os.PathLike, clean_root: str | os.PathLike, count: int = 6) -> np.ndarray:
    """uint8 image: columns = views with occluders; rows = in-the-wild image, occluder mask overlay (red), clean
    image, depth (near = bright)."""
    wild_root, clean_root = Path(wild_root), Path(clean_root)
    meta = json.loads((wild_root / "scene.json").read_text(encoding="utf-8"))
    chosen = [r["name"] for r in meta["images"] if r["occluder_pixels"]][:count]
    columns = []
    for name in chosen:
        stem = Path(name).stem
        wild = np.asarray(PILImage.open(wild_root / "images" / name).convert("RGB"))
        mask = np.asarray(PILImage.open(wild_root / "masks" / f"{stem}.png")) >= 128
        overlay = overlay_mask(wild, mask)
        clean = np.asarray(PILImage.open(clean_root / "images" / name).convert("RGB"))
        depth = np.load(wild_root / "depth" / f"{stem}.npy")
        valid = depth > 0
        grey = np.zeros(depth.shape, np.uint8)
        if valid.any():
            near, far = depth[valid].min(), depth[valid].max()
            grey[valid] = np.round(255 * (1 - 0.8 * (depth[valid] - near) / max(far - near, 1e-9))).astype(np.uint8)
        columns.append(np.concatenate([wild, overlay, clean, np.repeat(grey[..., None], 3, -1)], axis=0))
    return join_with_gap(columns, axis=1)


def register() -> None:
    """Register the sources "wild_duck" and "wild_duck_clean" with `zoo.data` (idempotent)."""
    from zoo.data.registry import register_source

    register_source("wild_duck", wild_duck, overwrite=True)
    register_source("wild_duck_clean", wild_duck_clean, overwrite=True)


register()


if __name__ == "__main__":  # python -m zoo.data.wild_scene OUT.png: build the default scenes, save a contact sheet
    import sys

    sheet = contact_sheet(cached_wild_duck(), cached_wild_duck(clean=True))
    PILImage.fromarray(sheet).save(sys.argv[1] if len(sys.argv) > 1 else "wild_duck_views.png", optimize=True)
