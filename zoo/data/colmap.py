"""COLMAP scenes for novel-view synthesis (3DGS, Wild-GS): model readers and writers, `Scene`, `ColmapSource`.

    source = zoo.data.get_source("colmap:/data/phototourism/brandenburg_gate", split="train", downscale=2)
    example = source[0]       # {"image": uint8 (H, W, 3), "K": f32 (3, 3), "R": f32 (3, 3), "t": f32 (3,),
                              #  "image_id": int32, "width": int32, "height": int32}
    xyz, rgb = source.scene.points_xyz, source.scene.points_rgb    # SfM points, to initialise the Gaussians
    center, radius = source.scene.normalization()                  # 3DGS getNerfppNorm over the train cameras
    test = ColmapSource(source.scene, split="test")                # the same scene, read once

Layout: the model is the first of `<scene>/sparse/0`, `<scene>/sparse`, `<scene>/dense/sparse` (Phototourism) that
holds `cameras.bin` (binary model) or `cameras.txt` (text model). Images are read from `images/` next to `sparse/`
(`<scene>/images`, or `<scene>/dense/images` for the Phototourism layout) by their name in the model.

Cameras: x_cam = R x_world + t (world-to-camera, COLMAP's convention; R from the quaternion (w, x, y, z)), pixel =
K x_cam / z with pixel centres at +0.5 (COLMAP). Only undistorted PINHOLE / SIMPLE_PINHOLE cameras are accepted:
other models are an error that says to run `colmap image_undistorter`.

Downscaling by an integer r (R/2 in the Phototourism papers): fx, fy, cx, cy are divided by r and width/height are
floor-divided (3DGS rounds instead; the two differ by at most one pixel). A pre-downscaled folder `images_<r>/`
beside `images/` (the 3DGS convention) is used when present; otherwise images are resized on the fly with PIL,
bicubic by default (what 3DGS / GS-W's `PIL.Image.resize` does), `resample="box"` for an exact r x r area average.

Splits: a Phototourism `.tsv` (columns `filename id split dataset`; any `*.tsv` in the scene folder, or `tsv=`)
selects images by file name (rows with an empty `id` are dropped, as NeRF-W does; registered images it does not list
are only in "all"); without one, the images sorted by name with index % 8 == 0 are "test" and the rest "train"
(3DGS / Mip-NeRF `llffhold=8`); "all" is every registered image.

Images of one scene may differ in size (Phototourism does): the source returns one image per example, and batching
several views (padding, bucketing, batch size 1 as in 3DGS) is up to the consumer.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from zoo.data.sources import _check_index, load_image_rgb

Example = dict[str, np.ndarray]

# (model id, name, number of parameters), as in COLMAP's src/colmap/sensor/models.h.
CAMERA_MODELS: tuple[tuple[int, str, int], ...] = (
    (0, "SIMPLE_PINHOLE", 3),
    (1, "PINHOLE", 4),
    (2, "SIMPLE_RADIAL", 4),
    (3, "RADIAL", 5),
    (4, "OPENCV", 8),
    (5, "OPENCV_FISHEYE", 8),
    (6, "FULL_OPENCV", 12),
    (7, "FOV", 5),
    (8, "SIMPLE_RADIAL_FISHEYE", 4),
    (9, "RADIAL_FISHEYE", 5),
    (10, "THIN_PRISM_FISHEYE", 12),
    (11, "RAD_TAN_THIN_PRISM_FISHEYE", 16),
)
MODEL_BY_ID = {model_id: (name, num_params) for model_id, name, num_params in CAMERA_MODELS}
MODEL_BY_NAME = {name: (model_id, num_params) for model_id, name, num_params in CAMERA_MODELS}
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")
MODEL_FILES = ("cameras", "images", "points3D")
MODEL_CANDIDATES = ("sparse/0", "sparse", "dense/sparse")
RESAMPLING = {
    "bicubic": PILImage.Resampling.BICUBIC,
    "box": PILImage.Resampling.BOX,
    "bilinear": PILImage.Resampling.BILINEAR,
    "lanczos": PILImage.Resampling.LANCZOS,
}
_POINT2D_DTYPE = np.dtype([("x", "<f8"), ("y", "<f8"), ("point3D_id", "<i8")])


class ColmapFormatError(ValueError):
    """A COLMAP model file that is truncated, corrupt or malformed (the message names the file and where)."""


# ----------------------------------------------------------------------------------------------- records
@dataclasses.dataclass(eq=False)
class Camera:
    """One COLMAP camera: `params` in the model's order (PINHOLE: fx, fy, cx, cy; SIMPLE_PINHOLE: f, cx, cy)."""

    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # float64 (num_params,)


@dataclasses.dataclass(eq=False)
class ColmapImage:
    """One registered image: world-to-camera pose (qvec w, x, y, z; tvec), its camera and its 2-D points."""

    id: int
    qvec: np.ndarray  # float64 (4,)
    tvec: np.ndarray  # float64 (3,)
    camera_id: int
    name: str
    xys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))  # float64 (P, 2)
    point3D_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.int64))  # -1: none

    @property
    def rotation(self) -> np.ndarray:
        """World-to-camera rotation (3, 3) float64 from `qvec`."""
        return qvec_to_rotmat(self.qvec)


@dataclasses.dataclass(eq=False)
class Points3D:
    """The SfM points as arrays; tracks are flattened: point k owns rows `track_offsets[k]:track_offsets[k+1]`."""

    ids: np.ndarray  # int64 (N,)
    xyz: np.ndarray  # float64 (N, 3)
    rgb: np.ndarray  # uint8 (N, 3)
    error: np.ndarray  # float64 (N,)
    track_lengths: np.ndarray  # int64 (N,)
    tracks: np.ndarray  # int32 (sum of track_lengths, 2): (image_id, point2D_idx)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def track_offsets(self) -> np.ndarray:
        """(N + 1,) start of each point's track rows in `tracks`."""
        return np.concatenate([[0], np.cumsum(self.track_lengths)]).astype(np.int64)

    @classmethod
    def from_arrays(cls, xyz: np.ndarray, rgb: np.ndarray, error: np.ndarray | None = None, ids=None) -> Points3D:
        """Points without tracks (ids 1..N unless given, error 0 unless given)."""
        xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
        count = len(xyz)
        return cls(
            ids=np.arange(1, count + 1, dtype=np.int64) if ids is None else np.asarray(ids, np.int64),
            xyz=xyz,
            rgb=np.asarray(rgb, np.uint8).reshape(count, 3),
            error=np.zeros(count) if error is None else np.asarray(error, np.float64).reshape(count),
            track_lengths=np.zeros(count, np.int64),
            tracks=np.zeros((0, 2), np.int32),
        )


# -------------------------------------------------------------------------------------------- rotations
def qvec_to_rotmat(qvec: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of a quaternion in COLMAP's (w, x, y, z) order (normalised first)."""
    w, x, y, z = np.asarray(qvec, np.float64) / np.linalg.norm(qvec)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotmat_to_qvec(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 of a rotation matrix (Shepperd's method: stable for any angle)."""
    m = np.asarray(rotation, np.float64)
    trace = np.trace(m)
    if trace > max(m[0, 0], m[1, 1], m[2, 2]):
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] >= m[1, 1] and m[0, 0] >= m[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 0.0))
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] >= m[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 0.0))
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 0.0))
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[0] < 0 else q


# ------------------------------------------------------------------------------------------ binary files
class _BinaryReader:
    """Bounds-checked little-endian reads over a whole file; every failure names the file and byte offset."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def fail(self, message: str, offset: int | None = None) -> ColmapFormatError:
        offset = self.offset if offset is None else offset
        return ColmapFormatError(
            f"{str(self.path)!r}: truncated or corrupt COLMAP binary file: {message} at byte offset {offset} "
            f"(file size {len(self.data)} bytes)"
        )

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.offset + size > len(self.data):
            raise self.fail(f"{what} needs {size} bytes but only {len(self.data) - self.offset} remain")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, layout: struct.Struct, what: str) -> tuple:
        return layout.unpack(self.take(layout.size, what))

    def count(self, what: str, min_record_bytes: int) -> int:
        (count,) = self.unpack(_U64, f"the number of {what}")
        # A garbage count is caught here rather than after a long loop (or a huge allocation).
        if count * min_record_bytes > len(self.data) - self.offset:
            raise self.fail(
                f"the file says {count} {what} (at least {count * min_record_bytes} bytes) but only "
                f"{len(self.data) - self.offset} bytes follow",
                self.offset - _U64.size,
            )
        return count

    def c_string(self, what: str) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise self.fail(f"{what} has no terminating NUL byte")
        raw = self.take(end - self.offset, what)
        self.offset += 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise self.fail(f"{what} is not UTF-8 ({error})", self.offset - len(raw) - 1) from None

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise self.fail(f"{len(self.data) - self.offset} unexpected bytes after the last record")


_U64 = struct.Struct("<Q")
_CAMERA = struct.Struct("<iiQQ")
_IMAGE = struct.Struct("<idddddddi")
_POINT = struct.Struct("<QdddBBBdQ")  # id, xyz, rgb, error, track length


def read_cameras_binary(path: str | os.PathLike) -> dict[int, Camera]:
    """`cameras.bin` -> {camera_id: Camera}."""
    reader = _BinaryReader(Path(path))
    cameras = {}
    for index in range(reader.count("cameras", _CAMERA.size)):
        start = reader.offset
        camera_id, model_id, width, height = reader.unpack(_CAMERA, f"camera {index}")
        if model_id not in MODEL_BY_ID:
            raise reader.fail(f"camera {camera_id} has an unknown camera model id {model_id}", start + 4)
        model, num_params = MODEL_BY_ID[model_id]
        params = np.frombuffer(reader.take(8 * num_params, f"the {model} parameters of camera {camera_id}"), "<f8")
        cameras[camera_id] = Camera(camera_id, model, int(width), int(height), params.astype(np.float64))
    reader.finish()
    return cameras


def read_images_binary(path: str | os.PathLike) -> dict[int, ColmapImage]:
    """`images.bin` -> {image_id: ColmapImage} (with the 2-D points)."""
    reader = _BinaryReader(Path(path))
    images = {}
    for index in range(reader.count("images", _IMAGE.size + 1 + _U64.size)):
        image_id, *pose, camera_id = reader.unpack(_IMAGE, f"image {index}")
        name = reader.c_string(f"the name of image {image_id}")
        (num_points,) = reader.unpack(_U64, f"the 2-D point count of image {name!r}")
        raw = reader.take(num_points * _POINT2D_DTYPE.itemsize, f"the {num_points} 2-D points of image {name!r}")
        points = np.frombuffer(raw, _POINT2D_DTYPE)
        images[image_id] = ColmapImage(
            image_id,
            np.array(pose[:4]),
            np.array(pose[4:]),
            camera_id,
            name,
            np.stack([points["x"], points["y"]], axis=-1),
            points["point3D_id"].astype(np.int64),
        )
    reader.finish()
    return images


def read_points3D_binary(path: str | os.PathLike) -> Points3D:
    """`points3D.bin` -> Points3D (xyz, rgb, error and the tracks)."""
    reader = _BinaryReader(Path(path))
    count = reader.count("points", _POINT.size)
    records, tracks = [], []
    for index in range(count):
        record = reader.unpack(_POINT, f"point {index}")
        tracks.append(reader.take(8 * record[-1], f"the track of point {record[0]} ({record[-1]} entries)"))
        records.append(record)
    reader.finish()
    table = np.array(records, dtype=np.float64).reshape(count, 9)
    # ids (uint64 in the file) and track lengths are integers that float64 may round: take them from the records.
    return Points3D(
        ids=np.array([record[0] for record in records], dtype=np.uint64).astype(np.int64),
        xyz=table[:, 1:4],
        rgb=table[:, 4:7].astype(np.uint8),
        error=table[:, 7].copy(),
        track_lengths=np.array([record[-1] for record in records], dtype=np.int64),
        tracks=np.frombuffer(b"".join(tracks), "<i4").reshape(-1, 2).astype(np.int32),
    )


def _ordered(records: Mapping[int, Any] | Iterable[Any]) -> list[Any]:
    return list(records.values()) if isinstance(records, Mapping) else list(records)


def write_cameras_binary(cameras: Mapping[int, Camera] | Iterable[Camera], path: str | os.PathLike) -> None:
    """Write `cameras.bin`."""
    cameras = _ordered(cameras)
    chunks = [_U64.pack(len(cameras))]
    for camera in cameras:
        model_id, num_params = MODEL_BY_NAME[camera.model]
        params = np.asarray(camera.params, "<f8")
        if params.shape != (num_params,):
            raise ValueError(f"camera {camera.id}: {camera.model} takes {num_params} parameters, got {params.shape}")
        chunks += [_CAMERA.pack(camera.id, model_id, camera.width, camera.height), params.tobytes()]
    Path(path).write_bytes(b"".join(chunks))


def write_images_binary(images: Mapping[int, ColmapImage] | Iterable[ColmapImage], path: str | os.PathLike) -> None:
    """Write `images.bin`."""
    images = _ordered(images)
    chunks = [_U64.pack(len(images))]
    for image in images:
        points = np.zeros(len(image.point3D_ids), _POINT2D_DTYPE)
        points["x"], points["y"] = np.asarray(image.xys).reshape(-1, 2).T
        points["point3D_id"] = image.point3D_ids
        chunks += [
            _IMAGE.pack(image.id, *np.asarray(image.qvec, float), *np.asarray(image.tvec, float), image.camera_id),
            image.name.encode("utf-8") + b"\0",
            _U64.pack(len(points)),
            points.tobytes(),
        ]
    Path(path).write_bytes(b"".join(chunks))


def write_points3D_binary(points: Points3D, path: str | os.PathLike) -> None:
    """Write `points3D.bin`."""
    chunks = [_U64.pack(len(points))]
    offsets = points.track_offsets
    tracks = np.asarray(points.tracks, "<i4").reshape(-1, 2)
    for k in range(len(points)):
        rgb = (int(c) for c in points.rgb[k])
        record = (int(points.ids[k]), *points.xyz[k], *rgb, float(points.error[k]), int(points.track_lengths[k]))
        chunks.append(_POINT.pack(*record))
        chunks.append(tracks[offsets[k] : offsets[k + 1]].tobytes())
    Path(path).write_bytes(b"".join(chunks))


# -------------------------------------------------------------------------------------------- text files
def _data_lines(path: Path, *, keep_blank: bool = False) -> list[tuple[int, str]]:
    """(line number, stripped line) of the non-comment lines of a text model file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ColmapFormatError(f"{str(path)!r}: not a UTF-8 COLMAP text file ({error})") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    return [(n, line) for n, line in lines if not line.startswith("#") and (keep_blank or line)]


def _parse(path: Path, number: int, values: Sequence[str], types: Sequence[type], what: str) -> list[Any]:
    if len(values) != len(types):
        raise ColmapFormatError(
            f"{str(path)!r}, line {number}: {what}: expected {len(types)} values, got {len(values)}"
        )
    try:
        return [kind(value) for kind, value in zip(types, values, strict=True)]
    except ValueError as error:
        raise ColmapFormatError(f"{str(path)!r}, line {number}: {what}: {error}") from None


def read_cameras_text(path: str | os.PathLike) -> dict[int, Camera]:
    """`cameras.txt` (CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]) -> {camera_id: Camera}."""
    path = Path(path)
    cameras = {}
    for number, line in _data_lines(path):
        values = line.split()
        if len(values) < 4 or values[1] not in MODEL_BY_NAME:
            model = values[1] if len(values) > 1 else None
            raise ColmapFormatError(
                f"{str(path)!r}, line {number}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[] with a known MODEL, "
                f"got {line!r} (model {model!r})"
            )
        num_params = MODEL_BY_NAME[values[1]][1]
        camera_id, width, height, *params = _parse(
            path, number, values[:1] + values[2:], [int, int, int] + [float] * num_params, f"a {values[1]} camera"
        )
        cameras[camera_id] = Camera(camera_id, values[1], width, height, np.array(params, np.float64))
    return cameras


def read_images_text(path: str | os.PathLike) -> dict[int, ColmapImage]:
    """`images.txt` (two lines per image: pose + name, then X Y POINT3D_ID triples) -> {image_id: ColmapImage}."""
    path = Path(path)
    lines = _data_lines(path, keep_blank=True)
    images, position = {}, 0
    while position < len(lines):
        number, line = lines[position]
        position += 1
        if not line:
            continue
        values = line.split(maxsplit=9)
        image_id, *pose, camera_id = _parse(
            path, number, values[:9], [int] + [float] * 7 + [int], "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"
        )
        if len(values) < 10:
            raise ColmapFormatError(f"{str(path)!r}, line {number}: image {image_id} has no NAME")
        # The second line of an image (its 2-D points) is present but empty when it has none.
        point_number, point_line = lines[position] if position < len(lines) else (number + 1, "")
        position += 1
        point_values = point_line.split()
        if len(point_values) % 3:
            raise ColmapFormatError(
                f"{str(path)!r}, line {point_number}: the 2-D points of image {image_id} must be X Y POINT3D_ID "
                f"triples (every image takes two lines), got {len(point_values)} values"
            )
        triples = _parse(path, point_number, point_values, [float, float, int] * (len(point_values) // 3), "points")
        images[image_id] = ColmapImage(
            image_id,
            np.array(pose[:4]),
            np.array(pose[4:]),
            camera_id,
            values[9],
            np.array(triples, np.float64).reshape(-1, 3)[:, :2],
            np.array(triples[2::3], np.int64),
        )
    return images


def read_points3D_text(path: str | os.PathLike) -> Points3D:
    """`points3D.txt` (POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)) -> Points3D."""
    path = Path(path)
    ids, xyz, rgb, error, lengths, tracks = [], [], [], [], [], []
    for number, line in _data_lines(path):
        values = line.split()
        if len(values) < 8 or (len(values) - 8) % 2:
            raise ColmapFormatError(
                f"{str(path)!r}, line {number}: expected POINT3D_ID X Y Z R G B ERROR (IMAGE_ID POINT2D_IDX)*, "
                f"got {len(values)} values"
            )
        point_id, x, y, z, r, g, b, err, *track = _parse(
            path, number, values, [int] + [float] * 3 + [int] * 3 + [float] + [int] * (len(values) - 8), "a point"
        )
        if not all(0 <= c <= 255 for c in (r, g, b)):
            raise ColmapFormatError(f"{str(path)!r}, line {number}: colour {(r, g, b)} is outside 0..255")
        ids.append(point_id)
        xyz.append((x, y, z))
        rgb.append((r, g, b))
        error.append(err)
        lengths.append(len(track) // 2)
        tracks.extend(track)
    return Points3D(
        ids=np.array(ids, np.int64),
        xyz=np.array(xyz, np.float64).reshape(-1, 3),
        rgb=np.array(rgb, np.uint8).reshape(-1, 3),
        error=np.array(error, np.float64),
        track_lengths=np.array(lengths, np.int64),
        tracks=np.array(tracks, np.int32).reshape(-1, 2),
    )


def write_cameras_text(cameras: Mapping[int, Camera] | Iterable[Camera], path: str | os.PathLike) -> None:
    """Write `cameras.txt` (floats as Python's shortest round-trip repr, so reading back is exact)."""
    cameras = _ordered(cameras)
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(cameras)}",
    ]
    for camera in cameras:
        params = " ".join(repr(float(p)) for p in camera.params)
        lines.append(f"{camera.id} {camera.model} {camera.width} {camera.height} {params}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_images_text(images: Mapping[int, ColmapImage] | Iterable[ColmapImage], path: str | os.PathLike) -> None:
    """Write `images.txt`."""
    images = _ordered(images)
    mean_points = np.mean([len(image.point3D_ids) for image in images]) if images else 0.0
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(images)}, mean observations per image: {mean_points}",
    ]
    for image in images:
        pose = " ".join(repr(float(v)) for v in (*image.qvec, *image.tvec))
        lines.append(f"{image.id} {pose} {image.camera_id} {image.name}")
        xys = np.asarray(image.xys).reshape(-1, 2)
        lines.append(
            " ".join(f"{float(x)!r} {float(y)!r} {int(p)}" for (x, y), p in zip(xys, image.point3D_ids, strict=True))
        )
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_points3D_text(points: Points3D, path: str | os.PathLike) -> None:
    """Write `points3D.txt`."""
    mean_track = float(np.mean(points.track_lengths)) if len(points) else 0.0
    lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(points)}, mean track length: {mean_track}",
    ]
    offsets = points.track_offsets
    for k in range(len(points)):
        x, y, z = (repr(float(v)) for v in points.xyz[k])
        r, g, b = (int(c) for c in points.rgb[k])
        track = " ".join(str(int(v)) for v in np.asarray(points.tracks)[offsets[k] : offsets[k + 1]].reshape(-1))
        lines.append(f"{int(points.ids[k])} {x} {y} {z} {r} {g} {b} {float(points.error[k])!r} {track}".rstrip())
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------ models
def model_format(model_dir: str | os.PathLike) -> str:
    """The format, ".bin" or ".txt", of the model in `model_dir` (binary wins when both are complete)."""
    model_dir = Path(model_dir)
    for ext in (".bin", ".txt"):
        if (model_dir / f"cameras{ext}").is_file():
            missing = [f"{name}{ext}" for name in MODEL_FILES if not (model_dir / f"{name}{ext}").is_file()]
            if missing:
                raise FileNotFoundError(f"incomplete COLMAP model in {str(model_dir)!r}: {', '.join(missing)} missing")
            return ext
    raise FileNotFoundError(f"no COLMAP model in {str(model_dir)!r}: expected cameras/images/points3D .bin or .txt")


def read_model(
    model_dir: str | os.PathLike, ext: str | None = None
) -> tuple[dict[int, Camera], dict[int, ColmapImage], Points3D]:
    """(cameras, images, points) of the COLMAP model in `model_dir` (`ext` ".bin"/".txt"; None: detect)."""
    model_dir = Path(model_dir)
    ext = ext or model_format(model_dir)
    if ext == ".bin":
        readers = (read_cameras_binary, read_images_binary, read_points3D_binary)
    elif ext == ".txt":
        readers = (read_cameras_text, read_images_text, read_points3D_text)
    else:
        raise ValueError(f"unknown COLMAP model format {ext!r}; expected '.bin' or '.txt'")
    for name in MODEL_FILES:
        if not (model_dir / f"{name}{ext}").is_file():
            raise FileNotFoundError(f"COLMAP model file {str(model_dir / (name + ext))!r} not found")
    cameras, images, points = (read(model_dir / f"{name}{ext}") for read, name in zip(readers, MODEL_FILES))
    return cameras, images, points


def write_model(
    model_dir: str | os.PathLike,
    cameras: Mapping[int, Camera] | Iterable[Camera],
    images: Mapping[int, ColmapImage] | Iterable[ColmapImage],
    points: Points3D,
    ext: str = ".bin",
) -> Path:
    """Write a COLMAP model (binary ".bin" or text ".txt") into `model_dir` (created); returns `model_dir`."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if ext == ".bin":
        write_cameras_binary(cameras, model_dir / "cameras.bin")
        write_images_binary(images, model_dir / "images.bin")
        write_points3D_binary(points, model_dir / "points3D.bin")
    elif ext == ".txt":
        write_cameras_text(cameras, model_dir / "cameras.txt")
        write_images_text(images, model_dir / "images.txt")
        write_points3D_text(points, model_dir / "points3D.txt")
    else:
        raise ValueError(f"unknown COLMAP model format {ext!r}; expected '.bin' or '.txt'")
    return model_dir


def find_model_dir(scene_dir: str | os.PathLike) -> Path:
    """The model folder of a scene: the first of sparse/0, sparse, dense/sparse that holds a model."""
    scene_dir = Path(scene_dir).expanduser()
    if not scene_dir.is_dir():
        raise FileNotFoundError(f"COLMAP scene folder {str(scene_dir)!r} does not exist")
    for candidate in MODEL_CANDIDATES:
        folder = scene_dir / candidate
        if (folder / "cameras.bin").is_file() or (folder / "cameras.txt").is_file():
            return folder
    raise FileNotFoundError(
        f"no COLMAP model in {str(scene_dir)!r}: expected cameras/images/points3D .bin or .txt in one of "
        f"{', '.join(MODEL_CANDIDATES)}"
    )


def pinhole_intrinsics(camera: Camera, cameras_file: str | os.PathLike = "cameras") -> tuple[float, ...]:
    """(fx, fy, cx, cy) of a PINHOLE / SIMPLE_PINHOLE camera; any other model is an error."""
    if camera.model == "PINHOLE":
        return tuple(float(p) for p in camera.params)
    if camera.model == "SIMPLE_PINHOLE":
        focal, cx, cy = (float(p) for p in camera.params)
        return focal, focal, cx, cy
    raise ValueError(
        f"{str(cameras_file)!r}: camera {camera.id} uses the {camera.model} model; only undistorted PINHOLE and "
        f"SIMPLE_PINHOLE cameras are supported. Run `colmap image_undistorter --image_path <images> --input_path "
        f"<sparse model> --output_path <scene>` and load its output."
    )


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """K (3, 3) float32."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], np.float32)


def nerfpp_norm(rotations: np.ndarray, translations: np.ndarray) -> tuple[np.ndarray, float]:
    """3DGS `getNerfppNorm`: (mean camera centre, 1.1 x the largest centre distance to it).

    3DGS returns `translate = -center`; the scene extent it scales learning rates and densification by is `radius`.
    """
    rotations = np.asarray(rotations, np.float64).reshape(-1, 3, 3)
    centers = -np.einsum("nji,nj->ni", rotations, np.asarray(translations, np.float64).reshape(-1, 3))
    center = centers.mean(axis=0)
    return center, float(1.1 * np.linalg.norm(centers - center, axis=-1).max())


# ------------------------------------------------------------------------------------------------ scenes
@dataclasses.dataclass(eq=False)
class SceneImage:
    """One view: world-to-camera R, t (x_cam = R x_world + t), K and size at the scene's downscale."""

    name: str
    path: Path
    image_id: int
    camera_id: int
    R: np.ndarray  # float32 (3, 3)
    t: np.ndarray  # float32 (3,)
    K: np.ndarray  # float32 (3, 3)
    width: int
    height: int
    camera_size: tuple[int, int]  # (width, height) of the camera in the model, before downscaling

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, -R^T t (float64)."""
        return -self.R.astype(np.float64).T @ self.t.astype(np.float64)


@dataclasses.dataclass(eq=False)
class Scene:
    """A COLMAP scene: its views (sorted by name), SfM points and splits (name -> indices into `images`).

    `prescaled` says whether the images come from a pre-downscaled `images_<r>/` folder (else they are resized
    when read); `split_rule` says where the splits came from (a .tsv path or the every-8th rule).
    """

    root: Path
    model_dir: Path
    image_dir: Path
    downscale: int
    prescaled: bool
    images: list[SceneImage]
    points_xyz: np.ndarray  # float32 (N, 3)
    points_rgb: np.ndarray  # uint8 (N, 3)
    points_error: np.ndarray  # float32 (N,)
    splits: dict[str, np.ndarray]
    split_rule: str

    def split_indices(self, split: str | None) -> np.ndarray:
        """Indices into `images` of a split ("train", "test", any .tsv split value, "all" / None)."""
        split = "all" if split is None else split
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r} of {str(self.root)!r}; valid: {sorted(self.splits)}")
        return self.splits[split]

    def normalization(self, split: str | None = "train") -> tuple[np.ndarray, float]:
        """(centre, radius) of the cameras of `split` (3DGS `getNerfppNorm`, computed on the train cameras)."""
        indices = self.split_indices(split)
        if not len(indices):
            raise ValueError(f"split {split!r} of {str(self.root)!r} has no images")
        views = [self.images[i] for i in indices]
        return nerfpp_norm(np.stack([v.R for v in views]), np.stack([v.t for v in views]))


def read_split_tsv(path: str | os.PathLike) -> dict[str, str]:
    """{filename: split} of a Phototourism / NeRF-W split file; rows with an empty `id` are dropped (as NeRF-W)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = [name.strip() for name in reader.fieldnames or []]
        if "filename" not in columns or "split" not in columns:
            raise ValueError(
                f"{str(path)!r}: expected tab-separated columns 'filename id split dataset', got {columns}"
            )
        reader.fieldnames = columns
        splits = {}
        for row in reader:
            filename, split = (row.get("filename") or "").strip(), (row.get("split") or "").strip()
            image_id = (row.get("id") or "").strip() if "id" in columns else "0"
            if filename and split and image_id.lower() not in ("", "nan"):
                splits[filename] = split
    if not splits:
        raise ValueError(f"{str(path)!r}: no rows with a filename, an id and a split")
    return splits


def _find_tsv(root: Path, tsv: str | os.PathLike | bool | None) -> Path | None:
    if tsv is False:
        return None
    if tsv not in (None, True):
        path = Path(tsv).expanduser()
        path = path if path.is_absolute() or path.is_file() else root / path
        if not path.is_file():
            raise FileNotFoundError(f"split file {str(path)!r} not found")
        return path
    # Phototourism keeps <scene>.tsv beside dense/; a scene given as the dense/ folder looks one level up too.
    for folder in (root, root.parent) if root.name == "dense" else (root,):
        found = sorted(folder.glob("*.tsv"))
        if len(found) > 1:
            raise ValueError(f"several .tsv split files in {str(folder)!r}: {[p.name for p in found]}; pass tsv=")
        if found:
            return found[0]
    if tsv is True:
        raise FileNotFoundError(f"no .tsv split file in {str(root)!r}")
    return None


def _make_splits(names: list[str], root: Path, tsv, holdout: int) -> tuple[dict[str, np.ndarray], str]:
    everything = np.arange(len(names))
    tsv_path = _find_tsv(root, tsv)
    if tsv_path is None:
        if holdout < 2:
            raise ValueError(f"holdout must be >= 2 (every holdout-th image is a test image), got {holdout}")
        test = everything % holdout == 0
        splits = {"train": everything[~test], "test": everything[test], "all": everything}
        return splits, f"every {holdout}th image (sorted by name, from the first) is test"
    table = read_split_tsv(tsv_path)
    position = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(table) - set(position))
    if unknown:
        shown = ", ".join(unknown[:10]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
        raise ValueError(f"{str(tsv_path)!r} names {len(unknown)} images that are not in the COLMAP model: {shown}")
    splits: dict[str, list[int]] = {}
    for filename, split in table.items():
        splits.setdefault(split, []).append(position[filename])
    result = {split: np.array(sorted(indices), np.int64) for split, indices in splits.items()}
    result["all"] = everything
    return result, f"split file {tsv_path!s}"


def load_scene(
    scene_dir: str | os.PathLike,
    *,
    downscale: int = 1,
    images: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    tsv: str | os.PathLike | bool | None = None,
    holdout: int = 8,
    use_downscaled_folder: bool = True,
) -> Scene:
    """Read a COLMAP scene (see the module docstring for the layout, downscaling and split rules).

    Args:
      scene_dir: the scene folder.
      downscale: integer factor r: K / r and floor(size / r).
      images: the image folder (default: `images/` beside the model's `sparse/`); relative to `scene_dir`.
      model_dir: the model folder (default: the first of sparse/0, sparse, dense/sparse).
      tsv: a Phototourism split file; None finds `*.tsv` in the scene folder, False ignores any.
      holdout: without a .tsv, every `holdout`-th image is a test image.
      use_downscaled_folder: read `images_<r>/` when it exists instead of resizing.
    """
    root = Path(scene_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"COLMAP scene folder {str(root)!r} does not exist")
    if int(downscale) != downscale or downscale < 1:
        raise ValueError(f"downscale must be a positive integer, got {downscale!r}")
    downscale = int(downscale)
    model = Path(model_dir).expanduser() if model_dir is not None else find_model_dir(root)
    model = model if model.is_absolute() else root / model
    ext = model_format(model)
    cameras, colmap_images, points = read_model(model, ext)
    cameras_file = model / f"cameras{ext}"

    if images is not None:
        image_dir = Path(images).expanduser()
        image_dir = image_dir if image_dir.is_absolute() else root / image_dir
    else:
        # sparse/0 -> <scene>/images, sparse -> <scene>/images, dense/sparse -> <scene>/dense/images
        base = model.parent.parent if model.name == "0" and model.parent.name == "sparse" else model.parent
        image_dir = base / "images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {str(image_dir)!r} of COLMAP scene {str(root)!r} does not exist")
    scaled_dir = image_dir.parent / f"{image_dir.name}_{downscale}"
    prescaled = downscale > 1 and use_downscaled_folder and scaled_dir.is_dir()
    read_dir = scaled_dir if prescaled else image_dir

    views = []
    for colmap_image in sorted(colmap_images.values(), key=lambda image: image.name):
        if colmap_image.camera_id not in cameras:
            raise ValueError(
                f"{str(model / ('images' + ext))!r}: image {colmap_image.name!r} refers to camera "
                f"{colmap_image.camera_id}, which {str(cameras_file)!r} does not have"
            )
        camera = cameras[colmap_image.camera_id]
        fx, fy, cx, cy = pinhole_intrinsics(camera, cameras_file)
        views.append(
            SceneImage(
                name=colmap_image.name,
                path=read_dir / colmap_image.name,
                image_id=colmap_image.id,
                camera_id=camera.id,
                R=qvec_to_rotmat(colmap_image.qvec).astype(np.float32),
                t=np.asarray(colmap_image.tvec, np.float32),
                K=intrinsics_matrix(fx / downscale, fy / downscale, cx / downscale, cy / downscale),
                width=camera.width // downscale,
                height=camera.height // downscale,
                camera_size=(camera.width, camera.height),
            )
        )
    if not views:
        raise ValueError(f"{str(model / ('images' + ext))!r} has no registered images")
    splits, split_rule = _make_splits([view.name for view in views], root, tsv, holdout)
    return Scene(
        root=root,
        model_dir=model,
        image_dir=read_dir,
        downscale=downscale,
        prescaled=prescaled,
        images=views,
        points_xyz=points.xyz.astype(np.float32),
        points_rgb=points.rgb.astype(np.uint8),
        points_error=points.error.astype(np.float32),
        splits=splits,
        split_rule=split_rule,
    )


class ColmapSource:
    """Random-access views of one split of a COLMAP scene; images are decoded (and resized) when read.

    `source[i]` -> {"image": uint8 (H, W, 3), "K": float32 (3, 3), "R": float32 (3, 3), "t": float32 (3,),
    "image_id": int32, "width": int32, "height": int32}. Views may differ in size: batching is the consumer's.
    Every image of the split must exist at construction (one error lists the missing ones).

    Args:
      scene: a `Scene` (to share one read between splits) or a scene folder (`load_scene(scene, **kwargs)`).
      split: "train", "test", "all" (None) or another split value of the .tsv.
      resample: "bicubic" (default, as 3DGS / GS-W resize with PIL), "box" (area), "bilinear", "lanczos".
    """

    def __init__(
        self, scene: Scene | str | os.PathLike, split: str | None = "train", *, resample: str = "bicubic", **kwargs
    ):
        if resample not in RESAMPLING:
            raise ValueError(f"unknown resample {resample!r}; expected one of {sorted(RESAMPLING)}")
        if isinstance(scene, Scene):
            if kwargs:
                raise TypeError(f"scene options {sorted(kwargs)} only apply when loading a scene folder")
        else:
            scene = load_scene(scene, **kwargs)
        self.scene, self.split, self.resample = scene, "all" if split is None else split, resample
        self.indices = scene.split_indices(self.split)
        if not len(self.indices):
            raise ValueError(f"split {self.split!r} of {str(scene.root)!r} has no images ({scene.split_rule})")
        missing = [str(scene.images[i].path) for i in self.indices if not scene.images[i].path.is_file()]
        if missing:
            shown = ", ".join(repr(path) for path in missing[:10])
            more = f", ... ({len(missing)} in all)" if len(missing) > 10 else ""
            raise FileNotFoundError(
                f"{len(missing)} images of the COLMAP model {str(scene.model_dir)!r} are missing: {shown}{more}"
            )

    @property
    def views(self) -> list[SceneImage]:
        """The SceneImage of each index of this source."""
        return [self.scene.images[i] for i in self.indices]

    def load_image(self, view: SceneImage) -> np.ndarray:
        """The uint8 (height, width, 3) image of a view at the scene's downscale."""
        try:
            image = load_image_rgb(view.path)
        except Exception as error:  # PIL raises several types; the path is what the user needs
            raise ValueError(f"cannot decode image {str(view.path)!r}: {type(error).__name__}: {error}") from error
        target = (view.width, view.height)
        size = (image.shape[1], image.shape[0])
        if size == target:
            return image
        if self.scene.prescaled:
            # images_<r>/ made by other tools may round instead of floor: accept one pixel of difference.
            acceptable = all(abs(a - b) <= 1 for a, b in zip(size, target, strict=True))
            expected = f"{target[0]}x{target[1]} (+-1) for downscale {self.scene.downscale}"
        else:
            acceptable = size == view.camera_size
            expected = f"{view.camera_size[0]}x{view.camera_size[1]} (its size in the model)"
        if not acceptable:
            raise ValueError(
                f"image {str(view.path)!r} is {size[0]}x{size[1]} but camera {view.camera_id} expects {expected}; "
                f"are these the undistorted images of this model?"
            )
        return np.asarray(PILImage.fromarray(image).resize(target, RESAMPLING[self.resample]), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Example:
        view = self.scene.images[self.indices[_check_index(index, len(self.indices))]]
        return {
            "image": self.load_image(view),
            "K": view.K.copy(),
            "R": view.R.copy(),
            "t": view.t.copy(),
            "image_id": np.int32(view.image_id),
            "width": np.int32(view.width),
            "height": np.int32(view.height),
        }

    def __repr__(self) -> str:
        return (
            f"ColmapSource({str(self.scene.root)!r}, split={self.split!r}, len={len(self)}, "
            f"downscale={self.scene.downscale}, points={len(self.scene.points_xyz)})"
        )


def colmap_source(path: str, split: str | None = "train", **kwargs: Any) -> ColmapSource:
    """`get_source("colmap:<scene dir>", split=..., downscale=..., tsv=..., ...)` -> ColmapSource."""
    return ColmapSource(path, split, **kwargs)


def register() -> None:
    """Register the prefix "colmap:" (idempotent)."""
    from zoo.data.registry import register_prefix

    register_prefix("colmap", colmap_source, argument="scene dir")


register()
