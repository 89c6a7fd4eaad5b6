#!/usr/bin/env bash
# FcaFormer (reduced-width L1, configs/fcaformer.py:digits) vs a ViT of the same size on opencv-doc's real digits,
# same data / resolution / steps / recipe. Run from the repository root; results in the two workdirs' summary.json.
set -euo pipefail
OUT=${1:-runs/fcaformer_digits_compare}
export JAX_PLATFORMS=cpu
python train.py --config configs/fcaformer.py:digits --workdir "$OUT/fcaformer"
# The ViT: configs/vit.py:digits with the FcaFormer digits data and recipe; 176 wide x 4 deep, 4 heads, patch 4 at
# 32x32 (64 tokens): 1,518,362 params vs FcaFormer's 1,503,214.
python train.py --config configs/vit.py:digits --workdir "$OUT/vit" \
  --config.model.overrides.img_size=32 --config.model.overrides.patch_size=4 \
  --config.model.overrides.embed_dim=176 --config.model.overrides.depth=4 --config.model.overrides.num_heads=4 \
  --config.data.train.name=opencv_digits --config.data.eval.name=opencv_digits \
  --config.data.train.kwargs.image_size=32 --config.data.eval.kwargs.image_size=32 --config.data.image_size=32 \
  --config.data.eval_batch_size=200 \
  --config.num_train_steps=400 --config.optimizer.warmup_steps=40 --config.optimizer.min_lr=1e-6 \
  --config.optimizer.clip_norm=0.0 --config.log_every=25 --config.eval_every=200 --config.checkpoint_every=200
