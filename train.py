"""Train any zoo model from a config file.

    python train.py --config configs/vit.py:digits --workdir runs/vit_digits
    python train.py --config configs/vit.py:digits --config.optimizer.lr=3e-4 --workdir runs/x

A run resumes from the latest checkpoint in --workdir. Configs are strict: a key that neither the trainer nor the
task reads (a typo in the file or on the command line) stops the run before anything is written, naming the closest
valid key. On a cluster, jax.distributed is initialised from the
environment (SLURM, TPU pods, ...) or from --coordinator_address/--num_processes/--process_id.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/vit.py:digits", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard events.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
flags.mark_flags_as_required(["config", "workdir"])


def _maybe_initialize_distributed() -> None:
    import jax

    if _COORDINATOR.value:
        jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
        return
    cluster_env = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS")
    if any(os.environ.get(v) for v in cluster_env):
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as err:  # a single-process SLURM allocation is not a cluster
            logging.getLogger("zoo.train").warning("jax.distributed.initialize() skipped: %s", err)


def main(argv: list[str]) -> int:
    del argv
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save step at INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    zoo_log = logging.getLogger("zoo")
    zoo_log.addHandler(handler)
    zoo_log.setLevel(logging.INFO)
    zoo_log.propagate = False
    config = _CONFIG.value
    from zoo.train.config import validate_config

    try:
        validate_config(config)  # strict: an unknown key in the file is an error, before anything is written
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _maybe_initialize_distributed()
    from zoo.train.trainer import Interrupted, NonFiniteLossError, Trainer

    try:
        summary = Trainer(config, _WORKDIR.value).run()
    except Interrupted as err:
        print(f"\n{err}. Run the same command again to resume.", file=sys.stderr)
        return 128 + err.signum
    except NonFiniteLossError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 3
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in summary.items() if k.startswith("eval/"))
    print(
        f"done: {summary['step']} steps in {summary['wall_time_s']:.1f} s wall time "
        f"({summary['params']:,} params){'; ' + metrics if metrics else ''}"
    )
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
