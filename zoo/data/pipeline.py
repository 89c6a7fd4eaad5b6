"""Deterministic, host-sharded, resumable grain pipelines over random-access sources.

The stream of *global* positions g = 0, 1, 2, ... is laid out once for all hosts:

- epoch e = g // L, slot k = g % L, example = permutation_e[k] (a fixed-seed shuffle of the whole
  source per epoch, or the identity for eval). In training with `drop_remainder`, L is the source
  length rounded down to a multiple of the global batch, so no batch straddles two epochs.
- host p of P reads the positions g = j * P + p (j = 0, 1, ...), and its i-th batch holds
  j in [i * B/P, (i + 1) * B/P). So global batch i is the same set of examples whatever P is,
  hosts never overlap, and together they cover the epoch.
- with a finite number of epochs and no `drop_remainder`, the stream is padded up to a whole
  global batch; padded rows repeat real examples and carry `_mask = False`.

Each example is transformed with `example_rng(seed, epoch, source_index)`; a source that draws randomness
itself (a video source picking which frames to decode) defines `source.sample(index, rng)`, which the pipeline
calls instead of `source[index]` with that same generator before the transform. The iterator state is
the number of batches consumed, so a restored iterator rebuilds the stream from that position and
yields exactly the batches the original would have.

With `worker_count > 0` whole host batches are built in that many grain worker processes
(`IterDataset.mp_prefetch`), so decoding (video) does not block the training step; batch i still comes from
worker i % worker_count in order, so the output does not depend on the worker count. The pipeline (source,
transforms) is pickled into the workers. Sources that skip unreadable files mark each example with
`_skipped` (files skipped to produce it); `DataIterator.num_skipped` sums it over the batches seen, which also
counts skips that happened inside workers.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grain
import numpy as np

from zoo.data.sources import Source
from zoo.data.transforms import Transform, example_rng

BatchTransform = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]

STATE_VERSION = 1
MASK_KEY = "_mask"
INDEX_KEY = "_index"
SKIPPED_KEY = "_skipped"


class _EpochPermutations:
    """Per-epoch permutations of range(n), cached (threads read neighbouring epochs concurrently)."""

    def __init__(self, num_examples: int, seed: int, shuffle: bool, cache_size: int = 3):
        self.num_examples = num_examples
        self.seed = seed
        self.shuffle = shuffle
        self.cache_size = cache_size
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, epoch: int) -> np.ndarray:
        with self._lock:
            permutation = self._cache.get(epoch)
            if permutation is None:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0x5A17]))
                permutation = rng.permutation(self.num_examples)
                self._cache[epoch] = permutation
                while len(self._cache) > self.cache_size:
                    self._cache.pop(min(self._cache))
            return permutation

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into grain worker processes: locks do not pickle, and the cache is rebuilt on demand.
        return {key: value for key, value in self.__dict__.items() if key not in ("_lock", "_cache")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = {}
        self._lock = threading.Lock()


@dataclasses.dataclass
class Pipeline:
    """A configured pipeline; `iter(pipeline)` gives a fresh `DataIterator` from the start.

    Attributes:
      source: the random-access source.
      global_batch_size / per_host_batch_size: rows per step over all hosts / on this host.
      epoch_length: examples per epoch (the source length, rounded down to a whole global batch
        in training with drop_remainder).
      num_batches: batches per host in total, None when the stream is infinite.
      steps_per_epoch: global batches per epoch (ceil when batches straddle epochs).
      worker_count: grain worker processes building batches (0: in this process, with read threads).
      worker_buffer_size: batches each worker reads ahead.
    """

    source: Source
    transform: Transform | None
    batch_transform: BatchTransform | None
    seed: int
    global_batch_size: int
    per_host_batch_size: int
    process_index: int
    process_count: int
    shuffle: bool
    epoch_length: int
    num_epochs: int | None
    num_batches: int | None
    steps_per_epoch: int
    num_threads: int
    prefetch_buffer_size: int
    worker_count: int = 0
    worker_buffer_size: int = 1

    def __post_init__(self) -> None:
        self._permutations = _EpochPermutations(len(self.source), self.seed, self.shuffle)
        self._total = None if self.num_epochs is None else self.num_epochs * self.epoch_length

    def __iter__(self) -> DataIterator:
        return DataIterator(self)

    def iterator(self, state: dict[str, Any] | None = None) -> DataIterator:
        """A new iterator, optionally restored from `DataIterator.get_state()`."""
        iterator = DataIterator(self)
        if state is not None:
            iterator.set_state(state)
        return iterator

    def element(self, local_position: int) -> dict[str, Any]:
        """The transformed example at this host's position `local_position` in its stream."""
        global_position = local_position * self.process_count + self.process_index
        valid = self._total is None or global_position < self._total
        epoch, slot = divmod(global_position, self.epoch_length)
        if self.shuffle:
            source_index = int(self._permutations(epoch)[slot])
        else:
            source_index = slot
        rng = example_rng(self.seed, epoch, source_index)
        sample = getattr(self.source, "sample", None)
        example = dict(sample(source_index, rng) if sample is not None else self.source[source_index])
        if self.transform is not None:
            example = self.transform(example, rng)
        example[MASK_KEY] = np.bool_(valid)
        example[INDEX_KEY] = np.int32(source_index)
        return example

    def dataset(self, start_batch: int = 0) -> grain.IterDataset:
        """The grain dataset of this host's batches, starting at batch `start_batch`."""
        start = start_batch * self.per_host_batch_size
        stop = sys.maxsize if self.num_batches is None else self.num_batches * self.per_host_batch_size
        elements = grain.MapDataset.range(start, max(start, stop)).map(self.element)
        if self.num_threads > 0:
            read_options = grain.ReadOptions(
                num_threads=self.num_threads, prefetch_buffer_size=self.prefetch_buffer_size
            )
        else:
            read_options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        if self.worker_count == 0:
            return elements.to_iter_dataset(read_options).batch(self.per_host_batch_size, drop_remainder=True)
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags; a library caller parses none
            flags.FLAGS.mark_as_parsed()
        # Batch before the workers: mp_prefetch deals out elements of the dataset it wraps, so each worker builds
        # whole batches (batch i from worker i % worker_count) and the batches equal the in-process ones.
        batches = elements.batch(self.per_host_batch_size, drop_remainder=True).to_iter_dataset(read_options)
        options = grain.MultiprocessingOptions(
            num_workers=self.worker_count, per_worker_buffer_size=self.worker_buffer_size
        )
        return batches.mp_prefetch(options)

    def state_signature(self) -> dict[str, Any]:
        """What a saved iterator state must agree with to be restored here."""
        return {
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "num_examples": len(self.source),
            "epoch_length": self.epoch_length,
            "shuffle": self.shuffle,
        }


class DataIterator(grain.DatasetIterator):
    """Iterator over host batches with JSON-serialisable `get_state()` / `set_state()`.

    A `grain.DatasetIterator`, so orbax can checkpoint it with grain's handler
    (`grain.checkpoint.CheckpointSave(iterator)` / `CheckpointRestore(iterator)`), or save
    `get_state()` as JSON yourself.
    """

    def __init__(self, pipeline: Pipeline):
        super().__init__()
        self.pipeline = pipeline
        self._step = 0
        self._skipped = 0
        self._iterator: Iterator[dict[str, np.ndarray]] | None = None

    @property
    def step(self) -> int:
        """Batches consumed so far (same on every host)."""
        return self._step

    @property
    def num_skipped(self) -> int:
        """Unreadable files skipped to build the batches this iterator returned (0 for sources that never skip)."""
        return self._skipped

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        pipeline = self.pipeline
        if pipeline.num_batches is not None and self._step >= pipeline.num_batches:
            raise StopIteration
        if self._iterator is None:
            self._iterator = iter(pipeline.dataset(self._step))
        batch = next(self._iterator)
        if SKIPPED_KEY in batch:
            self._skipped += int(np.sum(batch[SKIPPED_KEY]))
        if pipeline.batch_transform is not None:
            rng = np.random.default_rng(
                np.random.SeedSequence([pipeline.seed, self._step, pipeline.process_index, 0xBA7C])
            )
            batch = pipeline.batch_transform(batch, rng)
        self._step += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position: {"version", "step", + the pipeline signature}."""
        return {"version": STATE_VERSION, "step": self._step, **self.pipeline.state_signature()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a `get_state()` dict (saved by this or another host count with the same config)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported data iterator state version {state.get('version')!r}")
        expected = self.pipeline.state_signature()
        mismatched = {key: (state.get(key), value) for key, value in expected.items() if state.get(key) != value}
        if mismatched:
            raise ValueError(f"data iterator state does not match this pipeline (saved, current): {mismatched}")
        self._step = int(state["step"])
        self._iterator = None

    def start_prefetch(self) -> None:
        """Start reading ahead now (e.g. right after a restore, while the model loads)."""
        if self._iterator is None:
            self._iterator = iter(self.pipeline.dataset(self._step))
        start = getattr(self._iterator, "start_prefetch", None)
        if start is not None:
            start()

    def close(self) -> None:
        """Drop the underlying grain iterator (its prefetch threads stop with it)."""
        iterator, self._iterator = self._iterator, None
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def make_pipeline(
    source: Source,
    *,
    batch_size: int,
    train: bool,
    transform: Transform | None = None,
    seed: int = 0,
    num_epochs: int | None = None,
    shard_by_process: bool = True,
    drop_remainder: bool | None = None,
    shuffle: bool | None = None,
    batch_transform: BatchTransform | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_threads: int = 2,
    prefetch_buffer_size: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 1,
) -> Pipeline:
    """Build a deterministic host-sharded pipeline over `source`.

    Args:
      source: random-access source (`len`, `source[i] -> dict`).
      batch_size: GLOBAL batch size; each host gets batch_size / process_count rows.
      train: shuffle per epoch, repeat forever by default, drop the last partial batch.
      transform: per-example `transform(example, rng)`.
      seed: shuffling and augmentation seed.
      num_epochs: passes over the data; None = infinite for train, 1 for eval.
      shard_by_process: split the stream between hosts (False: every host reads all of it,
        e.g. when the source is already per host, as `TfdsSource(shard_by_process=True)`).
      drop_remainder: default True for train, False for eval (eval pads with `_mask=False`).
      shuffle: default `train`.
      batch_transform: `fn(host_batch, rng) -> batch` applied per step (e.g. `Mixup`), with
        rng from (seed, step, process_index).
      process_index, process_count: host identity (default jax's; injectable for tests).
      num_threads, prefetch_buffer_size: grain read threads and elements read ahead (default two
        host batches; num_threads=0 reads synchronously). The output order never depends on them.
      worker_count, worker_buffer_size: grain worker processes that build whole host batches (0: none) and
        the batches each reads ahead. Use them when examples are expensive (video decoding); the output does
        not depend on them.
    """
    if shard_by_process:
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
    else:
        process_index, process_count = 0, 1
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for process_count {process_count}")
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(f"global batch_size {batch_size} must be a positive multiple of process_count {process_count}")
    num_examples = len(source)
    if num_examples == 0:
        raise ValueError("the source is empty")
    drop_remainder = train if drop_remainder is None else drop_remainder
    shuffle = train if shuffle is None else shuffle
    if num_epochs is None and not train:
        num_epochs = 1
    if worker_count < 0 or worker_buffer_size <= 0:
        raise ValueError(
            f"worker_count must be >= 0 and worker_buffer_size > 0, got {worker_count}, {worker_buffer_size}"
        )
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None, got {num_epochs}")

    if train and drop_remainder:
        if num_examples < batch_size:
            raise ValueError(f"source has {num_examples} examples, fewer than one global batch of {batch_size}")
        epoch_length = num_examples // batch_size * batch_size
    else:
        epoch_length = num_examples
    if num_epochs is None:
        num_batches = None
    else:
        total = num_epochs * epoch_length
        num_global = total // batch_size if drop_remainder else math.ceil(total / batch_size)
        if num_global == 0:
            raise ValueError(f"{total} examples make no full global batch of {batch_size} (drop_remainder=True)")
        num_batches = num_global
    steps_per_epoch = epoch_length // batch_size if drop_remainder else math.ceil(epoch_length / batch_size)
    return Pipeline(
        source=source,
        transform=transform,
        batch_transform=batch_transform,
        seed=int(seed),
        global_batch_size=batch_size,
        per_host_batch_size=batch_size // process_count,
        process_index=process_index,
        process_count=process_count,
        shuffle=shuffle,
        epoch_length=epoch_length,
        num_epochs=num_epochs,
        num_batches=num_batches,
        steps_per_epoch=steps_per_epoch,
        num_threads=num_threads,
        prefetch_buffer_size=2 * (batch_size // process_count)
        if prefetch_buffer_size is None
        else prefetch_buffer_size,
        worker_count=int(worker_count),
        worker_buffer_size=int(worker_buffer_size),
    )


def to_global_arrays(host_batch: dict[str, np.ndarray], sharding: Any) -> dict[str, Any]:
    """Host batch -> global jax arrays with `jax.make_array_from_process_local_data`.

    `sharding` is one `jax.sharding.Sharding` for every field (e.g. NamedSharding(mesh, P("data")),
    which splits the leading batch axis) or a dict of shardings keyed like the batch. Fields that
    are not numeric arrays (e.g. strings) are dropped.
    """
    import jax

    out = {}
    for key, value in host_batch.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            continue
        field_sharding = sharding[key] if isinstance(sharding, dict) else sharding
        out[key] = jax.make_array_from_process_local_data(field_sharding, value)
    return out
