"""Official weights by name: resolve, download (resumable, with a progress bar), verify, cache, convert once.

    model = zoo.create_model("vit_base_patch16_224", pretrained=True)   # first call downloads and converts
    python -m zoo.download vit_base_patch16_224 sam2.1_hiera_tiny       # ahead of time (e.g. on a login node)
    python -m zoo.download --list                                       # where every model's weights come from

Where the weights are published is each model's `pretrained_cfg` (`hf_hub_id`/`hf_hub_filename`, `file_url` +
`sha256`, `package`/`package_file` for a file shipped inside a pip package, or `manual_url` for pages that need a
browser). The cache (`$ZOO_CACHE`, default `~/.cache/zoo`):

    <cache>/weights/<model name>/<file>          the official file (direct URLs, and files placed by hand)
    <cache>/weights/<model name>/<file>.part     an unfinished download; the next call resumes it (HTTP Range)
    <cache>/weights/<model name>/converted/      the orbax conversion (checkpoints/0/{model,meta}), written once
    <cache>/weights/.locks/<model name>.lock     taken while downloading / converting

Hugging Face Hub files stay in the Hub's own cache (`HF_HUB_CACHE`, honoured with `HF_HUB_OFFLINE=1`); a file of the
same name placed in the model's cache directory is used instead. Downloads go to a `.part` file that is renamed once
complete and verified, the conversion to a temporary directory renamed at the end, and one process at a time
downloads and converts (a file lock), so processes started together (a multi-host launch) wait for the first one
and then all read the same cache entry. A later call loads `converted/` directly: no network, no torch.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "ZOO_CACHE"
CONVERTED = "converted"
CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(RuntimeError):
    """The weights could not be fetched (offline, unreachable, interrupted, or a browser-only source)."""


class ChecksumError(DownloadError):
    """A downloaded file does not have the published sha256 (the file was deleted)."""


def cache_root() -> Path:
    """`$ZOO_CACHE`, else `$ZOO_CACHE_DIR` (the data cache's variable), else `~/.cache/zoo`."""
    root = os.environ.get(CACHE_ENV) or os.environ.get("ZOO_CACHE_DIR") or os.path.join("~", ".cache", "zoo")
    return Path(root).expanduser()


def weights_dir(name: str) -> Path:
    """The cache directory of model `name`'s official weights."""
    return cache_root() / "weights" / name


def _cfg(name: str):
    from zoo.registry import pretrained_cfg

    return pretrained_cfg(name)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    # Lock files live apart from the weights (never deleted: a waiting process may hold an open handle to one).
    locks = cache_root() / "weights" / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks until the process holding it is done
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _progress(total: int | None, initial: int, label: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=not enabled, leave=False)


def download_url(url: str, dest: str | os.PathLike, *, sha256: str = "", progress: bool = True) -> Path:
    """Download `url` to `dest`: into `dest`.part (resumed with an HTTP Range request when it exists), verified
    against `sha256` when given (a mismatch deletes the file and raises ChecksumError), then renamed to `dest`."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "jax-vision-zoo"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    hint = f"download it by hand and put it at {dest}"
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the server has no bytes past the partial file: start over
            part.unlink()
            return download_url(url, dest, sha256=sha256, progress=progress)
        raise DownloadError(f"downloading {url} failed: HTTP {err.code} {err.reason}; {hint}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"cannot reach {url} ({err}); if this machine is offline, {hint}") from err
    with response:
        resumed = offset and response.status == 206
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = int(length) + offset if length is not None else None
        written = offset
        try:
            with open(part, "ab" if resumed else "wb") as out, _progress(total, offset, dest.name, progress) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    written += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(
                f"download of {url} was interrupted after {written} bytes ({err}); the partial file {part} is kept "
                "and the next call resumes it"
            ) from err
    if total is not None and written != total:
        raise DownloadError(
            f"download of {url} ended after {written} of {total} bytes; the partial file {part} is kept and the next "
            "call resumes it"
        )
    if sha256:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise ChecksumError(
                f"{url} has sha256 {actual}, expected {sha256}: the download is corrupt or the file changed upstream; "
                f"the file was deleted, call again to download it anew"
            )
    os.replace(part, dest)
    return dest


def _hub_download(name: str, cfg, progress: bool) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as err:  # pragma: no cover - a runtime dependency
        raise DownloadError("pip install huggingface_hub to fetch weights from the Hugging Face Hub") from err
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    page = f"https://huggingface.co/{cfg.hf_hub_id}/blob/main/{cfg.hf_hub_filename}"
    try:
        path = hf_hub_download(cfg.hf_hub_id, cfg.hf_hub_filename, cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                               local_files_only=offline)
    except LocalEntryNotFoundError as err:
        raise DownloadError(
            f"{cfg.hf_hub_filename} of {cfg.hf_hub_id} is not in the Hugging Face cache"
            f"{' and HF_HUB_OFFLINE is set' if offline else ' and the Hub cannot be reached'}: download {page} by "
            f"hand and put it at {weights_dir(name) / cfg.hf_hub_filename}"
        ) from err
    except Exception as err:  # network, auth, missing repo: huggingface_hub has many error types
        raise DownloadError(
            f"fetching {page} failed ({type(err).__name__}: {err}); download it by hand and put it at "
            f"{weights_dir(name) / cfg.hf_hub_filename}"
        ) from err
    return Path(path)


def fetch_checkpoint(name: str, *, progress: bool = True) -> Path:
    """The official checkpoint file of model `name`: from the cache, else downloaded (see the module docstring)."""
    cfg = _cfg(name)
    source = cfg.weights_source
    if source == "none":
        raise DownloadError(
            f"no official weights were released for {name}{': ' + cfg.notes if cfg.notes else ''}; train it "
            "(train.py) or pass a checkpoint path as pretrained="
        )
    if source == "package":
        return package_checkpoint(name)
    local = weights_dir(name) / cfg.weights_filename
    if local.is_file():
        return local
    if source == "manual":
        raise DownloadError(
            f"the weights of {name} are published at {cfg.manual_url}, which needs a browser"
            f"{' (' + cfg.notes + ')' if cfg.notes else ''}: download {cfg.manual_filename} there and put it at "
            f"{local}, then call again"
        )
    if source == "hf_hub":
        return _hub_download(name, cfg, progress)
    return download_url(cfg.file_url, local, sha256=cfg.sha256, progress=progress)


def package_checkpoint(name: str) -> Path:
    """The checkpoint file that model `name`'s pip package (`pretrained_cfg.package`) ships; nothing is downloaded."""
    import importlib.util

    cfg = _cfg(name)
    module, _, inside = cfg.package_file.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DownloadError(f"the weights of {name} ship in the pip package {cfg.package.split('=')[0]}, which is not "
                            f"installed: pip install {cfg.package}")
    path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.is_file():
        raise DownloadError(f"{path} is missing from the installed package; reinstall it: "
                            f"pip install --force-reinstall {cfg.package}")
    return path


def _converted_ready(directory: Path) -> bool:
    return (directory / CONVERTED).is_dir()


def pretrained_path(name: str, *, progress: bool = True) -> Path:
    """The orbax directory holding model `name`'s official weights, downloading and converting them the first time.

    Later calls return the cached conversion without touching the network or importing torch.
    """
    _cfg(name)  # an unknown name is a KeyError naming the closest ones, before anything is written
    directory = weights_dir(name)
    if _converted_ready(directory):
        return directory / CONVERTED
    with _locked(name):
        if _converted_ready(directory):  # another process converted it while this one waited
            return directory / CONVERTED
        checkpoint = fetch_checkpoint(name, progress=progress)
        _convert(name, checkpoint, directory)
    return directory / CONVERTED


def _convert(name: str, checkpoint: Path, directory: Path) -> None:
    import zoo
    from zoo import checkpoint as checkpoint_lib
    from zoo.convert import CheckpointReadError

    try:
        model = zoo.create_model(name, pretrained=str(checkpoint))
    except CheckpointReadError as err:
        raise DownloadError(f"the cached checkpoint {checkpoint} cannot be read ({err}); delete it and call again "
                            "to download it anew") from err
    staging = directory / f"{CONVERTED}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        checkpoint_lib.save_model(str(staging), model,
                                  meta={"model_name": name, "overrides": {}, "source": str(checkpoint)})
        os.replace(staging, directory / CONVERTED)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def describe(name: str) -> str:
    """One line: where model `name`'s weights come from and whether they are cached."""
    cfg = _cfg(name)
    where = {
        "hf_hub": f"hf://{cfg.hf_hub_id}/{cfg.hf_hub_filename}",
        "url": cfg.file_url,
        "manual": f"{cfg.manual_url} (browser only)",
        "package": f"pip package {cfg.package}: {cfg.package_file}",
        "none": "no official weights",
    }[cfg.weights_source]
    cached = "converted" if _converted_ready(weights_dir(name)) else ""
    return f"{name:40s} {where} {cached}".rstrip()


def main(argv: list[str] | None = None) -> int:
    """`python -m zoo.download NAME... | --list [PATTERN]`."""
    parser = argparse.ArgumentParser(prog="python -m zoo.download", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="registered model names (see --list)")
    parser.add_argument("--list", nargs="?", const="*", metavar="PATTERN", help="show where weights come from")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    import zoo

    if args.list is not None:
        for name in zoo.list_models(args.list):
            print(describe(name))
        return 0
    if not args.names:
        parser.error("name at least one model, or --list")
    status = 0
    for name in args.names:
        try:
            print(f"{name}: {pretrained_path(name, progress=not args.no_progress)}")
        except (DownloadError, KeyError) as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
