"""MACs and parameter counts of the FcaFormer variants, without allocating a model.

    python -m models.fcaformer.macs [--img-size 224] [--variants fcaformer_l1,fcaformer_l2]

Two MAC counts per variant for one image:
- `matmul_conv`: multiply-accumulates of every dot_general and convolution in the traced forward pass (what fvcore,
  used by the paper, counts: it ignores element-wise ops, norms and softmax);
- `xla`: XLA's `cost_analysis()` flops of the compiled forward / 2 (everything, element-wise ops included).
"""

from __future__ import annotations

import argparse
import json
import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _eqn_macs(eqn) -> int:
    if eqn.primitive.name == "dot_general":
        (contract_lhs, _), _ = eqn.params["dimension_numbers"]
        lhs_shape = eqn.invars[0].aval.shape
        return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[d] for d in contract_lhs)
    if eqn.primitive.name == "conv_general_dilated":
        rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) positions in the kernel
        kernel_shape = eqn.invars[1].aval.shape
        per_output = kernel_shape[rhs_spec[1]] * math.prod(kernel_shape[d] for d in rhs_spec[2:])
        return math.prod(eqn.outvars[0].aval.shape) * per_output
    return 0


def _jaxpr_macs(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += _eqn_macs(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += _jaxpr_macs(sub)
    return total


def count(name: str, img_size: int = 224) -> dict[str, float]:
    """{'params', 'matmul_conv_gmacs', 'xla_gmacs'} of registered model `name` for one img_size x img_size image."""
    import zoo

    abstract = nnx.eval_shape(lambda: zoo.create_model(name, img_size=img_size))
    graphdef, state = nnx.split(abstract)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    images = jax.ShapeDtypeStruct((1, img_size, img_size, 3), jnp.float32)

    def forward(state, images):
        return nnx.merge(graphdef, state)(images)

    jaxpr = jax.make_jaxpr(forward)(state, images)
    cost = jax.jit(forward).lower(state, images).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {
        "params": params,
        "matmul_conv_gmacs": _jaxpr_macs(jaxpr.jaxpr) / 1e9,
        "xla_gmacs": float(cost["flops"]) / 2 / 1e9,
    }


def main(argv: list[str] | None = None) -> None:
    """Print one JSON line per variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--variants", default="fcaformer_l1,fcaformer_l2,fcaformer_l3,fcaformer_l4")
    args = parser.parse_args(argv)
    for name in args.variants.split(","):
        print(json.dumps({"model": name, "img_size": args.img_size, **count(name, args.img_size)}), flush=True)


if __name__ == "__main__":
    main()
