"""Official weights by name (`create_model(name, pretrained=True)`, zoo.download) against servers the tests start.

A loopback HTTP server serves a reduced timm ViT checkpoint written by the test; it counts requests, honours Range
requests and can cut its first response short. A directory laid out as a Hugging Face Hub cache stands in for the Hub.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from flax import nnx

import zoo
from tests.helpers import require
from tests.zoo.download_worker import TINY, register
from zoo import download
from zoo.registry import _REGISTRY

WORKER = os.path.join(os.path.dirname(__file__), "download_worker.py")


def _timm_checkpoint(tmp_path_factory, fmt: str) -> bytes:
    """A reduced timm ViT (random init) as official `.pth` or `.safetensors` bytes."""
    torch = require("torch")
    timm = require("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=TINY["img_size"], patch_size=TINY["patch_size"], embed_dim=TINY["embed_dim"], depth=TINY["depth"],
        num_heads=TINY["num_heads"], num_classes=TINY["num_classes"],
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "pth":
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()
    from safetensors.torch import save

    return save(state)


@pytest.fixture(scope="module")
def pth_bytes(tmp_path_factory):
    return _timm_checkpoint(tmp_path_factory, "pth")


class _Server:
    """Serves `files` {url path: bytes} on 127.0.0.1; counts GETs per path, records Range headers, and cuts the first
    `cut_first` responses after half their bytes."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: dict[str, int] = {}
        self.ranges: list[str | None] = []
        self.cut_first = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = server.files.get(self.path)
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                server.ranges.append(self.headers.get("Range"))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.cut_first > 0:
                    server.cut_first -= 1
                    payload = payload[: len(payload) // 2]
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(pth_bytes):
    served = _Server({"/weights/tiny_vit.pth": pth_bytes})
    yield served
    served.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "zoo_cache"))
    return tmp_path / "zoo_cache"


@pytest.fixture
def registered():
    names = []

    def add(name: str, **source: str) -> str:
        register(name, **source)
        names.append(name)
        return name

    yield add
    for name in names:
        _REGISTRY.pop(name, None)


def _params(model) -> dict:
    return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _assert_same_params(a, b):
    flat_a, flat_b = jax.tree.leaves(_params(a)), jax.tree.leaves(_params(b))
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        np.testing.assert_array_equal(x, y)


def test_first_call_downloads_verifies_converts_second_call_needs_no_network_nor_torch(
        server, cache, registered, pth_bytes, tmp_path, monkeypatch):
    url = server.url + "/weights/tiny_vit.pth"
    name = registered("test_dl_tiny_vit", file_url=url, sha256=hashlib.sha256(pth_bytes).hexdigest())
    first = zoo.create_model(name, pretrained=True)
    assert server.requests["/weights/tiny_vit.pth"] == 1
    directory = download.weights_dir(name)
    assert (directory / "tiny_vit.pth").read_bytes() == pth_bytes
    assert (directory / "converted").is_dir() and not list(directory.glob("*.part"))
    local = tmp_path / "direct.pth"
    local.write_bytes(pth_bytes)
    _assert_same_params(first, zoo.create_model(name, pretrained=str(local)))  # the conversion of the same file

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails: the cached conversion must not need it
    second = zoo.create_model(name, pretrained=True)
    assert server.requests["/weights/tiny_vit.pth"] == 1
    _assert_same_params(first, second)
    assert "converted" in download.describe(name)


def test_interrupted_download_resumes_with_a_range_request(server, cache, registered, pth_bytes):
    url = server.url + "/weights/tiny_vit.pth"
    name = registered("test_dl_resume", file_url=url, sha256=hashlib.sha256(pth_bytes).hexdigest())
    server.cut_first = 1
    with pytest.raises(download.DownloadError, match="resumes"):
        download.pretrained_path(name, progress=False)
    part = download.weights_dir(name) / "tiny_vit.pth.part"
    assert part.is_file() and 0 < part.stat().st_size < len(pth_bytes)
    offset = part.stat().st_size
    path = download.pretrained_path(name, progress=False)
    assert server.ranges == [None, f"bytes={offset}-"]
    assert (download.weights_dir(name) / "tiny_vit.pth").read_bytes() == pth_bytes and not part.exists()
    assert zoo.create_model(name, pretrained=str(path)) is not None


def test_wrong_checksum_is_an_error_and_leaves_no_file(server, cache, registered):
    url = server.url + "/weights/tiny_vit.pth"
    name = registered("test_dl_bad_sha", file_url=url, sha256="0" * 64)
    with pytest.raises(download.ChecksumError, match="expected 0000") as err:
        zoo.create_model(name, pretrained=True)
    assert "deleted" in str(err.value)
    directory = download.weights_dir(name)
    assert not directory.exists() or not list(directory.iterdir())


def test_two_processes_at_once_end_with_one_valid_cache_entry(server, cache, registered, pth_bytes):
    url = server.url + "/weights/tiny_vit.pth"
    sha = hashlib.sha256(pth_bytes).hexdigest()
    name = "test_dl_two_procs"
    env = dict(os.environ, ZOO_CACHE=str(cache), JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, WORKER, name, url, sha], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(paths) == 1
    assert server.requests["/weights/tiny_vit.pth"] == 1  # the second process waited and reused the first's work
    directory = download.weights_dir(name)
    assert sorted(p.name for p in directory.iterdir()) == ["converted", "tiny_vit.pth"]
    registered(name, file_url=url, sha256=sha)
    _assert_same_params(zoo.create_model(name, pretrained=True), zoo.create_model(name, pretrained=str(
        directory / "tiny_vit.pth")))


def test_hugging_face_hub_cache_offline(cache, registered, tmp_path, monkeypatch, tmp_path_factory):
    weights = _timm_checkpoint(tmp_path_factory, "safetensors")
    hub = tmp_path / "hf_cache"
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--zoo-test--tiny-vit"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision / "model.safetensors").write_bytes(weights)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = registered("test_dl_hub", hf_hub_id="zoo-test/tiny-vit", hf_hub_filename="model.safetensors")
    model = zoo.create_model(name, pretrained=True)
    direct = tmp_path / "direct.safetensors"
    direct.write_bytes(weights)
    _assert_same_params(model, zoo.create_model(name, pretrained=str(direct)))
    # Not in the Hub cache and offline: the error names the file, the page and where to put a manual download.
    missing = registered("test_dl_hub_missing", hf_hub_id="zoo-test/absent", hf_hub_filename="model.safetensors")
    with pytest.raises(download.DownloadError, match="HF_HUB_OFFLINE") as err:
        zoo.create_model(missing, pretrained=True)
    assert str(download.weights_dir(missing) / "model.safetensors") in str(err.value)
    assert "huggingface.co/zoo-test/absent" in str(err.value)


def test_unreachable_manual_and_missing_sources_say_what_to_do(cache, registered, pth_bytes):
    closed = "http://127.0.0.1:9/weights/tiny_vit.pth"  # the discard port: nothing listens there
    name = registered("test_dl_offline", file_url=closed)
    with pytest.raises(download.DownloadError) as err:
        zoo.create_model(name, pretrained=True)
    assert closed in str(err.value) and str(download.weights_dir(name) / "tiny_vit.pth") in str(err.value)

    manual = registered("test_dl_manual", manual_url="https://pan.example/s/abc", manual_filename="tiny.pth")
    with pytest.raises(download.DownloadError, match="needs a browser") as err:
        zoo.create_model(manual, pretrained=True)
    target = download.weights_dir(manual) / "tiny.pth"
    assert "https://pan.example/s/abc" in str(err.value) and str(target) in str(err.value)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pth_bytes)  # placed by hand: now it loads (and converts once)
    assert zoo.create_model(manual, pretrained=True) is not None
    assert (download.weights_dir(manual) / "converted").is_dir()

    nothing = registered("test_dl_none")
    with pytest.raises(download.DownloadError, match="no official weights"):
        zoo.create_model(nothing, pretrained=True)


def test_every_registered_model_says_where_its_weights_are():
    for name in zoo.list_models():
        if name.startswith("test_"):
            continue
        cfg = zoo.pretrained_cfg(name)
        source = cfg.weights_source
        assert source in ("hf_hub", "url", "package", "manual", "none"), name
        if source == "none":
            assert "no official weights" in cfg.notes.lower(), f"{name}: say in notes that none were released"
        else:
            assert cfg.weights_filename, f"{name}: no file name for its {source} weights"
        assert cfg.weights_fetchable == (source in ("hf_hub", "url"))
        if source == "url":
            assert cfg.file_url.startswith("https://"), name
        line = download.describe(name)
        assert line.startswith(name)


def test_download_cli(cache, registered, server, pth_bytes, capsys):
    url = server.url + "/weights/tiny_vit.pth"
    name = registered("test_dl_cli", file_url=url, sha256=hashlib.sha256(pth_bytes).hexdigest())
    assert download.main([name, "--no-progress"]) == 0
    assert str(download.weights_dir(name) / "converted") in capsys.readouterr().out
    assert download.main(["test_dl_cli_unknown"]) == 2
    assert "Unknown model" in capsys.readouterr().err
    assert download.main(["--list", "sam2*"]) == 0
    assert "dl.fbaipublicfiles.com" in capsys.readouterr().out
