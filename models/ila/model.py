"""ILA video models (Tu et al., "Implicit Temporal Modeling with Learnable Alignment for Video Recognition", ICCV 2023)
on the zoo's CLIP towers (`models.clip`).

Every CLIP image block carries an ILA block (official `models/mat.py:MultiAxisAttentionBlock`): message_fc +
message_ln, the ILA module (`message_attn`, `models.ila.align`) on adjacent frame pairs, and two zero-initialised skip
FCs (`temporal_skip_align_fc`, `temporal_skip_fc`) that add the aligned and the interactive features to the residual
stream before CLIP's attention and MLP. Video heads: the MIT temporal transformer (`mit`) plus either the X-CLIP
text classifier with video-specific prompts (Kinetics, branch master) or a linear head (SSv2, branch SSV2).

Parameter paths keep the official names (`visual.transformer.resblocks.N.message_attn...`, `mit...`,
`prompts_generator...`) where the shared layers allow, so the official optimizer groups (`message_`, `temporal_`,
`mit`, see `models.ila.groups`) select the same parameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from models.clip.model import ResidualAttentionBlock, TextTower, VisionTower, tower_layer_id
from models.ila.align import ILA, ILAOutput, cosine_loss, jitter_delta, merge_pairs
from models.layers import Attention, Dropout, Mlp, layer_norm, sharding_scope

_LN_EPS = 1e-5
FUSIONS = ("add", "concat")  # the released code / the paper's pool-and-concat
HEADS = ("xclip", "linear")  # Kinetics (X-CLIP text classifier) / SSv2 (linear classifier)
_trunc02 = nnx.initializers.truncated_normal(0.02)
_zeros = nnx.initializers.zeros


class ILABlock(ResidualAttentionBlock):
    """A CLIP block with ILA in front (the official `MultiAxisAttentionBlock`), on frame-major tokens (B T, L, D).

    fusion "add" (the released code): x += DP(temporal_skip_align_fc(aligned)) + DP(temporal_skip_fc(interactive)),
    then CLIP's x += attn(ln_1(x)), x += mlp(ln_2(x)). fusion "concat" (the paper's description, not the released
    code): the interactive feature is still added; the aligned features are pooled into one token per frame (the
    mask-weighted mean of the merged aligned patches), projected by temporal_skip_align_fc and appended to the spatial
    self-attention's tokens, then dropped after it.
    """

    def __init__(self, dim: int, num_heads: int, *, num_frames: int, grid_size: tuple[int, int],
                 ila_hidden: int = 256, interactive_form: str = "separable", fusion: str = "add",
                 drop_path_rate: float = 0.0, attention_impl: str = "auto", dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        super().__init__(dim, num_heads, act="quick_gelu", drop_path_rate=drop_path_rate,
                         attention_impl=attention_impl, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS} (released code / paper); got {fusion!r}")
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.num_frames = num_frames
        self.fusion = fusion
        self.message_fc = nnx.Linear(dim, dim, kernel_init=_trunc02, **common)
        self.message_ln = layer_norm(dim, eps=_LN_EPS, **common)
        self.message_attn = ILA(dim, grid_size, hidden=ila_hidden, interactive_form=interactive_form, **common)
        # Zero weight and bias: training starts as plain CLIP.
        self.temporal_skip_fc = nnx.Linear(dim, dim, kernel_init=_zeros, bias_init=_zeros, **common)
        self.temporal_skip_align_fc = nnx.Linear(dim, dim, kernel_init=_zeros, bias_init=_zeros, **common)

    def __call__(self, x: jax.Array, *, train: bool = False, delta=None, rngs=None):  # type: ignore[override]
        """x (B T, L, D) -> (x, ILAOutput, cosine loss); `delta` is the mask jitter step (None: no jitter)."""
        bt, length, d = x.shape
        b, t = bt // self.num_frames, self.num_frames
        message = self.message_ln(self.message_fc(x)).reshape(b, t, length, d)
        ila = self.message_attn(message, train=train, jitter_delta=delta)
        loss = cosine_loss(ila.token_pre, ila.token_cur)
        interactive = self.temporal_skip_fc(ila.interactive.reshape(bt, length, d))
        if self.fusion == "add":
            x = x + self.drop_path(self.temporal_skip_align_fc(ila.aligned.reshape(bt, length, d)), train=train,
                                   rngs=rngs)
            x = x + self.drop_path(interactive, train=train, rngs=rngs)
            x = x + self.drop_path(self.attn(self.ln_1(x)), train=train, rngs=rngs)
        else:
            x = x + self.drop_path(interactive, train=train, rngs=rngs)
            weight = merge_pairs(ila.mask_pre.sum((-2, -1)), ila.mask_cur.sum((-2, -1)))  # (B, T)
            pooled = ila.aligned[:, :, 1:].sum(2) / jnp.maximum(weight, 1e-6)[..., None].astype(x.dtype)
            token = self.temporal_skip_align_fc(pooled.reshape(bt, 1, d))
            extended = jnp.concatenate([x, token.astype(x.dtype)], axis=1)
            extended = extended + self.drop_path(self.attn(self.ln_1(extended)), train=train, rngs=rngs)
            x = extended[:, :length]
        x = x + self.drop_path(self.mlp(self.ln_2(x)), train=train, rngs=rngs)
        return x, ila, loss


TEMPORAL = ("ila", "none")  # ILA blocks / plain CLIP blocks (the X-CLIP baseline: frames meet only in the head)


class ILATransformer(nnx.Module):
    """The stack of `ILABlock`s (`transformer.resblocks`); with temporal="none" plain CLIP blocks (the baseline)."""

    def __init__(self, width: int, layers: int, heads: int, *, drop_path_rate: float = 0.0, temporal: str = "ila",
                 rngs: nnx.Rngs, **kwargs: Any):
        if temporal not in TEMPORAL:
            raise ValueError(f"temporal must be one of {TEMPORAL} (ILA blocks / plain CLIP blocks); got {temporal!r}")
        self.temporal = temporal
        rates = [drop_path_rate * i / max(layers - 1, 1) for i in range(layers)]
        if temporal == "ila":
            blocks = [ILABlock(width, heads, drop_path_rate=rates[i], rngs=rngs, **kwargs) for i in range(layers)]
        else:
            plain = {k: kwargs[k] for k in ("attention_impl", "dtype", "param_dtype") if k in kwargs}
            blocks = [ResidualAttentionBlock(width, heads, act="quick_gelu", drop_path_rate=rates[i], rngs=rngs,
                                             **plain) for i in range(layers)]
        self.resblocks = nnx.List(blocks)

    def __call__(self, x, *, train: bool = False, delta=None, rngs=None):
        if self.temporal == "none":
            for block in self.resblocks:
                x = block(x, train=train, rngs=rngs)
            return x, (), jnp.zeros((0,), jnp.float32)
        outputs, losses = [], []
        for block in self.resblocks:
            x, ila, loss = block(x, train=train, delta=delta, rngs=rngs)
            outputs.append(ila)
            losses.append(loss)
        return x, tuple(outputs), jnp.stack(losses)


class ILAVisionTower(VisionTower):
    """The CLIP image tower (`models.clip.VisionTower`: patch_embed, class/positional embeddings, ln_pre, ln_post,
    proj) whose blocks are `ILABlock`s over T frames of a video."""

    def __init__(self, *, num_frames: int, img_size: int = 224, patch_size: int = 16, width: int = 768,
                 layers: int = 12, heads: int = 12, output_dim: int = 512, ila_hidden: int = 256,
                 interactive_form: str = "separable", fusion: str = "add", drop_path_rate: float = 0.0,
                 temporal: str = "ila", attention_impl: str = "auto", dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        # The parent builds the embeddings and norms; its plain block stack (0 blocks here) is replaced.
        super().__init__(img_size=img_size, patch_size=patch_size, width=width, layers=0, heads=heads,
                         output_dim=output_dim, attention_impl=attention_impl, dtype=dtype, param_dtype=param_dtype,
                         rngs=rngs)
        self.depth = layers
        self.num_frames = num_frames
        self.transformer = ILATransformer(
            width, layers, heads, num_frames=num_frames, grid_size=self.grid_size, ila_hidden=ila_hidden,
            interactive_form=interactive_form, fusion=fusion, drop_path_rate=drop_path_rate, temporal=temporal,
            attention_impl=attention_impl, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )

    def forward_video(self, frames: jax.Array, *, train: bool = False, delta=None, rngs=None):
        """frames (B T, H, W, C) -> (class embeddings (B T, output_dim) = ln_post(cls) @ proj, the last block's tokens
        (B T, L, width) before ln_post, per-layer `ILAOutput`s, per-layer cosine losses (layers,))."""
        x = self.embed(frames)
        x, outputs, losses = self.transformer(x, train=train, delta=delta, rngs=rngs)
        cls = self.ln_post(x[:, 0]) @ self.proj[...].astype(x.dtype)
        return cls, x, outputs, losses


class MultiframeIntegrationTransformer(nnx.Module):
    """MIT (X-CLIP): + learnable temporal position embedding (1, T, E) -> pre-LN CLIP blocks over the frames -> +
    the input -> mean over T. With `num_classes` (SSv2) also `classify_head`: L2-normalise -> LN -> Dropout 0.5 ->
    Linear."""

    def __init__(self, num_frames: int, embed_dim: int, *, layers: int = 1, heads: int | None = None,
                 num_classes: int | None = None, head_dropout: float = 0.5, attention_impl: str = "auto",
                 dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        common = {"dtype": dtype, "param_dtype": param_dtype}
        self.num_frames = num_frames
        self.positional_embedding = nnx.Param(_trunc02(rngs.params(), (1, num_frames, embed_dim), param_dtype))
        self.resblocks = nnx.List([
            ResidualAttentionBlock(embed_dim, heads or embed_dim // 64, act="quick_gelu",
                                   attention_impl=attention_impl, rngs=rngs, **common)
            for _ in range(layers)
        ])
        self.classify_head = (None if num_classes is None else
                              LinearHead(embed_dim, num_classes, dropout=head_dropout, rngs=rngs, **common))

    def features(self, x: jax.Array) -> jax.Array:
        """x (B, T, E) -> (B, E) video features (before any classify_head)."""
        h = x + self.positional_embedding[...].astype(x.dtype)
        for block in self.resblocks:
            h = block(h)
        return (h + x).mean(axis=1)

    def classify(self, video: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        """(B, E) video features -> (B, num_classes) logits of the classify_head (on the L2-normalised features)."""
        if self.classify_head is None:
            raise ValueError("this MIT has no classify_head (build it with num_classes)")
        video = video / jnp.linalg.norm(video.astype(jnp.float32), axis=-1, keepdims=True).astype(video.dtype)
        return self.classify_head(video, train=train, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        """x (B, T, E) -> (B, E) video features (or (B, num_classes) logits with a classify_head)."""
        video = self.features(x)
        return video if self.classify_head is None else self.classify(video, train=train, rngs=rngs)


class LinearHead(nnx.Module):
    """SSv2's `mit.classify_head`: LayerNorm -> Dropout -> Linear."""

    def __init__(self, dim: int, num_classes: int, *, dropout: float = 0.5, dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.norm = layer_norm(dim, eps=_LN_EPS, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.fc = nnx.Linear(dim, num_classes, kernel_init=_trunc02, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        return self.fc(self.dropout(self.norm(x), train=train, rngs=rngs))


class PromptGeneratorLayer(nnx.Module):
    """X-CLIP prompt layer: text += cross_attn(norm1(text), visual) (bias-free q/k/v); text += mlp(norm3(text))."""

    def __init__(self, dim: int, heads: int, *, attention_impl: str = "auto", dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.cross_attn = Attention(dim, heads, fused=False, qkv_bias=False, kernel_init=_trunc02,
                                    attention_impl=attention_impl, **common)
        self.norm1 = layer_norm(dim, eps=_LN_EPS, **common)
        self.norm3 = layer_norm(dim, eps=_LN_EPS, **common)
        self.mlp = Mlp(dim, 4 * dim, act="quick_gelu", fc1_init=_trunc02, **common)

    def __call__(self, text: jax.Array, visual: jax.Array) -> jax.Array:
        text = text + self.cross_attn(self.norm1(text), visual, visual)
        return text + self.mlp(self.norm3(text))


class VideoSpecificPrompt(nnx.Module):
    """X-CLIP's video-specific prompt generator: alpha * decoder(text, norm(visual)) (added to the text features)."""

    def __init__(self, embed_dim: int, *, layers: int = 2, heads: int | None = None, alpha: float = 0.1,
                 attention_impl: str = "auto", dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.norm = layer_norm(embed_dim, eps=_LN_EPS, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.decoder = nnx.List([
            PromptGeneratorLayer(embed_dim, heads or embed_dim // 64, attention_impl=attention_impl, dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)
            for _ in range(layers)
        ])
        self.alpha = nnx.Param(jnp.full((embed_dim,), alpha, param_dtype))

    def __call__(self, text: jax.Array, visual: jax.Array) -> jax.Array:
        """text (B, K, E), visual (B, N, E) -> (B, K, E)."""
        visual = self.norm(visual)
        for layer in self.decoder:
            text = layer(text, visual)
        return self.alpha[...].astype(text.dtype) * text


class ILAVideoOutput(NamedTuple):
    """logits (B, classes); cos_losses (layers,): the per-layer mutual-information cosine losses, which the official
    loss adds unweighted (aux_loss = their sum); video_features (B, E) (the MIT output; SSv2: before the head);
    layers: the per-layer `ILAOutput`s (points, masks, aligned / interactive features)."""

    logits: jax.Array
    cos_losses: jax.Array
    aux_loss: jax.Array
    video_features: jax.Array
    layers: tuple[ILAOutput, ...]

    @property
    def aux_losses(self) -> dict[str, jax.Array]:
        """{"cos": the summed cosine losses}: what `zoo.tasks.video_classification` adds to the CE and logs."""
        return {"cos": self.aux_loss}


class ILAVideoClassifier(nnx.Module):
    """ILA on CLIP for video classification.

    head "xclip" (Kinetics, branch master): `visual` + `mit` + the frozen CLIP `text` tower, `logit_scale`,
    `prompts_visual_ln`, `prompts_visual_proj` and `prompts_generator`; logits = exp(logit_scale) * cos(video, text +
    prompts), one column per class text. head "linear" (SSv2, branch SSV2): `visual` + `mit` with `classify_head`.

    `__call__(video_bthwc, *, text_tokens=None, text_features=None, train=False, epoch=None, rngs=None)`: video
    (B, T, H, W, C) float NHWC frames (normalised with `pretrained_cfg(name).mean/std`); for "xclip", the class texts
    as CLIP token ids (K, context_length) or their cached `encode_text` features (K, E). `train=True` runs BatchNorm on
    batch statistics (updating the running statistics), turns on the nine-offset mask jitter with the step of
    `jitter_delta(epoch)` (`epoch` 0-based, may be traced) and drop path / dropout. Returns `ILAVideoOutput`.
    """

    def __init__(
        self, *, num_frames: int = 8, img_size: int = 224, patch_size: int = 16, vision_width: int = 768,
        vision_layers: int = 12, vision_heads: int | None = None, embed_dim: int = 512, head: str = "xclip",
        num_classes: int | None = None, context_length: int = 77, vocab_size: int = 49408, text_width: int = 512,
        text_layers: int = 12, text_heads: int | None = None, mit_layers: int = 1, mit_heads: int | None = None,
        prompt_layers: int = 2, prompt_heads: int | None = None, prompt_alpha: float = 0.1,
        ila_hidden: int = 256, interactive_form: str = "separable", fusion: str = "add",
        drop_path_rate: float = 0.0, head_dropout: float = 0.5, jitter_delta: float = 0.2,
        jitter_decay_start: int = 30, temporal: str = "ila", attention_impl: str = "auto", dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS} (Kinetics X-CLIP / SSv2 linear); got {head!r}")
        if head == "linear" and not num_classes:
            raise ValueError("the linear (SSv2) head needs num_classes (174 for Something-Something v2)")
        if num_frames < 2:
            raise ValueError(f"ILA aligns adjacent frames: num_frames must be >= 2; got {num_frames}")
        common = {"attention_impl": attention_impl, "dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.head = head
        self.num_frames = num_frames
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.jitter_delta = jitter_delta
        self.jitter_decay_start = jitter_decay_start
        xclip = head == "xclip"
        with sharding_scope():
            self.visual = ILAVisionTower(
                num_frames=num_frames, img_size=img_size, patch_size=patch_size, width=vision_width,
                layers=vision_layers, heads=vision_heads or vision_width // 64, output_dim=embed_dim,
                ila_hidden=ila_hidden, interactive_form=interactive_form, fusion=fusion,
                drop_path_rate=drop_path_rate, temporal=temporal, **common,
            )
            self.text = TextTower(vocab_size=vocab_size, context_length=context_length, width=text_width,
                                  layers=text_layers, heads=text_heads or text_width // 64, output_dim=embed_dim,
                                  act="quick_gelu", **common) if xclip else None
            self.mit = MultiframeIntegrationTransformer(
                num_frames, embed_dim, layers=mit_layers, heads=mit_heads,
                num_classes=num_classes if head == "linear" else None, head_dropout=head_dropout, **common,
            )
            self.logit_scale = nnx.Param(jnp.full((), jnp.log(1 / 0.07), dtype=param_dtype)) if xclip else None
            self.prompts_visual_ln = layer_norm(vision_width, eps=_LN_EPS, dtype=dtype, param_dtype=param_dtype,
                                                rngs=rngs) if xclip else None
            # torch.randn in the official code (and never optimised there).
            self.prompts_visual_proj = nnx.Param(nnx.initializers.normal(1.0)(
                rngs.params(), (vision_width, embed_dim), param_dtype)) if xclip else None
            self.prompts_generator = VideoSpecificPrompt(embed_dim, layers=prompt_layers, heads=prompt_heads,
                                                         alpha=prompt_alpha, **common) if xclip else None

    # ---------------------------------------------------------------------------------------------------------------
    def check_video(self, video: Any) -> None:
        """Raise a ValueError saying what was expected unless `video` is float (B, T, H, W, C) of the model's size."""
        t, (h, w), c = self.num_frames, self.visual.img_size, self.visual.in_chans
        want = f"a float video array of shape (batch, {t}, {h}, {w}, {c}) (frames NHWC)"
        shape, dtype = getattr(video, "shape", None), getattr(video, "dtype", None)
        if shape is None or dtype is None:
            raise ValueError(f"ILA expects {want}; got {type(video).__name__}")
        if len(shape) != 5:
            hint = " (add a batch axis: video[None])" if len(shape) == 4 else ""
            raise ValueError(f"ILA expects {want}; got rank {len(shape)} shape {tuple(shape)}{hint}")
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"ILA expects {want}; got dtype {dtype}: convert to float and normalise the frames")
        if shape[1] != t:
            raise ValueError(f"ILA expects {want}; got {shape[1]} frames in shape {tuple(shape)}. The model was built "
                             f"for num_frames={t} (the MIT position embedding and the frame pairs depend on it)")
        if tuple(shape[2:]) != (h, w, c):
            hint = " (this looks like (B, T, C, H, W): transpose with video.transpose(0, 1, 3, 4, 2))" if (
                shape[2] == c and shape[4] != c) else f" (build the model with img_size={shape[2]})"
            raise ValueError(f"ILA expects {want}; got shape {tuple(shape)}{hint}")

    def max_layer_id(self) -> int:
        """The layer id of everything after the towers' blocks (ln_post, proj, MIT, prompts, text projection)."""
        return max(self.visual.depth, self.text.depth if self.text is not None else 0) + 1

    def layer_id(self, path: str) -> int:
        """Layer-wise LR decay id of the parameter at dotted `path`, as `models.clip.CLIP.layer_id`: 0 for a tower's
        embeddings, i + 1 for `visual.transformer.resblocks.i` (its ILA parts included) or the text tower's block i,
        `max_layer_id()` for the rest. (The official recipe uses no layer decay.)"""
        return tower_layer_id(self, path)

    def delta(self, epoch: int | jax.Array | None) -> float | jax.Array:
        """The training-time mask jitter step at `epoch` (see `models.ila.align.jitter_delta`)."""
        return jitter_delta(epoch, delta=self.jitter_delta, decay_start=self.jitter_decay_start)

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        """Class-text features (K, E) from CLIP token ids (K, context_length) (frozen tower: cache them)."""
        if self.text is None:
            raise ValueError("this ILA model has a linear (SSv2) head and no text tower")
        return self.text(tokens)

    def encode_video(self, video: jax.Array, *, train: bool = False, epoch=None, rngs=None):
        """(video features (B, E) from MIT (no SSv2 head), patch tokens (B, T, HW, width) before ln_post, per-layer
        `ILAOutput`s, cosine losses (layers,))."""
        self.check_video(video)
        b, t = video.shape[:2]
        delta = self.delta(epoch) if train else None
        cls, tokens, outputs, losses = self.visual.forward_video(
            video.reshape(b * t, *video.shape[2:]), train=train, delta=delta, rngs=rngs)
        cls = cls.reshape(b, t, -1)
        return cls, tokens.reshape(b, t, *tokens.shape[1:])[:, :, 1:], outputs, losses

    def forward_features(self, video: jax.Array, *, train: bool = False, epoch=None, rngs=None) -> jax.Array:
        """Video features (B, E): the MIT output (before the SSv2 head; not L2-normalised), for feature extraction."""
        cls, _, _, _ = self.encode_video(video, train=train, epoch=epoch, rngs=rngs)
        return self.mit.features(cls)

    def __call__(self, video: jax.Array, *, text_tokens: jax.Array | None = None,
                 text_features: jax.Array | None = None, train: bool = False, epoch=None, rngs=None) -> ILAVideoOutput:
        if self.head == "xclip" and (text_tokens is None) == (text_features is None):
            raise ValueError("the X-CLIP (Kinetics) head needs the class texts: pass text_tokens=(K, context_length) "
                             "CLIP token ids or text_features=model.encode_text(tokens) (K, embed_dim), one of them")
        cls, patches, outputs, losses = self.encode_video(video, train=train, epoch=epoch, rngs=rngs)
        if self.head == "linear":
            video_features = self.mit.features(cls)
            logits = self.mit.classify(video_features, train=train, rngs=rngs)
            return ILAVideoOutput(logits, losses, losses.sum(), video_features, outputs)
        if text_features is None:
            text_features = self.encode_text(text_tokens)
        video_features = self.mit.features(cls)
        visual = self.prompts_visual_ln(patches) @ self.prompts_visual_proj[...].astype(patches.dtype)
        visual = visual.mean(axis=1)  # (B, HW, E): mean over the frames
        text = jnp.broadcast_to(text_features[None].astype(visual.dtype), (video.shape[0], *text_features.shape))
        text = text + self.prompts_generator(text, visual)
        video_n = video_features / jnp.linalg.norm(video_features, axis=-1, keepdims=True)
        text_n = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
        scale = jnp.exp(self.logit_scale[...]).astype(text_n.dtype)
        logits = jnp.einsum("bd,bkd->bk", video_n, scale * text_n)
        return ILAVideoOutput(logits, losses, losses.sum(), video_features, outputs)
