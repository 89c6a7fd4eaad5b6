#!/usr/bin/env bash
# The GPU checks of issues 3 and 6 as one device call (under 10 minutes on an H100): compiled Pallas kernels vs
# the XLA paths, then the attention and rasterizer benchmarks. Results land in $OUT (default /tmp/gpu_session).
#
# From a session whose task has a device (see benchmarks/README_gpu.md):
#   here, once:  echo /.whl/ >> .git/info/exclude
#                python3 -m pip download --no-deps gsplat==1.5.3 -d .whl     # optional: gsplat CUDA reference
#   device:      run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=590)
#
# The device image has jax (CUDA), numpy and torch; nothing here is installed from the network. gsplat is a pure
# Python wheel that JIT-compiles its CUDA extension on first use (minutes): it is built in the background while the
# attention benchmark runs, and the rasterizer benchmark adds the gsplat CUDA column only if that build finished.
set -u
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
start=$(date +%s)
stamp() { echo "== $(($(date +%s) - start)) s: $*"; }

stamp "environment"
nvidia-smi -L || true
$PY -c "import jax, numpy; print('jax', jax.__version__, jax.devices(), 'numpy', numpy.__version__)"

refs=""
if ls .whl/gsplat-*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/gsplat-*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" && refs="gsplat_cuda"
  stamp "building gsplat's CUDA extension in the background"
  (MAX_JOBS=12 timeout 400 $PY - > "$OUT/gsplat_build.log" 2>&1 << 'EOF'
import torch, gsplat
d = torch.device("cuda")
n = 64
out = gsplat.rasterization(torch.randn(n, 3, device=d), torch.randn(n, 4, device=d), torch.rand(n, 3, device=d) * 0.1,
                           torch.rand(n, device=d), torch.rand(n, 3, device=d),
                           torch.eye(4, device=d)[None], torch.tensor([[[32.0, 0, 16], [0, 32, 16], [0, 0, 1]]], device=d),
                           32, 32)
torch.cuda.synchronize()
print("gsplat CUDA extension ready")
EOF
  ) &
  build_pid=$!
fi

stamp "parity: compiled Pallas kernels vs XLA"
timeout 150 $PY benchmarks/gpu_parity.py --out "$OUT/gpu_parity.json" 2>&1

stamp "attention benchmark"
timeout 210 $PY benchmarks/attention.py --seqs 256,1024,4096,8192,16384 --head-dims 64,128 --iters 10 \
  --out "$OUT/attention_gpu" 2>&1 | tee "$OUT/attention.log" | tail -40

if [ -n "$refs" ]; then
  stamp "waiting for the gsplat build"
  wait "$build_pid" || true
  grep -q "ready" "$OUT/gsplat_build.log" || { echo "gsplat build did not finish: no gsplat CUDA column"; tail -5 "$OUT/gsplat_build.log"; refs=""; }
fi

stamp "rasterizer benchmark (references: ${refs:-none})"
timeout 200 $PY benchmarks/rasterize.py --references "${refs:-none}" --torch-timeout 60 --out "$OUT" 2>&1 | tee "$OUT/rasterize.log" | tail -30
stamp "done"
ls -la "$OUT"
