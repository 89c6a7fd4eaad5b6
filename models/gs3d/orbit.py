"""Novel-view orbits and the images people look at: a look-at camera path around the scene, rendered frames saved as
an animated GIF (PIL) or mp4 (imageio + PyAV), and visibility masks as PNGs and a contact sheet.

    from models.gs3d.orbit import orbit_from_cameras, render_frames, save_gif
    orbit = orbit_from_cameras(train_viewmats, num_frames=48)     # [48, 4, 4] world-to-camera (OpenCV axes)
    frames = render_frames(model, orbit, K, width, height)         # uint8 [48, H, W, 3]
    save_gif(frames, "orbit.gif", fps=12)

Cameras follow the rasterizer's convention: world-to-camera `viewmat` [4, 4], camera x right, y down, z forward
(COLMAP / OpenCV). Everything takes arrays; nothing here reads a dataset.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.imaging import join_with_gap, overlay_mask


class OrbitFrame(NamedTuple):
    """Where an orbit goes: the point it looks at, the world up vector, the horizontal radius and the height of the
    circle above `target` along `up`."""

    target: np.ndarray
    up: np.ndarray
    radius: float
    height: float


def camera_centres(viewmats: np.ndarray) -> np.ndarray:
    """World positions [N, 3] of world-to-camera matrices [N, 4, 4] (c = -R^T t)."""
    viewmats = np.asarray(viewmats, np.float64)
    rotation, translation = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -np.einsum("nji,nj->ni", rotation, translation)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """World-to-camera [4, 4] of a camera at `eye` looking at `target` (camera z forward, y down, x right), with the
    image's up direction as close to `up` as the view allows."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    forward = target - eye
    if np.linalg.norm(forward) < 1e-12:
        raise ValueError("look_at: the eye is at the target")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at: the view direction is parallel to up")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    viewmat = np.eye(4)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ eye
    return viewmat.astype(np.float32)


def orbit_frame(viewmats: np.ndarray) -> OrbitFrame:
    """The circle the training cameras roughly lie on: `target` is the point nearest to all their optical axes (least
    squares; the mean of the centres if the axes are near parallel), `up` the mean of their up vectors (-y of each
    camera), `radius` the mean distance of the centres from the up axis through the target, `height` their mean
    height above the target along up."""
    viewmats = np.asarray(viewmats, np.float64)
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4) or len(viewmats) < 1:
        raise ValueError(f"viewmats must be [N, 4, 4] with N >= 1, got {viewmats.shape}")
    centres = camera_centres(viewmats)
    axes = viewmats[:, 2, :3]  # each camera's forward direction (row 2 of R) in world coordinates
    projector = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]  # onto the plane normal to each axis
    system, rhs = projector.sum(0), np.einsum("nij,nj->i", projector, centres)
    target = np.linalg.solve(system, rhs) if np.linalg.cond(system) < 1e6 else centres.mean(0)
    up = -viewmats[:, 1, :3].mean(0)
    if np.linalg.norm(up) < 1e-9:
        raise ValueError("the training cameras' up vectors cancel out; give `up` explicitly")
    up /= np.linalg.norm(up)
    offsets = centres - target
    heights = offsets @ up
    horizontal = offsets - heights[:, None] * up
    radius = float(np.linalg.norm(horizontal, axis=1).mean())
    if radius < 1e-9:
        raise ValueError("the training cameras lie on the up axis through the target: no orbit radius")
    return OrbitFrame(target.astype(np.float32), up.astype(np.float32), radius, float(heights.mean()))


def orbit_cameras(
    frame: OrbitFrame,
    num_frames: int,
    *,
    start: np.ndarray | None = None,
    radius_scale: float = 1.0,
    height_scale: float = 1.0,
) -> np.ndarray:
    """[num_frames, 4, 4] world-to-camera matrices on a full circle about `frame.up` through `frame.target`, each
    looking at the target. `start`: a world point whose direction from the axis starts the circle (e.g. the first
    training camera's centre)."""
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    up = np.asarray(frame.up, np.float64)
    target = np.asarray(frame.target, np.float64)
    seed = np.asarray(start, np.float64) - target if start is not None else np.array([1.0, 0.0, 0.0])
    first = seed - (seed @ up) * up
    if np.linalg.norm(first) < 1e-9:
        first = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    first /= np.linalg.norm(first)
    second = np.cross(up, first)
    radius, height = frame.radius * float(radius_scale), frame.height * float(height_scale)
    angles = 2.0 * np.pi * np.arange(int(num_frames)) / int(num_frames)
    eyes = target + height * up + radius * (np.cos(angles)[:, None] * first + np.sin(angles)[:, None] * second)
    return np.stack([look_at(eye, target, up) for eye in eyes])


def orbit_from_cameras(viewmats: np.ndarray, num_frames: int = 48, **kwargs: Any) -> np.ndarray:
    """`orbit_cameras` on the circle of the training cameras (`orbit_frame`), starting at the first one."""
    frame = orbit_frame(viewmats)
    return orbit_cameras(frame, num_frames, start=camera_centres(np.asarray(viewmats)[:1])[0], **kwargs)


def to_uint8(images: Any) -> np.ndarray:
    """Float images in [0, 1] (any leading shape) -> uint8 (rounded, clipped)."""
    return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def render_frames(
    model: nnx.Module,
    viewmats: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    background: Sequence[float] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """uint8 frames [N, H, W, 3] of `model.render` (a `GaussianSplats`, or a `WildGS` with its cached reference SH)
    for each world-to-camera matrix (one compiled render for all; `progress` shows a tqdm bar)."""
    viewmats = np.asarray(viewmats, np.float32)
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must be [N, 4, 4], got {viewmats.shape}")
    bg = None if background is None else jnp.asarray(background, jnp.float32).reshape(3)
    graphdef, state = nnx.split(model)
    intrinsics = jnp.asarray(K, jnp.float32)
    steps = range(len(viewmats))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="rendering", unit="frame")
    return np.stack(
        [
            np.asarray(
                _render_uint8(graphdef, state, jnp.asarray(viewmats[i]), intrinsics, int(width), int(height), bg)
            )
            for i in steps
        ]
    )


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _render_uint8(graphdef, state, viewmat, K, width: int, height: int, background):
    """One render as uint8 [H, W, 3]; module-level so every `render_frames` call on the same model structure reuses
    one compiled program (the SH cache of a WildGS is state, so a new reference does not recompile)."""
    image = nnx.merge(graphdef, state).render(viewmat, K, width, height, background=background).image
    return jnp.round(jnp.clip(image[0], 0.0, 1.0) * 255.0).astype(jnp.uint8)


def _output_path(path: str | os.PathLike, suffixes: tuple[str, ...]) -> Path:
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{path}: expected a file ending in {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder of {path} does not exist (create {path.parent} first)")
    return path


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 1:
        raise ValueError(f"frames must be [N >= 1, H, W, 3], got {frames.shape}")
    return frames if frames.dtype == np.uint8 else to_uint8(frames)


def save_gif(frames: np.ndarray, path: str | os.PathLike, fps: float = 12.0) -> Path:
    """Animated GIF (PIL, looping forever) of uint8 (or [0, 1] float) frames [N, H, W, 3]."""
    from PIL import Image

    frames = _check_frames(frames)
    path = _output_path(path, (".gif",))
    images = [Image.fromarray(frame) for frame in frames]
    duration = max(round(1000.0 / float(fps)), 10)  # GIF delays are in 10 ms units
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False)
    return path


def mp4_available() -> str | None:
    """None when `save_mp4` can write (imageio with PyAV), else why not."""
    try:
        import av  # noqa: F401
        import imageio.v3  # noqa: F401
    except ImportError as err:
        return f"mp4 needs imageio and av (pip install imageio av): {err}"
    return None


def save_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float = 24.0) -> Path:
    """H.264 mp4 (imageio's PyAV plugin, yuv420p) of frames [N, H, W, 3]; odd sizes are padded to even by repeating
    the last row / column (yuv420p needs even sizes)."""
    reason = mp4_available()
    if reason:
        raise ImportError(reason)
    import imageio.v3 as iio

    frames = _check_frames(frames)
    path = _output_path(path, (".mp4",))
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    iio.imwrite(path, frames, plugin="pyav", codec="libx264", fps=float(fps),
                out_pixel_format="yuv420p")  # fmt: skip
    return path


def save_mask_pngs(masks: np.ndarray, folder: str | os.PathLike, names: Sequence[str] | None = None) -> list[Path]:
    """Masks [N, H, W] in [0, 1] (1 = static) as 8-bit greyscale PNGs in `folder` (created), one per mask, named
    `names[i]` + ".png" (default mask_000.png, ...). Returns the paths."""
    from PIL import Image

    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {masks.shape}")
    names = [f"mask_{i:03d}" for i in range(len(masks))] if names is None else [str(n) for n in names]
    if len(names) != len(masks):
        raise ValueError(f"{len(names)} names for {len(masks)} masks")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for mask, name in zip(masks, names, strict=True):
        path = folder / f"{Path(name).stem}.png"
        Image.fromarray(to_uint8(mask), mode="L").save(path)
        paths.append(path)
    return paths


def mask_contact_sheet(
    images: np.ndarray, masks: np.ndarray, true_masks: np.ndarray | None = None, *, threshold: float = 0.5
) -> np.ndarray:
    """uint8 contact sheet, one column per view: the image, the predicted mask (grey, 1 = static), the image with the
    predicted transient pixels (mask < `threshold`) in red, and, given `true_masks` [N, H, W] (True = occluder),
    the image with the true occluders in blue."""
    images, masks = _check_frames(images), np.asarray(masks, np.float32)
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks {masks.shape} do not match images {images.shape}")
    if true_masks is not None and np.asarray(true_masks).shape != masks.shape:
        raise ValueError(f"true_masks {np.asarray(true_masks).shape} do not match masks {masks.shape}")
    columns = []
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        rows = [image, np.repeat(to_uint8(mask)[..., None], 3, -1), overlay_mask(image, mask < float(threshold))]
        if true_masks is not None:
            rows.append(overlay_mask(image, np.asarray(true_masks[i], bool), color=(0, 0, 255)))
        columns.append(join_with_gap(rows, axis=0))
    return join_with_gap(columns, axis=1)
