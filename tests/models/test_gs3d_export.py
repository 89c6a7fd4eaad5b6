"""Outputs of a trained 3DGS / Wild-GS model (models/gs3d/export.py, orbit.py, render.py; models/wildgs/export.py):
the INRIA `.ply` layout (header, property order, viewer conventions, round trip, active slots only), the orbit
camera path, rendered frames, GIF / mp4, mask PNGs and the contact sheet, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from models.gs3d import export, orbit
from models.gs3d import pool as pool_lib
from models.gs3d.model import GaussianSplats

CAPACITY, ACTIVE = 8, 5
SCALE = 2.0  # position_scale: stored positions are world / SCALE


def _pool_model() -> tuple[GaussianSplats, dict[str, np.ndarray]]:
    """8 slots, the first 5 active, SH degree 3 with every band on (no warm-up), distinct values everywhere;
    slot 0 is a known Gaussian: opacity 0.7, scales (0.05, 0.1, 0.2), quaternion (w, x, y, z) = (0.9, 0.1, 0.2, 0.3)."""
    pool = pool_lib.empty_pool(CAPACITY, sh_degree=3)
    rng = np.random.default_rng(0)
    pool["positions"][:] = rng.uniform(-0.5, 0.5, (CAPACITY, 3))
    pool["quats"][:] = rng.normal(size=(CAPACITY, 4))
    pool["quats"][0] = [0.9, 0.1, 0.2, 0.3]
    pool["log_scales"][:] = np.log(rng.uniform(0.02, 0.2, (CAPACITY, 3)))
    pool["log_scales"][0] = np.log([0.05, 0.1, 0.2])
    pool["opacity_logits"][:] = rng.normal(size=CAPACITY)
    pool["opacity_logits"][0] = np.log(0.7 / 0.3)
    pool["sh_dc"][:] = rng.normal(size=pool["sh_dc"].shape)
    # sh_rest[i, k, c] = 1000 i + 100 c + k: channel-major flattening puts it at f_rest_{15 c + k}.
    i, k, c = np.meshgrid(np.arange(CAPACITY), np.arange(15), np.arange(3), indexing="ij")
    pool["sh_rest"][:] = 1000 * i + 100 * c + k
    pool["active"][:ACTIVE] = True
    model = GaussianSplats(CAPACITY, sh_degree=3, sh_degree_interval=0)
    model.load_pool(pool, position_scale=SCALE)
    return model, pool


# ---------------------------------------------------------------------------------------------- .ply
def test_ply_header_order_and_viewer_conventions(tmp_path):
    model, pool = _pool_model()
    path = export.save_ply(model, tmp_path / "g.ply")
    data = path.read_bytes()
    names = export.ply_property_names(3)
    assert len(names) == 62 and names[:9] == ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
    assert names[9:54] == tuple(f"f_rest_{j}" for j in range(45))
    assert names[54:] == ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 5\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    assert data[: len(header)] == header.encode("ascii")
    # The body read independently of read_ply: little-endian float32, 62 per vertex, nothing after.
    body = np.frombuffer(data[len(header) :], "<f4")
    assert body.size == ACTIVE * 62
    rows = body.reshape(ACTIVE, 62)
    column = {name: rows[:, j] for j, name in enumerate(names)}
    # The known Gaussian (slot 0) as a viewer reads it: sigmoid(opacity), exp(scale), normalised (w, x, y, z).
    assert 1 / (1 + np.exp(-column["opacity"][0])) == pytest.approx(0.7, rel=1e-6)
    np.testing.assert_allclose(np.exp([column[f"scale_{j}"][0] for j in range(3)]), [0.05, 0.1, 0.2], rtol=1e-6)
    np.testing.assert_array_equal([column[f"rot_{j}"][0] for j in range(4)], np.float32([0.9, 0.1, 0.2, 0.3]))
    np.testing.assert_allclose(rows[:, 0:3], pool["positions"][:ACTIVE] * SCALE, rtol=1e-6)  # world positions
    np.testing.assert_array_equal(rows[:, 3:6], 0.0)  # normals
    np.testing.assert_array_equal(rows[:, 6:9], pool["sh_dc"][:ACTIVE, 0])
    for slot in range(ACTIVE):  # channel-major rest: f_rest_{15 c + k} = sh_rest[slot, k, c]
        for channel in range(3):
            expect = 1000 * slot + 100 * channel + np.arange(15)
            np.testing.assert_array_equal(rows[slot, 9 + 15 * channel : 24 + 15 * channel], expect)


def test_ply_round_trip_keeps_only_active_slots(tmp_path):
    model, pool = _pool_model()
    ply = export.read_ply(export.save_ply(model, tmp_path / "g.ply"))
    assert ply["_format"] == "binary_little_endian" and ply["_properties"] == export.ply_property_names(3)
    back = export.ply_to_gaussians(ply)
    assert back["means"].shape == (ACTIVE, 3)  # the 3 inactive slots are not written
    np.testing.assert_allclose(back["means"], pool["positions"][:ACTIVE] * SCALE, rtol=1e-6)
    sh = np.concatenate([pool["sh_dc"], pool["sh_rest"]], axis=1)[:ACTIVE]
    np.testing.assert_array_equal(back["sh"], sh)
    np.testing.assert_array_equal(back["opacity_logits"], pool["opacity_logits"][:ACTIVE])
    np.testing.assert_array_equal(back["log_scales"], pool["log_scales"][:ACTIVE])
    np.testing.assert_array_equal(back["quats"], pool["quats"][:ACTIVE])
    # Deactivate slot 1: it disappears, the others keep their order.
    active = np.asarray(model.active.value).copy()
    active[1] = False
    model.set_pool({"active": active})
    back = export.ply_to_gaussians(export.read_ply(export.save_ply(model, tmp_path / "h.ply")))
    np.testing.assert_array_equal(back["quats"], pool["quats"][[0, 2, 3, 4]])


def test_ply_reads_in_trimesh(tmp_path):
    """An independent PLY reader (trimesh, a project dependency for the embedded scenes) sees the same vertices and
    properties."""
    import trimesh

    model, pool = _pool_model()
    path = export.save_ply(model, tmp_path / "g.ply")
    cloud = trimesh.load(path)
    np.testing.assert_allclose(np.asarray(cloud.vertices), pool["positions"][:ACTIVE] * SCALE, rtol=1e-6)
    raw = cloud.metadata["_ply_raw"]["vertex"]["data"]
    assert raw.dtype.names == export.ply_property_names(3)
    ours = export.read_ply(path)
    for name in raw.dtype.names:
        np.testing.assert_array_equal(raw[name], ours[name])


def test_ply_exports_what_renders_with_the_sh_warm_up(tmp_path):
    """At iteration 0 with a 1000-step warm-up only degree 0 renders: the exported rest coefficients are zero."""
    _, pool = _pool_model()
    model = GaussianSplats(CAPACITY, sh_degree=3, sh_degree_interval=1000)
    model.load_pool(pool, position_scale=SCALE)
    back = export.ply_to_gaussians(export.read_ply(export.save_ply(model, tmp_path / "g.ply")))
    np.testing.assert_array_equal(back["sh"][:, 1:], 0.0)
    np.testing.assert_array_equal(back["sh"][:, 0], pool["sh_dc"][:ACTIVE, 0])


def test_ply_ascii_read_and_bad_files(tmp_path):
    ascii_ply = tmp_path / "a.ply"
    ascii_ply.write_text("ply\nformat ascii 1.0\ncomment x\nelement vertex 2\nproperty float x\nproperty uchar red\n"
                         "end_header\n1.5 7\n-2 255\n")  # fmt: skip
    ply = export.read_ply(ascii_ply)
    np.testing.assert_array_equal(ply["x"], [1.5, -2.0])
    np.testing.assert_array_equal(ply["red"], [7, 255])
    with pytest.raises(FileNotFoundError, match="no PLY file"):
        export.read_ply(tmp_path / "missing.ply")
    (tmp_path / "b.ply").write_bytes(b"PK\x03\x04 not a ply")
    with pytest.raises(ValueError, match="not a PLY file"):
        export.read_ply(tmp_path / "b.ply")
    (tmp_path / "c.ply").write_bytes(b"ply\nformat binary_big_endian 1.0\nelement vertex 1\nproperty float x\n"
                                     b"end_header\n\x00\x00\x00\x00")  # fmt: skip
    with pytest.raises(ValueError, match="not supported"):
        export.read_ply(tmp_path / "c.ply")
    (tmp_path / "d.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
                                     b"end_header\n\x00\x00\x00\x00")  # fmt: skip
    with pytest.raises(ValueError, match="truncated"):
        export.read_ply(tmp_path / "d.ply")
    with pytest.raises(ValueError, match="not a 3DGS PLY"):
        export.ply_to_gaussians(ply)


def test_ply_export_errors(tmp_path):
    model, _ = _pool_model()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.save_ply(model, tmp_path / "no" / "such" / "g.ply")
    with pytest.raises(IsADirectoryError):
        export.save_ply(model, tmp_path)
    model.set_pool({"active": np.zeros(CAPACITY, bool)})
    with pytest.raises(ValueError, match="no active Gaussians"):
        export.save_ply(model, tmp_path / "g.ply")
    with pytest.raises(ValueError, match="sh must be"):
        export.gaussians_to_ply_arrays(np.zeros((2, 3)), np.zeros((2, 5, 3)), np.zeros(2), np.zeros((2, 3)),
                                       np.zeros((2, 4)))  # fmt: skip


def test_wildgs_ply_needs_a_reference_and_writes_the_cached_sh(tmp_path):
    from models.wildgs import export as wild_export
    from models.wildgs.model import WildGS
    from tests.helpers import numpy_random_init

    tiny = {
        "global_dim": 4, "local_dim": 4, "fusion_widths": (8,),
        "parsing": {"stem_width": 4, "widths": (4, 4, 4, 4), "depths": (1, 1, 1, 1),
                    "decoder_widths": (4, 4, 4, 4, 4), "global_hidden": 4},
        "triplane": {"resolution": 4, "plane_channels": 4, "unet_widths": (4, 4), "local_hidden": 4},
    }  # fmt: skip
    abstract = nnx.eval_shape(lambda: WildGS(CAPACITY, feature_dim=4, appearance=tiny, rngs=nnx.Rngs(0)))
    model, _ = numpy_random_init(abstract, 0)
    _, pool = _pool_model()
    model.load_pool(pool, position_scale=SCALE)
    with pytest.raises(ValueError, match="no reference appearance"):
        wild_export.save_ply(model, tmp_path / "w.ply")
    with pytest.raises(TypeError, match="not a WildGS"):
        wild_export.save_ply(_pool_model()[0], tmp_path / "w.ply")
    rng = np.random.default_rng(1)
    sh_dc, sh_rest = rng.normal(size=(CAPACITY, 1, 3)), rng.normal(size=(CAPACITY, 15, 3))
    model.set_reference_sh(sh_dc, sh_rest)
    back = export.ply_to_gaussians(export.read_ply(wild_export.save_ply(model, tmp_path / "w.ply")))
    # The reference SH render (the degree warm-up of the model applies: 1000 steps, iteration 0 -> degree 0).
    np.testing.assert_allclose(back["sh"][:, 0], sh_dc[:ACTIVE, 0], rtol=1e-6)
    np.testing.assert_array_equal(back["sh"][:, 1:], 0.0)
    np.testing.assert_array_equal(back["quats"], pool["quats"][:ACTIVE])


# ---------------------------------------------------------------------------------------------- orbit
def _ring_cameras(count: int = 6, radius: float = 3.0, height: float = 1.0, target=(0.5, -0.2, 0.3)) -> np.ndarray:
    """Training cameras on a circle about the world z axis (up), all looking at `target`."""
    target = np.asarray(target)
    angles = np.linspace(0.0, 2 * np.pi, count, endpoint=False) + 0.3
    eyes = target + np.stack([radius * np.cos(angles), radius * np.sin(angles), np.full(count, height)], 1)
    return np.stack([orbit.look_at(eye, target, [0.0, 0.0, 1.0]) for eye in eyes])


def test_orbit_recovers_the_training_circle_and_looks_at_the_centre():
    train = _ring_cameras()
    frame = orbit.orbit_frame(train)
    np.testing.assert_allclose(frame.target, [0.5, -0.2, 0.3], atol=1e-5)
    np.testing.assert_allclose(frame.up, [0.0, 0.0, 1.0], atol=1e-6)
    assert frame.radius == pytest.approx(3.0, rel=1e-5) and frame.height == pytest.approx(1.0, rel=1e-5)
    cameras = orbit.orbit_from_cameras(train, num_frames=10)
    assert cameras.shape == (10, 4, 4)
    centres = orbit.camera_centres(cameras)
    np.testing.assert_allclose(centres[0], orbit.camera_centres(train[:1])[0], atol=1e-5)  # starts at camera 0
    for viewmat, centre in zip(cameras, centres, strict=True):
        rotation = viewmat[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)
        in_camera = rotation @ frame.target + viewmat[:3, 3]  # the target lies on the optical axis, in front
        np.testing.assert_allclose(in_camera[:2], 0.0, atol=1e-5)
        assert in_camera[2] > 0
        assert -rotation[1] @ frame.up > 0  # image up points along the world up
        offset = centre - frame.target
        assert offset @ frame.up == pytest.approx(1.0, abs=1e-5)
        assert np.linalg.norm(offset - (offset @ frame.up) * frame.up) == pytest.approx(3.0, rel=1e-5)
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-4)  # evenly spaced


def test_orbit_errors():
    with pytest.raises(ValueError, match="at the target"):
        orbit.look_at([1, 2, 3], [1, 2, 3], [0, 0, 1])
    with pytest.raises(ValueError, match="parallel to up"):
        orbit.look_at([0, 0, 3], [0, 0, 0], [0, 0, 1])
    with pytest.raises(ValueError, match=r"\[N, 4, 4\]"):
        orbit.orbit_frame(np.zeros((3, 3, 4)))
    with pytest.raises(ValueError, match="num_frames"):
        orbit.orbit_from_cameras(_ring_cameras(), num_frames=0)


def test_frames_gif_mp4_masks_and_sheet(tmp_path):
    model, _ = _pool_model()
    train = _ring_cameras(target=(0.0, 0.0, 0.0))
    width, height = 24, 16
    K = np.array([[20.0, 0, width / 2], [0, 20.0, height / 2], [0, 0, 1]], np.float32)
    frames = orbit.render_frames(model, orbit.orbit_from_cameras(train, 4), K, width, height,
                                 background=(1.0, 1.0, 1.0))  # fmt: skip
    assert frames.shape == (4, height, width, 3) and frames.dtype == np.uint8
    assert frames.min() < 255 and frames.max() == 255  # Gaussians on a white background
    gif = orbit.save_gif(frames, tmp_path / "orbit.gif", fps=10)
    with Image.open(gif) as image:
        assert image.n_frames == 4 and image.size == (width, height)
        assert image.info["duration"] == 100 and image.info["loop"] == 0
    assert orbit.mp4_available() is None  # imageio and av are project dependencies
    import imageio.v3 as iio

    video = iio.imread(orbit.save_mp4(frames, tmp_path / "orbit.mp4", fps=10), plugin="pyav")
    assert video.shape == (4, height, width, 3)
    masks = np.linspace(0.0, 1.0, 4 * height * width).reshape(4, height, width)
    paths = orbit.save_mask_pngs(masks, tmp_path / "masks", names=["a.jpg", "b", "c", "d"])
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png", "d.png"]
    with Image.open(paths[3]) as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), orbit.to_uint8(masks[3]))
    truth = masks < 0.3
    sheet = orbit.mask_contact_sheet(frames, masks, truth)
    assert sheet.shape == (4 * height + 3 * 2, 4 * width + 3 * 2, 3)
    first = sheet[2 * height + 4 : 3 * height + 4, :width]  # row 3, column 0: predicted transients in red
    np.testing.assert_array_equal(first[masks[0] >= 0.5], frames[0][masks[0] >= 0.5])
    assert (first[masks[0] < 0.5][:, 0] >= frames[0][masks[0] < 0.5][:, 0]).all()


def test_output_errors(tmp_path):
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=".gif"):
        orbit.save_gif(frames, tmp_path / "orbit.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        orbit.save_gif(frames, tmp_path / "nope" / "orbit.gif")
    with pytest.raises(ValueError, match=r"\[N >= 1, H, W, 3\]"):
        orbit.save_gif(np.zeros((4, 4, 3), np.uint8), tmp_path / "orbit.gif")
    with pytest.raises(ValueError, match="names"):
        orbit.save_mask_pngs(np.zeros((2, 4, 4)), tmp_path / "m", names=["a"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        orbit.save_mask_pngs(np.zeros((1, 4, 4)), tmp_path / "file")
    with pytest.raises(ValueError, match="do not match"):
        orbit.mask_contact_sheet(frames, np.zeros((2, 3, 4)))


def test_render_cli_errors(tmp_path, capsys):
    from models.gs3d import render
    from models.wildgs import render as wild_render

    with pytest.raises(SystemExit, match="does not exist"):
        render.main(["--workdir", str(tmp_path / "missing"), "--ply", str(tmp_path / "g.ply")])
    with pytest.raises(SystemExit, match="no checkpoint"):
        wild_render.main(["--workdir", str(tmp_path), "--masks", str(tmp_path / "m")])
    with pytest.raises(SystemExit, match="nothing to do"):
        render.main(["--workdir", str(tmp_path)])
    with pytest.raises(SystemExit, match="folder"):
        render.main(["--workdir", str(tmp_path), "--orbit", str(tmp_path / "no" / "o.gif")])
    with pytest.raises(SystemExit, match=".gif or .mp4"):
        render.main(["--workdir", str(tmp_path), "--orbit", str(tmp_path / "o.png")])
