"""Wild-GS appearance modules: ResNet-18 parity vs torchvision, the converter's errors, triplane splatting and
sampling, the outside vector, the appearance model's shapes and interpolation, and gradients through the rasterizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kernels.rasterize import rasterize
from models.wildgs import (
    AppearanceModel,
    ParsingUNet,
    ResNetEncoder,
    TriplaneEncoder,
    backproject_depth,
    convert_resnet18_encoder,
    load_resnet18_encoder,
    plane_cells,
    sample_plane,
    sample_triplane,
    splat_planes,
)
from tests.helpers import numpy_random_init
from zoo.convert import ConversionError

# Uniform tiny widths: few distinct parameter shapes, so few initialiser compilations on a busy CPU.
TINY = {
    "parsing": {
        "stem_width": 8,
        "widths": (8, 8, 8, 8),
        "depths": (1, 1, 1, 1),
        "decoder_widths": (8, 8, 8, 8, 8),
        "global_hidden": 8,
    },
    "triplane": {"resolution": 8, "plane_channels": 8, "unet_widths": (8, 8), "local_hidden": 8},
    "fusion_widths": (16,),
}


# One compiled program per call shape instead of an op-by-op dispatch (each eager op compiles on its own).
_splat = jax.jit(splat_planes, static_argnums=(4,), static_argnames=("band",))


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _torchvision_resnet18():
    torch = pytest.importorskip("torch")  # a test dependency; CI turns a skip into a failure
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine, so the frozen-stats form is exercised
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return torch, net


def test_resnet18_encoder_matches_torchvision():
    torch, net = _torchvision_resnet18()
    state_dict = {k: v.numpy() for k, v in net.state_dict().items()}
    encoder = convert_resnet18_encoder(state_dict, nnx.eval_shape(lambda: ResNetEncoder(rngs=nnx.Rngs(0))))
    x = np.random.default_rng(0).normal(size=(1, 64, 48, 3)).astype(np.float32)
    graphdef, state = nnx.split(encoder)
    ours = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, jnp.asarray(x))
    with torch.no_grad():
        h = net.relu(net.bn1(net.conv1(torch.from_numpy(x).permute(0, 3, 1, 2))))
        reference = [h]
        h = net.maxpool(h)
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            h = layer(h)
            reference.append(h)
    assert len(ours) == 5
    for got, want in zip(ours, reference, strict=True):
        want = want.permute(0, 2, 3, 1).numpy()
        assert got.shape == want.shape
        scale = np.abs(want).max()
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * scale, rtol=0)


def test_converter_lists_missing_unknown_and_misshaped_keys():
    _, net = _torchvision_resnet18()
    state_dict = {k: v.numpy() for k, v in net.state_dict().items()}
    del state_dict["layer3.1.conv2.weight"]
    state_dict["layer9.0.conv1.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    state_dict["bn1.running_var"] = np.ones((65,), np.float32)
    abstract = nnx.eval_shape(lambda: ResNetEncoder(rngs=nnx.Rngs(0)))
    with pytest.raises(ConversionError) as info:
        convert_resnet18_encoder(state_dict, abstract)
    message = str(info.value)
    assert "layer3.1.conv2.kernel" in message  # missing
    assert "layer9.0.conv1.weight" in message  # unknown
    assert "bn1.running_var" in message  # mis-shaped


def test_load_resnet18_encoder_in_place(tiny_model):
    _, net = _torchvision_resnet18()
    state_dict = {k: v.numpy() for k, v in net.state_dict().items()}
    model = nnx.eval_shape(lambda: ParsingUNet(rngs=nnx.Rngs(0)))
    assert load_resnet18_encoder(model, {"state_dict": state_dict}) is model
    encoder = model.encoder
    np.testing.assert_array_equal(
        np.asarray(encoder.layer2[0].downsample[0].kernel[...]),
        state_dict["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(np.asarray(encoder.layer4[1].bn2.var[...]), state_dict["layer4.1.bn2.running_var"])
    with pytest.raises(ConversionError, match="mis-shaped"):  # the tiny test encoder is not ResNet-18
        load_resnet18_encoder(tiny_model, state_dict)


def _random_model(seed: int = 0) -> AppearanceModel:
    """The tiny model with random weights drawn in numpy onto its abstract shapes (tests.helpers.numpy_random_init);
    the AABB buffer spans [-1, 1]^3."""
    abstract = nnx.eval_shape(lambda: AppearanceModel(rngs=nnx.Rngs(0), **TINY))
    aabb = lambda path, value: np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    return numpy_random_init(abstract, seed, other=aabb)[0]


@pytest.fixture(scope="module")
def tiny_model() -> AppearanceModel:
    return _random_model()


def test_aabb_buffer(tiny_model):
    assert tiny_model.aabb[...].shape == (2, 3)
    with pytest.raises(ValueError, match="aabb must be"):
        tiny_model.set_aabb(jnp.zeros((3, 2)))


def test_point_lands_in_its_plane_cells():
    resolution = 8
    aabb = jnp.array([[-1.0, -2.0, 0.0], [3.0, 2.0, 4.0]])
    # n = (0.3125, 0.625, 0.775) -> cells x 2, y 5, z 6; xy = (i_x, i_y), yz = (i_y, i_z), zx = (i_z, i_x).
    point = jnp.array([[0.25, 0.5, 3.1]])
    expected = ((2, 5), (5, 6), (6, 2))
    cells = np.asarray(plane_cells((point - aabb[0]) / (aabb[1] - aabb[0]), resolution))[:, 0]
    np.testing.assert_array_equal(cells, [a * resolution + b for a, b in expected])
    colour = jnp.array([[0.1, 0.7, 0.3]])
    maps, coverage = _splat(point, colour, jnp.ones(1, bool), aabb, resolution, band=0.01)
    assert maps.shape == (6, resolution, resolution, 3) and coverage.shape == (6, resolution, resolution)
    for plane, (a, b) in enumerate(expected):
        for layer in (2 * plane, 2 * plane + 1):  # forward and reverse map of that plane
            assert float(coverage[layer].sum()) == 1.0 and float(coverage[layer, a, b]) == 1.0
            np.testing.assert_allclose(np.asarray(maps[layer, a, b]), np.asarray(colour[0]), atol=1e-7)
            assert float(jnp.abs(maps[layer]).sum() - jnp.abs(maps[layer, a, b]).sum()) == 0.0
    # Outside the AABB or not visible: nothing lands.
    _, none = _splat(
        jnp.array([[3.5, 0.0, 1.0], [0.0, 0.0, 1.0]]),
        jnp.ones((2, 3)),
        jnp.array([True, False]),
        aabb,
        resolution,
        band=0.01,
    )
    assert float(none.sum()) == 0.0


def test_forward_and_reverse_maps_keep_the_near_and_far_surface():
    resolution = 4
    aabb = jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # Same xy cell; z = 0.1 (two points, averaged), 0.5 and 0.9. Forward (xy) keeps the low-z layer, reverse the high.
    points = jnp.array([[0.3, 0.6, 0.1], [0.35, 0.55, 0.1], [0.3, 0.6, 0.5], [0.3, 0.6, 0.9]])
    colours = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 1.0]])
    maps, _ = _splat(points, colours, jnp.ones(4, bool), aabb, resolution, band=0.05)
    np.testing.assert_allclose(np.asarray(maps[0, 1, 2]), [0.5, 0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(maps[1, 1, 2]), [0.0, 0.0, 1.0], atol=1e-7)
    # A wide band spans all depths: both layers become the plain scatter-average.
    maps, _ = _splat(points, colours, jnp.ones(4, bool), aabb, resolution, band=1.0)
    np.testing.assert_allclose(np.asarray(maps[0, 1, 2]), np.asarray(colours.mean(0)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(maps[1, 1, 2]), np.asarray(colours.mean(0)), atol=1e-6)


def test_backprojected_pixel_lands_in_the_right_cells():
    height = width = 16
    K = np.array([[10.0, 0.0, 8.0], [0.0, 12.0, 7.0], [0.0, 0.0, 1.0]])
    rotation, translation = _rotation(1), np.array([0.3, -0.2, 5.0])
    viewmat = np.eye(4)
    viewmat[:3, :3], viewmat[:3, 3] = rotation, translation
    depth = np.zeros((height, width), np.float32)
    row, col, z = 3, 11, 4.0
    depth[row, col] = z
    points = np.asarray(
        backproject_depth(jnp.asarray(depth), jnp.asarray(K, jnp.float32), jnp.asarray(viewmat, jnp.float32))
    )
    world = points[row * width + col]
    camera = rotation @ world + translation  # forward projection, independent of the back-projection's algebra
    np.testing.assert_allclose(camera[2], z, rtol=1e-5)
    np.testing.assert_allclose((K @ camera)[:2] / camera[2], [col + 0.5, row + 0.5], atol=1e-4)
    encoder = nnx.eval_shape(lambda: TriplaneEncoder(resolution=8, rngs=nnx.Rngs(0)))
    aabb = np.stack([world - np.array([0.5, 1.0, 1.5]), world + np.array([1.5, 1.0, 0.5])]).astype(np.float32)
    colour = np.zeros((height, width, 3), np.float32)
    colour[row, col] = (0.2, 0.4, 0.6)
    maps, coverage = encoder.colour_maps(
        jnp.asarray(colour),
        jnp.asarray(depth),
        jnp.asarray(K, jnp.float32),
        jnp.asarray(viewmat, jnp.float32),
        jnp.ones((height, width), bool),
        jnp.asarray(aabb),
    )
    n = (world - aabb[0]) / (aabb[1] - aabb[0])  # (0.25, 0.5, 0.75) -> cells (2, 4, 6)
    cell = np.floor(n * 8).astype(int)
    np.testing.assert_array_equal(cell, [2, 4, 6])
    for plane, (a, b, _) in enumerate(((0, 1, 2), (1, 2, 0), (2, 0, 1))):
        for layer in (2 * plane, 2 * plane + 1):
            assert float(coverage[layer].sum()) == 1.0  # only the one pixel with a depth is splatted
            assert coverage[layer, cell[a], cell[b]] == 1.0
            np.testing.assert_allclose(np.asarray(maps[layer, cell[a], cell[b]]), colour[row, col], atol=1e-6)


def test_sampling_constant_and_cell_centres():
    resolution, channels = 8, 5
    value = jnp.arange(channels, dtype=jnp.float32) - 1.5
    planes = jnp.broadcast_to(value, (3, resolution, resolution, channels))
    aabb = jnp.array([[-1.0, 0.0, 2.0], [1.0, 3.0, 4.0]])
    rng = np.random.default_rng(0)
    n = np.concatenate([rng.uniform(0, 1, (20, 3)), [[0, 0, 0], [1, 1, 1], [0.01, 0.99, 0.5]]])
    points = jnp.asarray(aabb[0] + n * (aabb[1] - aabb[0]), jnp.float32)
    summed, inside = sample_triplane(planes, points, aabb)
    assert bool(jnp.all(inside))
    np.testing.assert_allclose(np.asarray(summed), np.broadcast_to(3 * np.asarray(value), summed.shape), atol=1e-5)
    plane = jnp.asarray(rng.normal(size=(resolution, resolution, channels)), jnp.float32)
    ia, ib = rng.integers(0, resolution, 10), rng.integers(0, resolution, 10)
    got = sample_plane(plane, jnp.asarray((ia + 0.5) / resolution), jnp.asarray((ib + 0.5) / resolution))
    np.testing.assert_allclose(np.asarray(got), np.asarray(plane)[ia, ib], atol=1e-5)
    # Halfway between two cell centres along b: the mean of the two cells.
    mid = sample_plane(plane, jnp.asarray([(2 + 0.5) / resolution]), jnp.asarray([(3 + 1.0) / resolution]))
    np.testing.assert_allclose(np.asarray(mid[0]), (np.asarray(plane)[2, 3] + np.asarray(plane)[2, 4]) / 2, atol=1e-5)


def test_outside_vector_and_gradients(tiny_model):
    triplane = tiny_model.triplane
    aabb = tiny_model.aabb[...]
    rng = np.random.default_rng(0)
    means = jnp.asarray(
        np.concatenate([rng.uniform(-0.9, 0.9, (6, 3)), [[1.5, 0, 0], [0, -3, 0], [0, 0, 1.01]]]), jnp.float32
    )
    planes = jnp.asarray(rng.normal(size=(3, 8, 8, 8)), jnp.float32)
    local, inside = triplane.embed(planes, means, aabb)
    np.testing.assert_array_equal(np.asarray(inside), [True] * 6 + [False] * 3)
    np.testing.assert_array_equal(np.asarray(local[6:]), np.broadcast_to(np.asarray(triplane.outside[...]), (3, 16)))
    assert not np.allclose(np.asarray(local[:6]), np.asarray(triplane.outside[...]))

    image = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    depth = jnp.full((16, 16), 3.0)
    viewmat = jnp.eye(4).at[2, 3].set(3.0)
    K = jnp.array([[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]])
    visible = jnp.ones((16, 16), bool)
    graphdef, params, rest = nnx.split(triplane, nnx.Param, ...)

    def loss(params, image):
        out = nnx.merge(graphdef, params, rest)(image, depth, K, viewmat, visible, means, aabb)
        return jnp.sum(out.local_embedding * jnp.arange(16.0))

    grads, image_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, image)
    flat = {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}
    for name in ("outside", "unet.head.kernel", "unet.down.0.0.kernel", "local_mlp.fc1.kernel"):
        assert np.abs(flat[name]).max() > 0, name
    assert np.abs(np.asarray(image_grad)).max() > 0  # colours of the splatted pixels reach the embeddings


def _scene(seed: int, n: int = 12, size: int = 32):
    rng = np.random.default_rng(seed)
    means = jnp.asarray(rng.uniform(-0.6, 0.6, (n, 3)), jnp.float32)
    camera = {
        "viewmat": jnp.eye(4).at[2, 3].set(3.0),
        "K": jnp.array([[40.0, 0.0, size / 2], [0.0, 40.0, size / 2], [0.0, 0.0, 1.0]]),
    }
    gaussians = {
        "means": means,
        "quats": jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0]), (n, 1)),
        "scales": jnp.full((n, 3), 0.15),
        "opacities": jnp.full((n,), 0.8),
    }
    return gaussians, camera, rng


def _render(gaussians, camera, sh, size):
    return rasterize(
        gaussians["means"],
        gaussians["quats"],
        gaussians["scales"],
        gaussians["opacities"],
        sh,
        camera["viewmat"],
        camera["K"],
        size,
        size,
        sh_degree=3,
    )


SIZE = 32


@pytest.fixture(scope="module")
def scene():
    gaussians, camera, rng = _scene(0, size=SIZE)
    n = gaussians["means"].shape[0]
    depth = jax.jit(lambda g: _render(g, camera, jnp.zeros((n, 16, 3)), SIZE).depth[0])(gaussians)
    return gaussians, camera, rng, depth


def test_appearance_shapes_and_interpolation(tiny_model, scene):
    size = SIZE
    gaussians, camera, rng, depth = scene
    n = gaussians["means"].shape[0]
    assert float((depth > 0).mean()) > 0.2  # the triplane gets points to splat
    features = jnp.asarray(rng.normal(size=(n, 32)), jnp.float32)
    images = [jnp.asarray(rng.uniform(size=(size, size, 3)), jnp.float32) for _ in range(2)]
    graphdef, state = nnx.split(tiny_model)

    @jax.jit
    def both(state, image_a, image_b):
        model = nnx.merge(graphdef, state)
        emb_a = model.embed(image_a, camera["viewmat"], camera["K"], depth, gaussians["means"])
        emb_b = model.embed(image_b, camera["viewmat"], camera["K"], depth, gaussians["means"])
        warm = model.embed(image_a, camera["viewmat"], camera["K"], depth, gaussians["means"], use_triplane=False)
        ends = [model.interpolate(features, emb_a, emb_b, t) for t in (0.0, 1.0, 0.5)]
        refs = [model.shade(features, e.global_embedding, e.local_embedding) for e in (emb_a, emb_b)]
        return emb_a, emb_b, warm, ends, refs

    emb_a, emb_b, warm, ends, refs = both(state, *images)
    sh_dc, sh_rest = refs[0]
    assert sh_dc.shape == (n, 1, 3) and sh_rest.shape == (n, 15, 3)
    assert emb_a.mask.shape == (size, size)
    assert float(emb_a.mask.min()) >= 0.0 and float(emb_a.mask.max()) <= 1.0
    assert emb_a.global_embedding.shape == (16,) and emb_a.local_embedding.shape == (n, 16)
    assert bool(emb_a.inside.all())  # every Gaussian is inside the default AABB: local embeddings from the planes
    assert np.all(np.isfinite(np.asarray(sh_rest)))
    np.testing.assert_array_equal(np.asarray(warm.local_embedding), 0.0)  # warm-up: triplane off
    assert not np.allclose(np.asarray(emb_a.global_embedding), np.asarray(emb_b.global_embedding))
    for (dc, rest), (ref_dc, ref_rest) in zip(ends[:2], refs, strict=True):
        np.testing.assert_array_equal(np.asarray(dc), np.asarray(ref_dc))
        np.testing.assert_array_equal(np.asarray(rest), np.asarray(ref_rest))
    assert not np.allclose(np.asarray(ends[2][0]), np.asarray(refs[0][0]))
    assert not np.allclose(np.asarray(ends[2][0]), np.asarray(refs[1][0]))


def test_gradients_through_the_rasterizer(tiny_model, scene):
    size = SIZE
    gaussians, camera, rng, depth = scene
    n = gaussians["means"].shape[0]
    features = jnp.asarray(rng.normal(size=(n, 32)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(size, size, 3)), jnp.float32)
    graphdef, params, rest = nnx.split(tiny_model, nnx.Param, ...)

    def loss(params, features):
        model = nnx.merge(graphdef, params, rest)
        out = model(target, camera["viewmat"], camera["K"], depth, gaussians["means"], features)
        render = _render(gaussians, camera, jnp.concatenate([out.sh_dc, out.sh_rest], axis=1), size).image[0]
        return jnp.mean(jnp.abs(render - target) * out.mask[..., None]) + 0.4 * jnp.mean((1 - out.mask) ** 2)

    value, (grads, feature_grad) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, features)
    assert np.isfinite(float(value))
    flat = {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}
    for name in (
        "fusion.out.kernel",
        "fusion.hidden.0.kernel",
        "parsing.global_mlp.fc2.kernel",
        "parsing.encoder.conv1.kernel",
        "parsing.mask_head.kernel",
        "parsing.decoder.0.conv1.kernel",
        "triplane.unet.head.kernel",
        "triplane.local_mlp.fc2.kernel",
    ):
        assert np.abs(flat[name]).max() > 0, name
        assert np.all(np.isfinite(flat[name])), name
    assert np.abs(np.asarray(feature_grad)).max() > 0


def test_efficientnet_encoder_option_loads_the_real_weights():
    """ParsingUNet(encoder="efficientnet_lite0") + load_efficientnet_encoder: the encoder maps are those of the
    registered efficientnet_lite0 with its packaged ImageNet weights (inputs normalised with mean = std = 0.5 inside),
    the decoder still gives a full-resolution mask; an unknown encoder name and a ResNet model are clear errors."""
    import zoo
    from models.wildgs import ParsingUNet, load_efficientnet_encoder

    abstract = nnx.eval_shape(lambda: ParsingUNet(encoder="efficientnet_lite0", rngs=nnx.Rngs(0)))
    net = numpy_random_init(abstract, seed=3)[0]
    load_efficientnet_encoder(net)
    reference = zoo.create_model("efficientnet_lite0", pretrained=True)
    image = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (1, 40, 56, 3)), jnp.float32)
    out = net(image)
    want = reference.features((image - 0.5) / 0.5)
    assert [f.shape for f in out.features] == [f.shape for f in want]
    for got, ref in zip(out.features, want, strict=True):
        scale = float(jnp.max(jnp.abs(ref)))
        assert float(jnp.max(jnp.abs(got - ref))) <= 1e-5 * scale
    assert out.mask.shape == (1, 40, 56) and out.global_embedding.shape == (1, 16)
    with pytest.raises(ValueError, match="unknown parsing encoder"):
        ParsingUNet(encoder="vgg16", rngs=nnx.Rngs(0))
    resnet = numpy_random_init(nnx.eval_shape(lambda: ParsingUNet(rngs=nnx.Rngs(0))), seed=1)[0]
    with pytest.raises(TypeError, match="efficientnet_lite0"):
        load_efficientnet_encoder(resnet)
