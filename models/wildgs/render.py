"""Render a trained Wild-GS workdir: the orbit and the `.ply` in one reference image's appearance, and the predicted
transient masks of the held-out (or training) views as PNGs plus a contact sheet.

    python -m models.wildgs.render --workdir runs/wildgs_duck --orbit orbit.gif --ply gaussians.ply --masks masks/ \
        [--reference 0] [--reference-split train] [--mask-split test] [--frames 48]

The appearance of `--reference` (an index into `--reference-split`) is predicted and cached first; the orbit and the
`.ply` use it. `--masks DIR` writes DIR/<view>.png (8-bit, 255 = static, 0 = transient) for each view of
`--mask-split` and DIR/contact_sheet.png (image, mask, predicted transients in red, the data's true occluders in blue
where it has them). A driver like `models.gs3d.render` (it rebuilds the run's task to read the scene).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from models.gs3d import orbit
from models.gs3d.render import build_parser, check_outputs, load_run, write_orbit
from models.wildgs import export


def split_source(task, split: str):
    """The task's train or held-out source."""
    if split == "train":
        return task.train_source
    if split == "test":
        if task.eval_source is None:
            raise SystemExit("this run has no held-out views (data.eval); use --mask-split train")
        return task.eval_source
    raise SystemExit(f"unknown split {split!r}: train or test")


def view_arrays(task, source, index: int) -> dict[str, np.ndarray]:
    """One view through the task's eval transform, cropped to its own size: image [H, W, 3] in [0, 1], viewmat, K and,
    where the data has them, occluder_mask [H, W]."""
    if not 0 <= index < len(source):
        raise SystemExit(f"view index {index} out of range: the split has {len(source)} views")
    example = source[index]
    out = task.view_transform(False)(example)
    width, height = (int(v) for v in out["size"])
    arrays = {"image": out["image"][:height, :width], "viewmat": out["viewmat"], "K": out["K"]}
    if "occluder_mask" in example:
        arrays["occluder_mask"] = np.asarray(example["occluder_mask"], bool)
    return arrays


def write_masks(run, folder: str, split: str) -> list[Path]:
    """Predicted visibility masks of every view of `split` as PNGs in `folder` plus `contact_sheet.png`."""
    from PIL import Image
    from tqdm.auto import tqdm

    source = split_source(run.task, split)
    names = [Path(view.name).stem for view in source.views]
    images, masks, truths = [], [], []
    for index in tqdm(range(len(source)), desc="masks", unit="view"):
        view = view_arrays(run.task, source, index)
        out = export.set_reference(run.model, view["image"], view["viewmat"], view["K"])
        images.append(view["image"])
        masks.append(np.asarray(out.mask))
        truths.append(view.get("occluder_mask"))
    paths = orbit.save_mask_pngs(np.stack(masks), folder, names)
    true_masks = np.stack(truths) if all(t is not None for t in truths) else None
    sheet = orbit.mask_contact_sheet(np.stack(images), np.stack(masks), true_masks,
                                     threshold=float(run.model.appearance.mask_threshold))  # fmt: skip
    sheet_path = Path(folder) / "contact_sheet.png"
    Image.fromarray(sheet).save(sheet_path)
    return [*paths, sheet_path]


def main(argv: list[str] | None = None) -> None:
    """`python -m models.wildgs.render`: see the module docstring."""
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--masks", default="", help="write the predicted transient masks into this folder")
    parser.add_argument("--reference", type=int, default=0, help="index of the reference view (its appearance)")
    parser.add_argument("--reference-split", default="train", choices=("train", "test"))
    parser.add_argument("--mask-split", default="test", choices=("train", "test"))
    args = parser.parse_args(argv)
    check_outputs(args, extra=("masks",))
    try:
        run = load_run(args.workdir, "wildgs")
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from err
    if args.masks:
        written = write_masks(run, args.masks, args.mask_split)
        print(f"wrote {len(written) - 1} masks and {written[-1]}")
    if args.orbit or args.ply:
        reference = view_arrays(run.task, split_source(run.task, args.reference_split), args.reference)
        export.set_reference(run.model, reference["image"], reference["viewmat"], reference["K"])
    if args.ply:
        path = export.save_ply(run.model, args.ply)
        print(f"wrote {path} ({int(run.model.num_active())} Gaussians, appearance of {args.reference_split} view "
              f"{args.reference})")  # fmt: skip
    if args.orbit:
        print(f"wrote {write_orbit(run, args)} ({args.frames} frames)")


if __name__ == "__main__":
    main(sys.argv[1:])
