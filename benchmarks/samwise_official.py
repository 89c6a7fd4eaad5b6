"""SAMWISE streaming inference speed: ours (`SAMWISEPredictor.segment`, jitted) vs the official PyTorch code (eager)
on the same CPU, the same frames and the same image size, in alternating rounds; and where the time goes in each.

    python benchmarks/samwise_official.py --official /tmp/samwise_official      # tiny SAM2, 256 px, 16 frames x 3
    python benchmarks/samwise_official.py --official DIR --image-size 512 --frames 16 --rounds 3

`--official` is a checkout of https://github.com/ClaudiaCuttano/SAMWISE (e.g. `git archive HEAD | tar -x -C DIR`).
Nothing of it is copied into this repository. Its package is named `models`, as ours is, so it runs in a child
process of this script (`--worker`), with DIR first on `sys.path`; the parent runs ours, and the two take turns: a
round of ours, then the child's round, and so on (the idle side waits on a pipe), so that changes in the machine's
load hit both alike.

The official side is the inference loop of `inference_mevis.py` / `inference_demo.py`: clips of `eval_clip_window`
(8) consecutive frames with their absolute frame ids, `torchvision` `Resize(S - 4, max_size=S)` + `ToTensor` +
ImageNet `Normalize` per frame (`VideoEvalDataset`), `model([imgs], [text], [target])` under `torch.no_grad()`, the
mask logits resized to the frame size (bilinear) and `sigmoid > 0.5`. The model is built as `build_samwise` does,
from the official `models/sam2/sam2_configs/sam2_hiera_t.yaml` (Hiera-T, SAM 2.0) through hydra with
`++model.image_size=S`, `++model.text_encoder_embed_dim=768` and `++model.motion_prompt=False`, and `opts.py`'s
defaults plus the released inference flags `--HSA --use_cme_head` (adapters of width 256, HSA patches 8 / 4 / 2, text
fusion after layers 4 / 8 / 12, CME window 4, `switch_mem reweight`). All weights are random (torch's default
inits; nothing is downloaded; the time does not depend on the values). Shims, applied from outside (the fetched files
are not edited):
- empty stand-ins for `spacy` and `py3_wget` (imported at the top of `models/samwise.py`, used only by
  `--motion_prompt` and the weight download) and for `fairseq.models.roberta` (its `RobertaModel.from_pretrained`
  loads the fairseq roberta.base download; the vendored fairseq does not import on Python 3.11 unedited);
- the text encoder: `transformers.RobertaModel(RobertaConfig())` (RoBERTa-base: 12 post-LN layers, width 768, 12
  heads, FFN 3072; random weights, `sdpa` attention) behind the fairseq interface the official code calls:
  `.model.encoder.sentence_encoder.forward_embedding(ids, None)` (word + position embeddings, LayerNorm) and
  `.layers[i](x (L, B, C), encoder_padding_mask=(B, L) bool)` (sequence-first, as fairseq);
- `RobertaTokenizerFast.from_pretrained('roberta-base')` (a download) returns a stand-in that gives the same token
  ids as ours (the parent tokenises; the time depends on the number of tokens, not on their values);
- `SAMWISE.preprocess_text_features` is replaced on the instance by the same steps without `.cuda()` (the official
  body moves the ids to the GPU unconditionally): ids -> `forward_embedding` -> padded positions zeroed ->
  sequence-first;
- `SAMWISE.compute_decoder_out_no_mem` (the CME's memory-less pass) is replaced on the instance by the same steps with
  the feature map's own size: the official body reshapes to a hard-coded 64 x 64 (1024 px input) and fails at any
  other image size.
torch runs with `torch.set_num_threads(os.cpu_count())`; `--omp-wait-policy auto` sets OMP_WAIT_POLICY=PASSIVE in
the child when the 1-min load is > 0.5 (see benchmarks/common.apply_omp_wait_policy).

Ours: `zoo.create_model("samwise_sam2_tiny", image_size=S)` (Hiera-T + RoBERTa-base, random weights) streamed by
`SAMWISEPredictor.segment` (one jitted step per 8-frame clip, state carried). Both sides get the real frames of
opencv-doc's vtest.avi (768 x 576), resized to long side S (S x 3/4 S) and zero-padded to S^2, and the same text.

Timing: after a warm-up (ours: the first clips, which compile; official: one clip), `--rounds` rounds of a
`--frames`-frame video on each side; frames / s = frames / the round's wall time; the ratio is ours / official
(> 1: ours is faster). Where the time goes: ours, the jitted early-fusion encoder (`SAMWISE.encode_clip`) timed alone
on the same clip, the rest being the per-frame part; official, timers around its own methods from outside
(`compute_backbone_output` = early fusion, split further into the Hiera blocks, the text layers, the adapters and
the FPN neck; `compute_decoder_out_w_mem` = memory attention + heads; `compute_decoder_out_no_mem` + the CME;
`compute_memory_bank_dict` = memory encoder; the rest = pre/post-processing). Writes
benchmarks/results/samwise_official.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
TEXT = "the person walking to the left"


# ------------------------------------------------------------------------------------------------ official (child)
def _stub_modules() -> None:
    """Empty stand-ins for the modules `models/samwise.py` imports but this path never uses (module docstring)."""
    import types

    for name in ("spacy", "py3_wget", "fairseq", "fairseq.models", "fairseq.models.roberta"):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    sys.modules["fairseq.models.roberta"].RobertaModel = None  # only `build_samwise` (not called) uses it


def _roberta_holder():
    """RoBERTa-base from `transformers` (random weights) behind the fairseq hub interface the official code calls."""
    import torch
    from torch import nn
    from transformers import RobertaConfig, RobertaModel

    hf = RobertaModel(RobertaConfig(attn_implementation="sdpa"), add_pooling_layer=False)

    class Layer(nn.Module):
        """A fairseq TransformerEncoderLayer call: x (L, B, C), encoder_padding_mask (B, L) True on padding."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, x, encoder_padding_mask=None):
            mask = None
            if encoder_padding_mask is not None:
                mask = torch.zeros(encoder_padding_mask.shape, dtype=x.dtype)
                mask = mask.masked_fill(encoder_padding_mask, torch.finfo(x.dtype).min)[:, None, None, :]
            out = self.layer(x.transpose(0, 1), attention_mask=mask)
            out = out[0] if isinstance(out, tuple) else out
            return out.transpose(0, 1)

    class SentenceEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = hf.embeddings
            self.layers = nn.ModuleList([Layer(layer) for layer in hf.encoder.layer])

        def forward_embedding(self, ids, token_embedding=None):
            return self.embeddings(input_ids=ids), None

    class Wrap(nn.Module):
        def __init__(self, **children):
            super().__init__()
            for key, value in children.items():
                setattr(self, key, value)

    return Wrap(model=Wrap(encoder=Wrap(sentence_encoder=SentenceEncoder())))


def _build_official(official: str, image_size: int, ids: list[int]):
    """The official SAMWISE (tiny SAM2, RoBERTa-base, random weights), built as `build_samwise` with the shims."""
    sys.path.insert(0, os.path.abspath(official))
    _stub_modules()
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    # the official package and its opts.py (first on sys.path)
    import models.samwise as official_samwise  # isort: skip
    import opts  # isort: skip
    from models.conditional_memory_encoder import ConditionalMemoryEncoder  # isort: skip

    class Tokenizer:
        """Stands for RobertaTokenizerFast('roberta-base'): the parent's token ids, whatever the caption."""

        @staticmethod
        def from_pretrained(*args, **kwargs):
            return Tokenizer()

        def __call__(self, captions, **kwargs):
            return {"input_ids": [list(ids) for _ in captions], "attention_mask": [[1] * len(ids) for _ in captions]}

    official_samwise.RobertaTokenizerFast = Tokenizer
    args = opts.get_args_parser().parse_args([])
    args.sam2_version, args.HSA, args.use_cme_head = "tiny", True, True
    roberta = _roberta_holder()
    text_dim = 768
    config_dir = os.path.join(os.path.abspath(official), "models", "sam2")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="sam2_configs/sam2_hiera_t.yaml",
                      overrides=[f"++model.motion_prompt={args.motion_prompt}",
                                 f"++model.text_encoder_embed_dim={text_dim}", f"++model.image_size={image_size}"])
        OmegaConf.resolve(cfg)
        cfg.model.pred_obj_scores = not args.disable_pred_obj_score
        cfg.model.pred_obj_scores_mlp = not args.disable_pred_obj_score
        cfg.model.fixed_no_obj_ptr = not args.disable_pred_obj_score
        torch.manual_seed(0)
        sam = instantiate(cfg.model, _recursive_=True)
    model = official_samwise.SAMWISE(
        image_encoder_embed_dim=cfg.model.image_encoder.neck.backbone_channel_list[::-1][1:], text_encoder=roberta,
        text_encoder_embed_dim=text_dim, fusion_stages_txt=args.fusion_stages_txt, fusion_stages=args.fusion_stages,
        image_size=sam.image_size, sam=sam, conditional_memory_encoder=ConditionalMemoryEncoder(sam.hidden_dim),
        adapter_dim=args.adapter_dim, args=args)
    model.eval()

    def preprocess_text_features(captions):  # the official steps without `.cuda()`
        encoded = model.tokenizer(captions, add_special_tokens=True, padding=True)
        input_ids = torch.tensor(encoded["input_ids"])
        padding = torch.tensor(encoded["attention_mask"]).eq(0)
        x, _ = model.text_encoder.model.encoder.sentence_encoder.forward_embedding(input_ids, None)
        x = x * (1 - padding.unsqueeze(-1).type_as(x))
        return x.transpose(0, 1), padding, input_ids

    def compute_decoder_out_no_mem(backbone_out, idx):  # the official steps at the feature map's own size
        feats = backbone_out.get_current_feats(idx)
        high_res = backbone_out.get_high_res_features(feats)
        height, width = backbone_out.feat_sizes[-1]
        pix = feats[-1] + model.sam.no_mem_embed
        pix = pix.permute(1, 2, 0).reshape(1, model.sam.hidden_dim, height, width)
        out = model.sam._forward_sam_heads(backbone_features=pix, text_inputs=backbone_out.state[idx:idx + 1],
                                           high_res_features=high_res)
        out.compute_mask(model.image_size, backbone_out.orig_size[idx])
        return out

    model.preprocess_text_features = preprocess_text_features
    model.compute_decoder_out_no_mem = compute_decoder_out_no_mem
    return model, args


class _Timers:
    """Accumulated wall seconds per part, around callables (torch on the CPU runs synchronously)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name, fn, key=None):
        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                part = key(*a, **k) if key is not None else name
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start
                self.calls[part] = self.calls.get(part, 0) + 1

        return timed

    def reset(self):
        self.seconds, self.calls = {}, {}


def _instrument(model, timers: _Timers) -> None:
    """Timers around the official methods (from outside, on the instance)."""
    trunk_blocks = model.sam.image_encoder.trunk.blocks
    for name in ("compute_backbone_output", "compute_decoder_out_w_mem", "compute_decoder_out_no_mem",
                 "compute_memory_bank_dict"):
        setattr(model, name, timers.wrap(name, getattr(model, name)))
    forw = model.forw_layer_list
    model.forw_layer_list = timers.wrap(
        "", forw, key=lambda start, end, layers, *a, **k: "fusion.hiera_blocks" if layers is trunk_blocks
        else "fusion.text_layers")
    modules = [(adapter, "fusion.adapters") for adapter in model.cmt_adapters]
    modules += [(model.sam.image_encoder.neck, "fusion.fpn_neck"), (model.conditional_memory_encoder, "cme_head"),
                (model.sam.memory_attention, "memory_attention")]
    for module, name in modules:
        module.forward = timers.wrap(name, module.forward)


def worker(argv: list[str]) -> int:
    """The child: build the official model, answer {"cmd": "round"} requests on stdin with JSON lines on stdout."""
    config = json.loads(argv[0])
    # Nothing of this repository on the path but benchmarks.common: its `models` and `kernels` packages would shadow
    # the official `models` and the `kernels` package that transformers probes.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in (here, _ROOT)]
    sys.path.insert(0, _ROOT)
    from benchmarks.common import apply_omp_wait_policy

    sys.path.remove(_ROOT)

    policy = apply_omp_wait_policy(config["omp_wait_policy"], os.getloadavg()[0])
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision.transforms as TF
    from PIL import Image

    torch.set_num_threads(os.cpu_count() or 1)
    size, clip_length = config["image_size"], config["clip_length"]
    model, args = _build_official(config["official"], size, config["ids"])
    frames = np.load(config["frames"])
    transform = TF.Compose([TF.Resize(size - 4, max_size=size), TF.ToTensor(),
                            TF.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    timers = _Timers()
    _instrument(model, timers)
    height, width = frames.shape[1:3]

    def run(count: int) -> dict:
        """Stream `count` frames (frames cycled) as the official inference loop; per-clip wall seconds."""
        timers.reset()
        clip_s, masks_fg = [], 0
        for first in range(0, count, clip_length):
            start = time.perf_counter()
            ids = list(range(first, min(first + clip_length, count)))
            imgs = torch.stack([transform(Image.fromarray(frames[i % len(frames)])) for i in ids])
            target = {"size": torch.as_tensor([int(imgs.shape[-2]), int(imgs.shape[-1])]), "frame_ids": ids}
            with torch.no_grad():
                outputs = model([imgs], [TEXT], [target])
            pred = F.interpolate(outputs["pred_masks"].unsqueeze(0), size=(height, width), mode="bilinear",
                                 align_corners=False)
            masks = (pred.sigmoid() > args.threshold)[0]
            masks_fg += int(masks.sum())
            clip_s.append(time.perf_counter() - start)
        return {"clip_s": clip_s, "parts_s": dict(timers.seconds), "calls": dict(timers.calls), "fg": masks_fg}

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "omp_wait_policy": policy,
            "input_hw": list(transform(Image.fromarray(frames[0])).shape[-2:]),
            "params": sum(p.numel() for p in model.parameters())}
    start = time.perf_counter()
    run(clip_length)  # warm-up: one clip
    info["warmup_s"] = time.perf_counter() - start
    print(json.dumps({"ready": info}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] != "round":
            break
        print(json.dumps(run(request["frames"])), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------- ours (parent)
def _vtest_frames(count: int = 48):
    from zoo.data.video_io import iter_frames

    frames = []
    for frame in iter_frames(VTEST):
        frames.append(frame)
        if len(frames) >= count:
            break
    return frames


class _Official:
    """The child process running the official code."""

    def __init__(self, config: dict):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=_ROOT)
        self.info = self._read()["ready"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the official worker exited (rc {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def round(self, frames: int) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": "round", "frames": frames}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", default=os.environ.get("SAMWISE_OFFICIAL"),
                        help="a checkout of ClaudiaCuttano/SAMWISE (or $SAMWISE_OFFICIAL)")
    parser.add_argument("--variant", default="samwise_sam2_tiny")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=16, help="video length of a timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clip-length", type=int, default=8)
    parser.add_argument("--omp-wait-policy", default="auto", choices=["auto", "passive", "active", "unset"])
    parser.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    if not args.official or not os.path.isfile(os.path.join(args.official, "models", "samwise.py")):
        parser.error(f"--official must be a checkout of ClaudiaCuttano/SAMWISE (models/samwise.py); got {args.official}")

    sys.path.insert(0, _ROOT)
    load_start = os.getloadavg()
    from benchmarks.common import busy_processes, cpu_model, log

    busy_start = busy_processes()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import zoo
    from models.samwise.predictor import SAMWISEPredictor
    from models.text import bert_tokenizer, offline_minilm_dir

    frames = _vtest_frames()
    video = lambda count: (frames[k % len(frames)] for k in range(count))
    log(f"building ours: {args.variant} at {args.image_size} px (random weights)")
    model = zoo.create_model(args.variant, image_size=args.image_size, rngs=nnx.Rngs(0))
    model.eval()
    # RoBERTa's BPE files do not ship offline; MiniLM's WordPiece gives ids in range for both sides (the time depends
    # on the number of tokens only).
    predictor = SAMWISEPredictor(model, bert_tokenizer(offline_minilm_dir() / "vocab.txt"),
                                 clip_length=args.clip_length)
    tokens, mask = predictor.tokenize(TEXT)
    ids = [int(i) for i, m in zip(tokens[0], mask[0]) if m]

    start = time.perf_counter()
    for _ in predictor.segment(video(2 * args.clip_length), TEXT):  # compiles (the first clip), then one more clip
        pass
    ours_warmup_s = time.perf_counter() - start
    # Ours' split, on one clip: the whole jitted step (as `segment` runs it, state carried) and the early-fusion
    # encoder alone, jitted the same way (parameters as arguments), each timed twice back to back per round.
    images, resized = predictor.prepare(frames[:args.clip_length])
    images = jnp.asarray(images)
    tok, msk = jnp.asarray(tokens), jnp.asarray(mask)
    graphdef, params = predictor._graphdef, predictor._params
    encode = jax.jit(lambda p, x: nnx.merge(graphdef, p).encode_clip(x, tok, msk, clip_length=args.clip_length)[
        "backbone_fpn"])
    frame_size = tuple(frames[0].shape[:2])
    _, _, state = predictor._step(params, images, tok, msk, model.initial_state(1), frame_size=frame_size,
                                  resized=resized)

    def step_once():
        return predictor._step(params, images, tok, msk, state, frame_size=frame_size, resized=resized)[0]

    jax.block_until_ready(encode(params, images))
    jax.block_until_ready(step_once())
    log(f"ours compiled and warmed up in {ours_warmup_s:.0f} s")

    def run_ours() -> dict:
        clip_s, last = [], time.perf_counter()
        for result in predictor.segment(video(args.frames), TEXT):
            if (result.index + 1) % args.clip_length == 0 or result.index + 1 == args.frames:
                now = time.perf_counter()
                clip_s.append(now - last)
                last = now
        enc, full = [], []
        for _ in range(2):
            start = time.perf_counter()
            jax.block_until_ready(encode(params, images))
            enc.append(time.perf_counter() - start)
            start = time.perf_counter()
            jax.block_until_ready(step_once())
            full.append(time.perf_counter() - start)
        return {"clip_s": clip_s, "encode_clip_s": min(enc), "step_clip_s": min(full)}

    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "frames.npy"), np.stack(frames))
        log("building the official model (child process)")
        official = _Official({"official": args.official, "image_size": args.image_size,
                              "clip_length": args.clip_length, "ids": ids, "frames": os.path.join(tmp, "frames.npy"),
                              "omp_wait_policy": args.omp_wait_policy})
        log(f"official ready: {official.info}")
        rounds = []
        try:
            for r in range(args.rounds):
                ours = run_ours()
                theirs = official.round(args.frames)
                rounds.append({"ours": ours, "official": theirs})
                o_fps, t_fps = args.frames / sum(ours["clip_s"]), args.frames / sum(theirs["clip_s"])
                log(f"round {r}: ours {o_fps:.2f} frames/s, official {t_fps:.2f} frames/s, ratio {o_fps / t_fps:.2f} "
                    f"(load {os.getloadavg()[0]:.2f})")
        finally:
            official.close()
    load_end = os.getloadavg()
    busy_end = busy_processes()

    per_round = []
    for rnd in rounds:
        o_s, t_s = sum(rnd["ours"]["clip_s"]), sum(rnd["official"]["clip_s"])
        per_round.append({"ours_fps": args.frames / o_s, "official_fps": args.frames / t_s, "ratio": t_s / o_s})
    total_ours = sum(sum(r["ours"]["clip_s"]) for r in rounds)
    total_theirs = sum(sum(r["official"]["clip_s"]) for r in rounds)
    n = args.frames * len(rounds)
    ours_ms = 1e3 * total_ours / n
    # ours' split: the share of the early-fusion encoder in the whole step (same clip, same round), applied to the
    # streamed time per frame
    share = float(np.median([r["ours"]["encode_clip_s"] / r["ours"]["step_clip_s"] for r in rounds]))
    encode_ms = share * ours_ms
    parts = {}
    for rnd in rounds:
        for key, value in rnd["official"]["parts_s"].items():
            parts[key] = parts.get(key, 0.0) + value
    official_parts_ms = {k: 1e3 * v / n for k, v in parts.items()}
    theirs_ms = 1e3 * total_theirs / n
    top = ("compute_backbone_output", "compute_decoder_out_w_mem", "compute_decoder_out_no_mem",
           "compute_memory_bank_dict")
    official_parts_ms["rest (pre/post-processing, loop)"] = theirs_ms - sum(official_parts_ms.get(k, 0.0) for k in top)
    calls = rounds[-1]["official"]["calls"]
    result = {
        "benchmark": "SAMWISE streaming inference, ours (jax.jit) vs official (torch eager), CPU, alternating rounds",
        "variant": args.variant, "image_size": args.image_size, "input_hw": official.info["input_hw"],
        "frames_per_round": args.frames, "clip_length": args.clip_length, "rounds": len(rounds), "text": TEXT,
        "text_tokens": len(ids), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
        "official_info": official.info, "ours_warmup_s": ours_warmup_s,
        "load_average_start": load_start, "load_average_end": load_end, "busy_start": busy_start,
        "busy_end": busy_end, "ours_fps": n / total_ours, "official_fps": n / total_theirs,
        "ratio": total_theirs / total_ours, "per_round": per_round,
        "ours_ms_per_frame": ours_ms, "ours_encode_share": share, "ours_encode_ms_per_frame": encode_ms,
        "ours_per_frame_part_ms": ours_ms - encode_ms, "official_ms_per_frame": theirs_ms,
        "official_parts_ms_per_frame": official_parts_ms, "official_calls_last_round": calls, "raw": rounds,
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "samwise_official")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    _write_md(stem + ".md", result)
    with open(stem + ".md") as f:
        print(f.read())
    return 0


def _write_md(path: str, r: dict) -> None:
    p = r["official_parts_ms_per_frame"]
    info = r["official_info"]
    rounds = ", ".join(f"{x['ours_fps']:.2f} / {x['official_fps']:.2f} = {x['ratio']:.2f}x" for x in r["per_round"])
    fusion = [k for k in sorted(p) if k.startswith("fusion.")]
    fusion_sum = sum(p[k] for k in fusion)
    lines = [
        f"# SAMWISE streaming: ours vs the official PyTorch code ({r['variant']}, CPU)", "",
        (f"{r['cpu']}, {r['cpu_count']} CPUs, shared with other jobs (not idle): 1-min load average "
         f"{r['load_average_start'][0]:.2f} at the start, {r['load_average_end'][0]:.2f} at the end. jax "
         f"{r['jax']}, torch {info['torch']} ({info['threads']} threads, OMP_WAIT_POLICY "
         f"{info['omp_wait_policy'] or 'unset'})."), "",
        (f"Hiera-T (SAM 2.0) + RoBERTa-base, random weights, image size {r['image_size']} (vtest.avi's 768 x 576 frames "
         f"resized to {r['input_hw'][1]} x {r['input_hw'][0]}, zero-padded to {r['image_size']}^2), clips of "
         f"{r['clip_length']}, one expression ({r['text_tokens']} tokens), CME on. {r['rounds']} alternating rounds "
         f"(ours, official, ...) of a {r['frames_per_round']}-frame video each, after warm-up (ours: compile and 2 "
         f"clips, {r['ours_warmup_s']:.0f} s; official: 1 clip, {info['warmup_s']:.0f} s)."), "",
        "| | ours (jax.jit) | official (torch eager) | ratio ours / official |", "|---|---|---|---|",
        f"| frames / s (all rounds) | {r['ours_fps']:.2f} | {r['official_fps']:.2f} | **{r['ratio']:.2f}x** |",
        f"| ms / frame | {r['ours_ms_per_frame']:.0f} | {r['official_ms_per_frame']:.0f} | |", "",
        f"Per round (ours / official frames/s = ratio): {rounds}.", "",
        "Where the time goes (ms per frame, all rounds):", "",
        "| part | ours | official |", "|---|---|---|",
        (f"| early fusion (Hiera + text layers + adapters + FPN) | {r['ours_encode_ms_per_frame']:.0f} | "
         f"{p.get('compute_backbone_output', 0):.0f} |"),
    ]
    lines += [f"| - {k[len('fusion.'):].replace('_', ' ')} | | {p[k]:.0f} |" for k in fusion]
    lines += [
        f"| - rest of the fusion (embeddings, padding, reshapes) | | {p.get('compute_backbone_output', 0) - fusion_sum:.0f} |",
        (f"| per-frame part (memory attention, heads, CME, memory encoder, resizing back) | "
         f"{r['ours_per_frame_part_ms']:.0f} | {r['official_ms_per_frame'] - p.get('compute_backbone_output', 0):.0f} |"),
        f"| - memory attention + heads (`compute_decoder_out_w_mem`) | | {p.get('compute_decoder_out_w_mem', 0):.0f} |",
        f"| -- of which memory attention | | {p.get('memory_attention', 0):.0f} |",
        f"| - CME memory-less pass (`compute_decoder_out_no_mem`) | | {p.get('compute_decoder_out_no_mem', 0):.0f} |",
        f"| - CME head | | {p.get('cme_head', 0):.1f} |",
        f"| - memory encoder (`compute_memory_bank_dict`) | | {p.get('compute_memory_bank_dict', 0):.0f} |",
        f"| - pre/post-processing (resize, normalise, masks back) | | {p['rest (pre/post-processing, loop)']:.0f} |",
        "",
        (f"Official CME memory-less passes in the last round: {r['official_calls_last_round'].get('compute_decoder_out_no_mem', 0)} "
         f"of {r['frames_per_round']} frames (ours, jitted, computes it on every frame and selects). Ours' split: after each "
         "round, the jitted `encode_clip` alone and the whole jitted step on the same clip (each the faster of 2, "
         f"back to back); the encoder's share (median {100 * r['ours_encode_share']:.0f} %) of the streamed time "
         "is the early fusion, the rest the per-frame part."), "",
        ("Made by `benchmarks/samwise_official.py --official DIR` (the official code imported at run time, with the "
         "shims its docstring lists). Timings depend on the machine and its load: compare only numbers of one run."), "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
