"""Render a trained plain-3DGS workdir: a novel-view orbit (GIF / mp4) and the `.ply` of its Gaussians.

    python -m models.gs3d.render --workdir runs/gs3d_duck --orbit orbit.gif --ply gaussians.ply [--frames 48]

This is a driver like `train.py`, not a modelling file: it rebuilds the run's task from the config saved in the
checkpoint (`models.gs3d.tasks`, which reads the scene) to get the training cameras, the intrinsics, the canvas and
the background. What it calls (`models.gs3d.orbit`, `models.gs3d.export`) takes arrays. `models.wildgs.render`
adds the reference appearance and the transient masks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from models.gs3d import export, orbit


class Run(NamedTuple):
    """A trained workdir: the model, the rebuilt task, the saved config and the train cameras [N, 4, 4]."""

    model: Any
    task: Any
    config: Any
    train_viewmats: np.ndarray


def viewmat_of(view) -> np.ndarray:
    """World-to-camera [4, 4] of a `SceneImage` (x_cam = R x_world + t)."""
    viewmat = np.eye(4, dtype=np.float32)
    viewmat[:3, :3], viewmat[:3, 3] = view.R, view.t
    return viewmat


def load_run(workdir: str | os.PathLike, family: str = "gs3d") -> Run:
    """Load a workdir written by `train.py` for model `family` ("gs3d" or "wildgs"); clear errors for a missing or
    foreign workdir."""
    import ml_collections

    import zoo
    from zoo.checkpoint import read_meta

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {str(workdir)!r} does not exist (train one: python train.py --config "
                                f"configs/{family}.py:... --workdir {workdir})")  # fmt: skip
    meta = read_meta(str(workdir))  # FileNotFoundError when it holds no checkpoint
    saved = meta.get("model_name")
    if saved != family:
        hint = f": use python -m models.{saved}.render" if saved in ("gs3d", "wildgs") else ""
        raise ValueError(f"workdir {str(workdir)!r} holds model {saved!r}, not {family!r}{hint}")
    if not meta.get("config"):
        raise ValueError(f"workdir {str(workdir)!r}: the checkpoint metadata has no saved config (not a train.py run)")
    config = ml_collections.ConfigDict(meta["config"])
    if family == "wildgs":
        from models.wildgs.tasks import WildGSTask as task_cls
    else:
        from models.gs3d.tasks import GaussianSplattingTask as task_cls
    task = task_cls(config)
    model = zoo.create_model(family, pretrained=str(workdir))
    viewmats = np.stack([viewmat_of(view) for view in task.train_source.views])
    return Run(model, task, config, viewmats)


def camera_of(task) -> tuple[np.ndarray, int, int]:
    """(K [3, 3], width, height) of the first training view: the orbit's intrinsics."""
    view = task.train_source.views[0]
    return np.asarray(view.K, np.float32), int(view.width), int(view.height)


def build_parser(description: str) -> argparse.ArgumentParser:
    """The options both families share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", required=True, help="a train.py workdir (its latest checkpoint is used)")
    parser.add_argument("--orbit", default="", help="write the orbit here (.gif, or .mp4 with imageio + av)")
    parser.add_argument("--ply", default="", help="write the active Gaussians here (INRIA 3DGS .ply)")
    parser.add_argument("--frames", type=int, default=48, help="orbit frames (a full turn)")
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--radius-scale", type=float, default=1.0, help="orbit radius x the training cameras' one")
    parser.add_argument("--height-scale", type=float, default=1.0, help="orbit height x the training cameras' one")
    return parser


def check_outputs(args: argparse.Namespace, extra: tuple[str, ...] = ()) -> None:
    """At least one output asked for, and the output folders exist (before the slow part)."""
    if not (args.orbit or args.ply or any(getattr(args, name) for name in extra)):
        wanted = ", ".join(["--orbit", "--ply", *(f"--{name}" for name in extra)])
        raise SystemExit(f"nothing to do: give at least one of {wanted}")
    for name in ("orbit", "ply"):
        value = getattr(args, name)
        if value and not Path(value).resolve().parent.is_dir():
            raise SystemExit(f"--{name} {value}: the folder {Path(value).resolve().parent} does not exist")
    if args.orbit and Path(args.orbit).suffix.lower() not in (".gif", ".mp4"):
        raise SystemExit(f"--orbit {args.orbit}: give a .gif or .mp4 file")
    if args.orbit.lower().endswith(".mp4") and orbit.mp4_available():
        raise SystemExit(orbit.mp4_available())


def write_orbit(run: Run, args: argparse.Namespace) -> Path:
    """Render the orbit of `args` and save it (GIF or mp4 by the suffix)."""
    K, width, height = camera_of(run.task)
    cameras = orbit.orbit_from_cameras(run.train_viewmats, args.frames, radius_scale=args.radius_scale,
                                       height_scale=args.height_scale)  # fmt: skip
    frames = orbit.render_frames(run.model, cameras, K, width, height, background=run.task.background, progress=True)
    if args.orbit.lower().endswith(".mp4"):
        return orbit.save_mp4(frames, args.orbit, fps=args.fps)
    return orbit.save_gif(frames, args.orbit, fps=args.fps)


def main(argv: list[str] | None = None) -> None:
    """`python -m models.gs3d.render`: see the module docstring."""
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    check_outputs(args)
    try:
        run = load_run(args.workdir, "gs3d")
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from err
    if args.ply:
        path = export.save_ply(run.model, args.ply)
        print(f"wrote {path} ({int(run.model.num_active())} Gaussians)")
    if args.orbit:
        print(f"wrote {write_orbit(run, args)} ({args.frames} frames)")


if __name__ == "__main__":
    main(sys.argv[1:])
