"""Official PyTorch checkpoints -> NNX state.

Three parts:
1. Safe readers: `.pt/.pth/.bin` through `torch.load(weights_only=True)` when torch is installed, otherwise a
   tensor-only reader of torch's zip format (only tensors, dicts, lists and plain scalars are rebuilt: never a general
   unpickle); `.safetensors`; `.npz`.
2. A declarative key map: `Rule(regex on the torch key, NNX path template, transform)`, applied onto the abstract
   state of a model. Every unmapped, missing and mis-shaped key is collected and reported in one `ConversionError`.
3. The CLI `python -m zoo.convert --model NAME --src FILE --out DIR`, writing an orbax checkpoint directory that
   `zoo.create_model(NAME, pretrained=DIR)` loads.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import os
import pickle
import re
import sys
import typing
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

Transform = Callable[[np.ndarray], np.ndarray]


class ConversionError(ValueError):
    """A checkpoint does not fit a model; the message lists every problem at once."""


class CheckpointReadError(ValueError):
    """A checkpoint file cannot be read (corrupt, truncated, or not a checkpoint)."""


# --------------------------------------------------------------------------------------------------------------------
# Transforms (torch layout -> flax layout)
# --------------------------------------------------------------------------------------------------------------------


def identity(x: np.ndarray) -> np.ndarray:
    """Keep the tensor as it is."""
    return x


def linear(x: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) -> flax kernel (in, out)."""
    return x.T


def conv2d(x: np.ndarray) -> np.ndarray:
    """torch Conv2d weight (out, in/groups, kh, kw) -> flax kernel (kh, kw, in/groups, out)."""
    return x.transpose(2, 3, 1, 0)


def conv1d(x: np.ndarray) -> np.ndarray:
    """torch Conv1d weight (out, in/groups, k) -> flax kernel (k, in/groups, out)."""
    return x.transpose(2, 1, 0)


def conv_transpose2d(x: np.ndarray) -> np.ndarray:
    """torch ConvTranspose2d weight (in, out, kh, kw) -> flax ConvTranspose kernel (kh, kw, in, out), flipped.

    torch's transposed conv is the gradient of a conv, which is a conv with the spatially flipped kernel; flax's
    `ConvTranspose(transpose_kernel=False)` does not flip, so the flip happens here.
    """
    return x.transpose(2, 3, 0, 1)[::-1, ::-1].copy()


def reshape_to(shape: tuple[int, ...]) -> Transform:
    """Reshape to a fixed shape (e.g. drop torch's leading singleton of a (1, N, D) pos-embed)."""
    return lambda x: x.reshape(shape)


def squeeze_leading(x: np.ndarray) -> np.ndarray:
    """Drop leading singleton axes, e.g. cls tokens stored as (1, 1, D)."""
    while x.ndim > 1 and x.shape[0] == 1:
        x = x[0]
    return x


# --------------------------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------------------------

_TORCH_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass
class _StorageType:
    name: str


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    array, = storage
    itemsize = array.dtype.itemsize
    if len(size) == 0:
        return array[storage_offset].copy()
    return np.lib.stride_tricks.as_strided(
        array[storage_offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    ).copy()


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Rebuilds tensors from torch's zip format and refuses every other global."""

    _ALLOWED: typing.ClassVar[dict[tuple[str, str], Any]] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("builtins", "set"): set,
    }

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _TORCH_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8"):
            return name
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: the tensor-only reader rebuilds tensors and containers only. "
            "Install torch to read this file with torch.load(weights_only=True)."
        )

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        if key not in self._storages:
            dtype = _TORCH_DTYPES.get(storage_type.name) if isinstance(storage_type, _StorageType) else None
            if dtype is None:
                raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            if dtype == "bfloat16":
                import ml_dtypes

                array = np.frombuffer(raw, dtype=ml_dtypes.bfloat16)
            else:
                array = np.frombuffer(raw, dtype=dtype)
            self._storages[key] = array
        return (self._storages[key],)


def _read_torch_zip_without_torch(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise CheckpointReadError(f"{path}: a zip file without data.pkl is not a torch checkpoint")
        prefix = pickles[0].rsplit("/", 1)[0] if "/" in pickles[0] else ""
        return _TensorOnlyUnpickler(archive.read(pickles[0]), archive, prefix).load()


def _to_numpy_tree(obj: Any) -> Any:
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # a torch.Tensor
        tensor = obj.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            import ml_dtypes

            return tensor.view(dtype=__import__("torch").int16).numpy().view(ml_dtypes.bfloat16)
        return tensor.numpy()
    if isinstance(obj, Mapping):
        return {k: _to_numpy_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy_tree(v) for v in obj)
    return obj


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Read a checkpoint file into nested dicts of numpy arrays.

    `.safetensors` and `.npz` read directly; `.pt/.pth/.bin/.ckpt` with `torch.load(weights_only=True)` when torch is
    installed, else with the tensor-only zip reader. A missing file is a FileNotFoundError; an unreadable one a
    CheckpointReadError naming the file and the cause.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return load_file(path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            return _to_numpy_tree(torch.load(path, map_location="cpu", weights_only=True))
        if not zipfile.is_zipfile(path):
            raise CheckpointReadError(
                f"{path} is a legacy (non-zip) torch file; install torch to read it, or re-save it with torch>=1.6"
            )
        return _read_torch_zip_without_torch(path)
    except (CheckpointReadError, FileNotFoundError):
        raise
    except Exception as err:  # torch, safetensors and zipfile raise many types for a truncated or corrupt file
        raise CheckpointReadError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err


def extract_state_dict(
    checkpoint: Any, keys: Iterable[str] = ("model", "state_dict", "module"), *, prefix: str = ""
) -> dict[str, np.ndarray]:
    """Find the flat state dict inside a training checkpoint (`{"model": sd}`, `{"state_dict": sd}`, ...).

    `prefix` (e.g. "module.") is stripped from every key that has it.
    """
    obj = checkpoint
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, np.ndarray) for v in obj.values()):
            for key in keys:
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, Mapping):
        raise CheckpointReadError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise CheckpointReadError(f"no tensors found in the checkpoint (top-level keys: {sorted(obj)[:10]})")
    if prefix:
        tensors = {(k.removeprefix(prefix)): v for k, v in tensors.items()}
    return tensors


# --------------------------------------------------------------------------------------------------------------------
# Declarative key maps
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """Map torch keys matching `pattern` (a full-match regex) to the NNX path `target` (with \\1 groups)."""

    pattern: str
    target: str
    transform: Transform = identity


def kernel_rules(source: str, target: str, transform: Transform = linear) -> list[Rule]:
    """The rules of a torch Linear / Conv at the key regex `source`: `.weight` -> `<target>.kernel` through
    `transform`, `.bias` -> `<target>.bias`."""
    return [Rule(source + r"\.weight", target + ".kernel", transform), Rule(source + r"\.bias", target + ".bias")]


def norm_rules(source: str, target: str) -> list[Rule]:
    """The rules of a torch LayerNorm / GroupNorm (the affine part of a BatchNorm) at the key regex `source`:
    `.weight` -> `<target>.scale`, `.bias` -> `<target>.bias`."""
    return [Rule(source + r"\.weight", target + ".scale"), Rule(source + r"\.bias", target + ".bias")]


def batch_norm_rules(source: str, target: str) -> list[Rule]:
    """The rules of a torch BatchNorm at the key regex `source` (`num_batches_tracked` is for the caller to ignore):
    `norm_rules` and `.running_mean` / `.running_var` -> `<target>.mean` / `<target>.var`."""
    return [
        *norm_rules(source, target),
        Rule(source + r"\.running_mean", target + ".mean"),
        Rule(source + r"\.running_var", target + ".var"),
    ]


def flat_paths(state: nnx.State) -> dict[str, Any]:
    """{'blocks.0.attn.qkv.kernel': leaf} for an NNX state (leaves are arrays or ShapeDtypeStructs)."""
    flat = {}
    for path, leaf in nnx.to_flat_state(state):
        value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
        flat[".".join(str(p) for p in path)] = value
    return flat


def map_state_dict(
    state_dict: Mapping[str, np.ndarray],
    rules: Iterable[Rule],
    abstract_state: nnx.State,
    *,
    ignore: Iterable[str] = (),
    allow_missing: Iterable[str] = (),
    source: str = "checkpoint",
) -> dict[str, np.ndarray]:
    """Apply `rules` to `state_dict` against the model's abstract state; returns {nnx path: array}.

    Raises one ConversionError listing every unmapped torch key (not matched by a rule nor by an `ignore` regex),
    every NNX path the checkpoint does not provide (unless matched by `allow_missing`), and every mis-shaped tensor.
    """
    rules = [(re.compile(r.pattern), r) for r in rules]
    ignore = [re.compile(p) for p in ignore]
    allow_missing = [re.compile(p) for p in allow_missing]
    expected = flat_paths(abstract_state)
    mapped: dict[str, np.ndarray] = {}
    unmapped, misshaped, unknown_target, duplicate = [], [], [], []
    for key in sorted(state_dict):
        value = np.asarray(state_dict[key])
        for regex, rule in rules:
            match = regex.fullmatch(key)
            if match is None:
                continue
            target = match.expand(rule.target)
            if target not in expected:
                unknown_target.append(f"{key} -> {target}")
                break
            converted = np.asarray(rule.transform(value))
            want = tuple(expected[target].shape)
            if converted.shape != want:
                misshaped.append(f"{key} {tuple(value.shape)} -> {target}: got {converted.shape}, model has {want}")
            elif target in mapped:
                duplicate.append(f"{key} -> {target}")
            else:
                mapped[target] = converted.astype(expected[target].dtype)
            break
        else:
            if not any(p.fullmatch(key) for p in ignore):
                unmapped.append(f"{key} {tuple(value.shape)}")
    missing = [p for p in sorted(expected) if p not in mapped and not any(a.fullmatch(p) for a in allow_missing)]
    problems = []
    for title, items in (
        ("unmapped checkpoint keys", unmapped),
        ("model parameters missing from the checkpoint", missing),
        ("mis-shaped tensors", misshaped),
        ("rules pointing at paths the model does not have", unknown_target),
        ("several checkpoint keys for one parameter", duplicate),
    ):
        if items:
            shown = "\n    ".join(items[:40]) + (f"\n    ... and {len(items) - 40} more" if len(items) > 40 else "")
            problems.append(f"  {len(items)} {title}:\n    {shown}")
    if problems:
        raise ConversionError(f"{source} does not match the model:\n" + "\n".join(problems))
    return mapped


def merge_into_model(abstract_model: nnx.Module, arrays: Mapping[str, np.ndarray]) -> nnx.Module:
    """Build a concrete model from an abstract one (from `nnx.eval_shape`) and {nnx path: array}.

    Paths absent from `arrays` (allowed missing) are initialised as zeros of the right shape and dtype.
    """
    graphdef, state = nnx.split(abstract_model)
    flat = []
    for path, leaf in nnx.to_flat_state(state):
        key = ".".join(str(p) for p in path)
        value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
        array = arrays.get(key)
        if array is None and isinstance(leaf, nnx.RngKey):
            # Dropout / drop-path streams: a distinct, deterministic key per stream (checkpoints hold no RNG state).
            base = jax.random.fold_in(jax.random.key(0), zlib.crc32(key.encode()) & 0x7FFFFFFF)
            array = jax.random.split(base, value.shape) if value.shape else base
        elif array is None:
            array = np.zeros(value.shape, value.dtype)
        new_leaf = leaf.replace(jax.numpy.asarray(array)) if isinstance(leaf, nnx.Variable) else array
        flat.append((path, new_leaf))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def convert_with_rules(
    state_dict: Mapping[str, np.ndarray],
    abstract_model: nnx.Module,
    rules: Iterable[Rule],
    **kwargs: Any,
) -> nnx.Module:
    """`map_state_dict` + `merge_into_model`: the whole conversion for a family with a plain key map."""
    arrays = map_state_dict(state_dict, rules, nnx.state(abstract_model, nnx.Not(nnx.RngState)), **kwargs)
    return merge_into_model(abstract_model, arrays)


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m zoo.convert --model NAME --src FILE --out DIR [--set key=value ...]`."""
    parser = argparse.ArgumentParser(prog="python -m zoo.convert", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="registered model name, see zoo.list_models()")
    parser.add_argument("--src", required=True, help="official checkpoint: .pt/.pth/.bin/.safetensors/.npz")
    parser.add_argument("--out", required=True, help="output orbax checkpoint directory (must not exist)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="builder override")
    args = parser.parse_args(argv)

    import zoo
    from zoo import checkpoint as checkpoint_lib

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = __import__("ast").literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    if os.path.exists(args.out):
        print(f"error: {args.out} already exists; choose a new --out directory", file=sys.stderr)
        return 2
    model = zoo.create_model(args.model, pretrained=args.src, **overrides)
    checkpoint_lib.save_model(args.out, model, meta={"model_name": args.model, "overrides": overrides})
    print(f"wrote {args.out} ({args.model}, {sum(x.size for x in jax.tree.leaves(nnx.state(model))):,} values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
