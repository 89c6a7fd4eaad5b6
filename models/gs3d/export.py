"""Export the Gaussians as a `.ply` in the INRIA 3DGS layout that common viewers open, and read such a file back.

    from models.gs3d.export import save_ply, read_ply
    save_ply(model, "gaussians.ply")          # the active Gaussians of a `GaussianSplats` (or `WildGS`) model
    ply = read_ply("gaussians.ply")           # {"x": [N], ..., "rot_3": [N]} plus the header's property order

The layout is graphdeco's `GaussianModel.save_ply` (scene/gaussian_model.py): one `vertex` element, binary little
endian, float32 properties in this order: x y z, nx ny nz (zeros), f_dc_0..2, f_rest_0..44, opacity, scale_0..2,
rot_0..3. The conventions viewers rely on:
- f_dc / f_rest are channel-major: the [N, K, 3] coefficients are transposed to [N, 3, K] before flattening, so
  f_rest_0..14 are the red channel's 15 higher-order coefficients, f_rest_15..29 green, f_rest_30..44 blue;
- opacity is the pre-sigmoid logit, scale_i the log of the world-space standard deviation, rot_0..3 the quaternion
  (w, x, y, z) as stored (graphdeco does not normalise it either; viewers do);
- positions are world coordinates.
Only active slots are written. The SH are what the model renders (`model.sh_coefficients()`): for plain 3DGS the
pool's own, with the degree warm-up applied; for Wild-GS the cached SH of the current reference appearance
(`models.wildgs.export.save_ply` checks that one is set).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

PLY_MAGIC = b"ply\n"
END_HEADER = b"end_header\n"
# PLY scalar type names (both spellings of the spec) -> little-endian numpy dtypes.
PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2",
    "ushort": "<u2", "uint16": "<u2", "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}  # fmt: skip


def ply_property_names(sh_degree: int = 3) -> tuple[str, ...]:
    """The vertex properties of graphdeco's `construct_list_of_attributes`, in file order, for SH degree `sh_degree`
    (degree 3: 62 properties, 45 of them f_rest)."""
    if not 0 <= int(sh_degree) <= 3:
        raise ValueError(f"sh_degree must be in 0..3, got {sh_degree}")
    rest = 3 * ((int(sh_degree) + 1) ** 2 - 1)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return tuple(names)


def gaussians_to_ply_arrays(
    means: np.ndarray, sh: np.ndarray, opacity_logits: np.ndarray, log_scales: np.ndarray, quats_wxyz: np.ndarray
) -> np.ndarray:
    """[N, P] float32 rows in `ply_property_names` order from means [N, 3], SH [N, K, 3] (K = (degree + 1)^2),
    opacity logits [N], log scales [N, 3] and quaternions [N, 4] (w, x, y, z)."""
    means = np.asarray(means, np.float32)
    sh = np.asarray(sh, np.float32)
    count = means.shape[0]
    if means.shape != (count, 3):
        raise ValueError(f"means must be [N, 3], got {means.shape}")
    degree = round(float(np.sqrt(sh.shape[1]))) - 1 if sh.ndim == 3 else -1
    if sh.ndim != 3 or sh.shape[0] != count or sh.shape[2] != 3 or (degree + 1) ** 2 != sh.shape[1] or degree > 3:
        raise ValueError(f"sh must be [N, (degree + 1)^2, 3] with degree <= 3 and N = {count}, got {sh.shape}")
    shapes = {"opacity_logits": (np.asarray(opacity_logits).reshape(-1), (count,)),
              "log_scales": (np.asarray(log_scales), (count, 3)), "quats": (np.asarray(quats_wxyz), (count, 4))}  # fmt: skip
    for name, (value, shape) in shapes.items():
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
    # Channel-major (graphdeco's features.transpose(1, 2).flatten(1)): [N, K, 3] -> [N, 3, K] -> [N, 3K].
    f_dc = np.transpose(sh[:, :1], (0, 2, 1)).reshape(count, -1)
    f_rest = np.transpose(sh[:, 1:], (0, 2, 1)).reshape(count, -1)
    columns = [means, np.zeros_like(means), f_dc, f_rest, shapes["opacity_logits"][0][:, None],
               shapes["log_scales"][0], shapes["quats"][0]]  # fmt: skip
    return np.concatenate([np.asarray(c, np.float32) for c in columns], axis=1)


def write_ply(path: str | os.PathLike, rows: np.ndarray, names: tuple[str, ...]) -> Path:
    """Write float32 `rows` [N, P] as a binary little-endian PLY with one `vertex` element of properties `names`."""
    rows = np.asarray(rows, np.float32)
    if rows.ndim != 2 or rows.shape[1] != len(names):
        raise ValueError(f"rows must be [N, {len(names)}], got {rows.shape}")
    path = Path(path)
    if path.exists() and path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a .ply file path")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder of {path} does not exist (create {path.parent} first)")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {rows.shape[0]}"]
    header += [f"property float {name}" for name in names]
    header.append("end_header")
    with open(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(np.ascontiguousarray(rows, "<f4").tobytes())
    return path


def model_ply_rows(model: Any) -> np.ndarray:
    """The active Gaussians of a `GaussianSplats` model as [N, P] rows (`gaussians_to_ply_arrays`); raises when none
    is active."""
    active = np.asarray(model.active.value, bool)
    if not active.any():
        raise ValueError(
            "the model has no active Gaussians: nothing to export (load a trained pool: "
            "zoo.create_model(name, pretrained=workdir), or model.load_pool(...))"
        )
    return gaussians_to_ply_arrays(
        np.asarray(model.means())[active], np.asarray(model.sh_coefficients())[active],
        np.asarray(model.opacity_logits.value)[active], np.asarray(model.log_scales.value)[active],
        np.asarray(model.quats.value)[active],
    )  # fmt: skip


def save_ply(model: Any, path: str | os.PathLike) -> Path:
    """Write the active Gaussians of a `GaussianSplats` model to `path` in the INRIA 3DGS layout (module docstring);
    returns the path."""
    return write_ply(path, model_ply_rows(model), ply_property_names(int(model.max_sh_degree)))


def read_ply(path: str | os.PathLike) -> dict[str, Any]:
    """Read a PLY's `vertex` element: {property name: [N] array, ..., "_properties": names in file order,
    "_format": "binary_little_endian" | "ascii", "_header": header text}. Supports scalar properties in ascii and
    binary little endian (what 3DGS tools write); other elements after `vertex` are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PLY file at {path}")
    data = path.read_bytes()
    if not data.startswith(PLY_MAGIC):
        raise ValueError(f"{path} is not a PLY file (it does not start with 'ply')")
    end = data.find(END_HEADER)
    if end < 0:
        raise ValueError(f"{path}: PLY header has no 'end_header' line")
    header = data[: end + len(END_HEADER)].decode("ascii", errors="replace")
    fmt, elements, current = None, [], None
    for line in header.splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info", "end_header"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            current = {"name": words[1], "count": int(words[2]), "properties": []}
            elements.append(current)
        elif words[0] == "property":
            if current is None:
                raise ValueError(f"{path}: property before any element")
            if words[1] == "list":
                raise ValueError(f"{path}: list properties ({line.strip()!r}) are not supported")
            if words[1] not in PLY_TYPES:
                raise ValueError(f"{path}: unknown PLY type {words[1]!r}")
            current["properties"].append((words[2], PLY_TYPES[words[1]]))
    if fmt not in ("binary_little_endian", "ascii"):
        raise ValueError(f"{path}: PLY format {fmt!r} is not supported (binary_little_endian or ascii)")
    if not elements or elements[0]["name"] != "vertex":
        raise ValueError(f"{path}: the first PLY element must be 'vertex', got {[e['name'] for e in elements]}")
    vertex = elements[0]
    names = tuple(name for name, _ in vertex["properties"])
    body = data[end + len(END_HEADER) :]
    if fmt == "ascii":
        lines = body.decode("ascii").split("\n")[: vertex["count"]]
        table = np.array([[float(v) for v in ln.split()] for ln in lines], np.float64).reshape(-1, len(names))
        values = {name: table[:, i].astype(dtype) for i, (name, dtype) in enumerate(vertex["properties"])}
    else:
        dtype = np.dtype([(name, kind) for name, kind in vertex["properties"]])
        if len(body) < dtype.itemsize * vertex["count"]:
            raise ValueError(f"{path}: truncated: {vertex['count']} vertices need {dtype.itemsize * vertex['count']} "
                             f"bytes, the file has {len(body)}")  # fmt: skip
        records = np.frombuffer(body, dtype=dtype, count=vertex["count"])
        values = {name: np.array(records[name]) for name in names}
    return {**values, "_properties": names, "_format": fmt, "_header": header}


def ply_to_gaussians(ply: dict[str, Any]) -> dict[str, np.ndarray]:
    """Undo the layout: {"means" [N, 3], "sh" [N, K, 3], "opacity_logits" [N], "log_scales" [N, 3], "quats" [N, 4]
    (w, x, y, z)} from `read_ply`'s dict (graphdeco's `load_ply`)."""
    missing = [n for n in ("x", "y", "z", "f_dc_0", "opacity", "scale_0", "rot_0") if n not in ply]
    if missing:
        raise ValueError(f"not a 3DGS PLY: properties {missing} are missing")
    rest = sorted((n for n in ply["_properties"] if n.startswith("f_rest_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    count = len(ply["x"])
    if len(rest) % 3:
        raise ValueError(f"{len(rest)} f_rest properties: not a multiple of 3 channels")
    stack = lambda names: np.stack([np.asarray(ply[n], np.float32) for n in names], axis=1)
    f_dc = stack(["f_dc_0", "f_dc_1", "f_dc_2"])[:, :, None]  # [N, 3, 1]
    f_rest = stack(rest).reshape(count, 3, len(rest) // 3) if rest else np.zeros((count, 3, 0), np.float32)
    return {
        "means": stack(["x", "y", "z"]),
        "sh": np.transpose(np.concatenate([f_dc, f_rest], axis=2), (0, 2, 1)),
        "opacity_logits": np.asarray(ply["opacity"], np.float32),
        "log_scales": stack(["scale_0", "scale_1", "scale_2"]),
        "quats": stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
    }
