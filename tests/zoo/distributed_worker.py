"""One process of the two-process jax.distributed test (tests/zoo/test_train.py).

    python distributed_worker.py COORDINATOR PROCESS_ID WORKDIR OUT_JSON
"""

import json
import os
import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_num_cpu_devices", 2)


def main() -> None:
    coordinator, process_id, workdir, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator, num_processes=2, process_id=process_id)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    import numpy as np
    from flax import nnx

    from tests.zoo.test_train import _tiny_config
    from zoo.train.trainer import Trainer

    config = _tiny_config(num_train_steps=4, log_every=1, mesh={"data": 2, "fsdp": 2, "model": 1})
    trainer = Trainer(config, workdir)
    trainer.run()
    params = nnx.to_pure_dict(nnx.filter_state(trainer.to_state(trainer.state)[0], nnx.Param))
    # Every process sees the same global (replicated after allgather) parameters.
    total = 0.0
    for leaf in jax.tree.leaves(params):
        gathered = jax.experimental.multihost_utils.process_allgather(leaf, tiled=True)
        total += float(np.sum(np.abs(np.asarray(gathered, np.float64))))
    with open(out_path, "w") as f:
        json.dump({"param_checksum": total, "device_count": jax.device_count(),
                   "process_count": jax.process_count()}, f)  # fmt: skip


if __name__ == "__main__":
    import jax.experimental.multihost_utils

    main()
