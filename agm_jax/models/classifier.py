"""Multimodal classifiers and ``build_model``: the config -> Flax module map.

* :class:`MultimodalClassifier` (``separable = True``): one encoder per modality and a fusion
  head; ``encode`` / ``encode_one`` / ``fuse`` let a caller run the encoders once and the head
  many times (the fast subset path of ``agm_jax.subsets``).
* :class:`InputEarlyClassifier` (``separable = False``): the modalities are stacked on the
  channel axis into ONE encoder (input-level fusion); only whole-model passes exist.

Both return ``(logits (B,K), z)``, ``z`` the feature before the last classifier layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from agm_jax.models import encoders as enc
from agm_jax.models import fusion as fus
from agm_jax.models import mmtm as mmtm_lib
from agm_jax.models import psp as psp_lib
from agm_jax.models import tbje as tbje_lib

# Fusions inside the encoders (models/mmtm.py: ResNet-18 streams exchanging MMTM gates).
STREAM_FUSIONS = ("mmtm",)
# Whole published architectures with their own fusion (the AGM paper's Table 4): PSP on AVE
# (models/psp.py), TBJE on CMU-MOSEI (models/tbje.py); options in ``model.psp`` /
# ``model.tbje``, encoders unused.
ARCHITECTURES = ("psp", "tbje")
FUSIONS = (*fus.HEADS, "input_early", *STREAM_FUSIONS, *ARCHITECTURES)
ENCODERS = ("resnet18", "transformer", "mlp")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

_ENCODER_CLASSES = {"resnet18": enc.ResNet18, "transformer": enc.TransformerEncoder,
                    "mlp": enc.MLP}
# The config keys each encoder accepts (dtype and bn_axis_name come from elsewhere).
_ENCODER_KEYS = {
    "resnet18": ("width", "stage_sizes"),
    "transformer": ("num_layers", "num_heads", "width", "mlp_dim", "max_len", "norm", "dropout",
                    "pool", "input_bias", "positions", "activation", "norm_eps", "use_lengths",
                    "final_norm"),
    "mlp": ("hidden", "features"),
}


# The last linear layer's kernel(s) in every model here (``fusion/classifier``, a sum head's
# ``fusion/classifier_<i>``, an input-early model's ``classifier``): what the released AGM
# code's conditional clip watches (``agm_jax.transforms.clip``).
OUTPUT_LAYER = r"^(fusion/)?classifier(_\d+)?/kernel$"


def _has_dropout(module: nn.Module) -> bool:
  """Whether an encoder or head drops units in train mode (a positive ``dropout`` rate)."""
  return bool(getattr(module, "dropout", 0))


def lengths_key(modality: str) -> str:
  """The optional companion key holding a modality's sequence lengths ``(B,)``."""
  return f"{modality}_lengths"


class MultimodalClassifier(nn.Module):
  """Per-modality encoders + a fusion head; params ``encoders_0 … encoders_{k-1}, fusion``.

  ``inputs`` maps each modality name to its batch ``(B, …)``; ``"<m>_lengths"`` ``(B,)``,
  if present, is passed to that modality's encoder as ``lengths``.
  """
  modalities: tuple[str, ...]
  encoders: tuple[nn.Module, ...]
  fusion: nn.Module

  separable = True

  def setup(self):
    if len(self.encoders) != len(self.modalities):
      raise ValueError(f"{len(self.modalities)} modalities but {len(self.encoders)} encoders")

  def encode_one(self, x, train: bool, index: int, lengths=None) -> jnp.ndarray:
    """Encoder ``index`` (a static Python int) on its modality's batch: ``(B, D_index)``."""
    kwargs = {} if lengths is None else {"lengths": lengths}
    return self.encoders[index](x, train, **kwargs)

  def encode(self, inputs: Mapping[str, Any], train: bool) -> tuple[jnp.ndarray, ...]:
    """Every encoder on its modality: a tuple of ``(B, D_m)`` in modality order."""
    return tuple(self.encode_one(inputs[m], train, i, inputs.get(lengths_key(m)))
                 for i, m in enumerate(self.modalities))

  def fuse(self, features: Sequence[jnp.ndarray], train: bool):
    """The fusion head on per-modality features: ``(logits (B,K), z)``."""
    return self.fusion(tuple(features), train)

  def unimodal_logits(self, features: Sequence[jnp.ndarray]) -> jnp.ndarray:
    """``(k, B, K)`` per-modality logits of a late-fusion head (sum / concat only)."""
    if not self.fusion.late:
      raise ValueError(f"{type(self.fusion).__name__} has no per-modality logits; only late "
                       f"fusion ({', '.join(fus.late_fusions())}) has")
    return self.fusion.unimodal_logits(tuple(features))

  @property
  def stochastic(self) -> bool:
    """Whether a train-mode pass draws dropout masks (needs the ``"dropout"`` RNG)."""
    return any(map(_has_dropout, (*self.encoders, self.fusion)))

  def __call__(self, inputs: Mapping[str, Any], train: bool):
    return self.fuse(self.encode(inputs, train), train)


def stack_inputs(xs: Sequence[jnp.ndarray], channelless_rank: int | None = None) -> jnp.ndarray:
  """Same-shape modality batches -> one batch: inputs of rank ``channelless_rank`` (e.g.
  ``(B,H,W)`` spectrograms for a ResNet) are stacked on a new last axis, all others are
  concatenated on their last (channel / feature) axis."""
  shapes = {tuple(x.shape) for x in xs}
  if len(shapes) != 1:
    raise ValueError(f"input_early fusion needs identical input shapes, got {sorted(shapes)}")
  if xs[0].ndim == channelless_rank:
    return jnp.stack(tuple(xs), axis=-1)
  return jnp.concatenate(tuple(xs), axis=-1)


def _merge_lengths(inputs: Mapping[str, Any], modalities: Sequence[str]):
  """Elementwise max of the modalities' lengths (a token is valid if any modality has it)."""
  found = [jnp.asarray(inputs[lengths_key(m)]) for m in modalities if lengths_key(m) in inputs]
  if not found:
    return None
  out = found[0]
  for x in found[1:]:
    out = jnp.maximum(out, x)
  return out


class InputEarlyClassifier(nn.Module):
  """Input-level fusion: modalities stacked on the channel axis into ONE encoder, then
  ``Dense(K)``; ``z`` is the encoder's ``(B, D)`` output."""
  modalities: tuple[str, ...]
  encoder: nn.Module
  num_classes: int

  separable = False

  @property
  def stochastic(self) -> bool:
    """Whether a train-mode pass draws dropout masks (needs the ``"dropout"`` RNG)."""
    return _has_dropout(self.encoder)

  @nn.compact
  def __call__(self, inputs: Mapping[str, Any], train: bool):
    x = stack_inputs([inputs[m] for m in self.modalities],
                     getattr(self.encoder, "channelless_rank", None))
    lengths = _merge_lengths(inputs, self.modalities)
    kwargs = {} if lengths is None else {"lengths": lengths}
    z = self.encoder(x, train, **kwargs)
    return nn.Dense(self.num_classes, name="classifier")(z), z


# --------------------------------------------------------------------------- build_model


def _plain(value):
  """ConfigDict / lists -> plain dicts and tuples (hashable module attributes)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def _encoder_config(model_config, modality: str) -> dict:
  """The ``dict(type=..., **kwargs)`` for one modality (``encoder_default`` if none)."""
  encoders = model_config.encoders or {}
  cfg = encoders.get(modality, None)
  if cfg is None:
    cfg = model_config.encoder_default
  if cfg is None:
    raise ValueError(f"no encoder for modality {modality!r}: set model.encoders.{modality} or "
                     "model.encoder_default")
  cfg = _plain(cfg)
  return {"type": cfg} if isinstance(cfg, str) else dict(cfg)


def _check_shape(kind: str, cfg: dict, modality: str, shape) -> None:
  """Input rank checks (``shape`` excludes the batch axis)."""
  shape = tuple(shape)
  if kind == "resnet18" and len(shape) not in (2, 3, 4):
    raise ValueError(f"encoder resnet18 takes (H,W), (H,W,C) or (T,H,W,C) inputs; modality "
                     f"{modality!r} has shape {shape}")
  if kind == "transformer":
    if len(shape) != 2:
      raise ValueError(f"encoder transformer takes (L,F) sequences; modality {modality!r} has "
                       f"shape {shape}")
    max_len = cfg.get("max_len", enc.TransformerEncoder.max_len)
    if shape[0] > max_len:
      raise ValueError(f"modality {modality!r} has length {shape[0]} > transformer max_len "
                       f"{max_len}")
    width = cfg.get("width", enc.TransformerEncoder.width)
    heads = cfg.get("num_heads", enc.TransformerEncoder.num_heads)
    if width % heads:
      raise ValueError(f"transformer width {width} is not divisible by num_heads {heads} "
                       f"(modality {modality!r})")


def make_encoder(cfg: dict, modality: str, shape, *, dtype, bn_axis_name=None) -> nn.Module:
  """One encoder from ``dict(type=..., **kwargs)``; ValueError names the valid choices."""
  cfg = dict(cfg)
  kind = cfg.pop("type", None)
  if kind not in ENCODERS:
    raise ValueError(f"unknown encoder type {kind!r} for modality {modality!r}; valid: "
                     f"{', '.join(ENCODERS)}")
  valid = _ENCODER_KEYS[kind]
  unknown = sorted(set(cfg) - set(valid))
  if unknown:
    raise ValueError(f"unknown key {unknown[0]!r} for encoder {kind} (modality {modality!r}); "
                     f"valid: type, {', '.join(valid)}")
  if kind == "mlp" and isinstance(cfg.get("hidden"), int):
    cfg["hidden"] = (cfg["hidden"],)
  if shape is not None:
    _check_shape(kind, cfg, modality, shape)
  if kind == "resnet18":
    cfg["bn_axis_name"] = bn_axis_name
  return _ENCODER_CLASSES[kind](dtype=dtype, **cfg)


FUSION_OPTIONS = ("maxout_hidden", "maxout_pieces", "maxout_input_bn", "maxout_bn",
                  "maxout_dropout", "film_condition", "mmtm_stages", "mmtm_ratio",
                  "mmtm_gate_scale", "mlp_hidden", "bias_split")
# Keys added after the first three (configs/default.py has them all): a fusion_options dict
# written without them gets the head it got before they existed.
_LATER_FUSION_OPTIONS = dict(maxout_input_bn=False, maxout_bn=False, maxout_dropout=0.0,
                             mmtm_stages=(1, 2, 3), mmtm_ratio=4.0, mmtm_gate_scale=1.0,
                             mlp_hidden=(256,), bias_split="equal")


def _maxout_hidden(value) -> int | tuple[int, ...]:
  """``fusion_options.maxout_hidden``: an int (every layer's width) or a sequence (per layer)."""
  if isinstance(value, (list, tuple)):
    if not value:
      raise ValueError("fusion_options.maxout_hidden is empty; give an int or a tuple of widths")
    return tuple(int(h) for h in value)
  return int(value)


def _fusion_head(model_config, fusion: str, modalities, num_classes: int,
                 bn_axis_name: str | None = None) -> nn.Module:
  opts = {**_LATER_FUSION_OPTIONS, **_plain(model_config.fusion_options)}
  unknown = sorted(set(opts) - set(FUSION_OPTIONS))
  if unknown:
    raise ValueError(f"unknown fusion_options key {unknown[0]!r}; valid: "
                     f"{', '.join(FUSION_OPTIONS)}")
  split = str(opts["bias_split"])
  if fusion in ("sum", "mlp_head") and split != "equal":
    raise ValueError(f"fusion_options.bias_split {split!r} applies to concat fusion only (sum "
                     "keeps each Dense's own bias, mlp_head zeroes the other modalities)")
  if fusion == "sum":
    return fus.SumFusion(num_classes)
  if fusion == "concat":
    try:
      fus.bias_fractions(split, len(modalities))
    except ValueError as e:
      raise ValueError(f"fusion_options.{e}") from None
    return fus.ConcatFusion(num_classes, bias_split=split)
  if fusion == "mlp_head":
    hidden = opts["mlp_hidden"]
    hidden = (int(hidden),) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
    if not hidden or min(hidden) < 1:
      raise ValueError(f"fusion_options.mlp_hidden must be positive widths, got {hidden!r}")
    return fus.MLPFusion(num_classes, hidden=hidden)
  if fusion == "maxout":
    dropout = float(opts["maxout_dropout"])
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"fusion_options.maxout_dropout must be in [0, 1), got {dropout}")
    head = fus.MaxOutFusion(num_classes, hidden=_maxout_hidden(opts["maxout_hidden"]),
                            pieces=int(opts["maxout_pieces"]),
                            input_bn=bool(opts["maxout_input_bn"]),
                            bn=bool(opts["maxout_bn"]), dropout=dropout,
                            bn_axis_name=bn_axis_name)
    head.widths  # noqa: B018 - validates hidden and pieces now, not at the first apply
    return head
  cond = opts["film_condition"] or modalities[0]
  if cond not in modalities:
    raise ValueError(f"unknown fusion_options.film_condition {cond!r}; valid: "
                     f"{', '.join(modalities)}")
  if len(modalities) < 2:
    raise ValueError("film fusion needs at least 2 modalities")
  return fus.FiLMFusion(num_classes, condition_index=modalities.index(cond))


def _mmtm_model(model_config, modalities, shapes, num_classes: int, dtype, bn_axis_name):
  """``models.mmtm.MMTMClassifier``: one ResNet-18 stream per modality (its ``resnet18``
  encoder config), MMTMs after ``fusion_options.mmtm_stages``."""
  opts = {**_LATER_FUSION_OPTIONS, **_plain(model_config.fusion_options)}
  unknown = sorted(set(opts) - set(FUSION_OPTIONS))
  if unknown:
    raise ValueError(f"unknown fusion_options key {unknown[0]!r}; valid: "
                     f"{', '.join(FUSION_OPTIONS)}")
  if len(modalities) < 2:
    raise ValueError("mmtm fusion needs at least 2 modalities")
  streams = []
  for m in modalities:
    cfg = _encoder_config(model_config, m)
    if cfg.get("type") != "resnet18":
      raise ValueError(f"mmtm fusion runs ResNet-18 streams; modality {m!r} has encoder "
                       f"{cfg.get('type')!r}")
    make_encoder(cfg, m, shapes[m], dtype=dtype)   # validates the keys and the input rank
    cfg.pop("type")
    streams.append(mmtm_lib.Stream(dtype=dtype, bn_axis_name=bn_axis_name, **cfg))
  stages = opts["mmtm_stages"]
  stages = (int(stages),) if isinstance(stages, int) else tuple(int(i) for i in stages)
  return mmtm_lib.MMTMClassifier(modalities, tuple(streams), num_classes, stages=stages,
                                 ratio=float(opts["mmtm_ratio"]),
                                 gate_scale=float(opts["mmtm_gate_scale"]))


# Each architecture's options (``model.psp`` / ``model.tbje``) and their defaults: the released
# AGM code's (``utils/config.py`` ``AVE_Config``, ``MOSEI_Config``; ``model/AVE_net.py``).
ARCHITECTURE_OPTIONS = {
    "psp": dict(threshold=0.099, avps_weight=100.0, hidden=128, dropout=0.1,
                attention_hidden=512),
    "tbje": dict(embed_dim=300, width=512, num_layers=6, num_heads=4, ff=1024, dropout=0.1),
}


def _architecture(model_config, fusion: str, modalities, shapes, num_classes: int, dtype,
                  vocab_sizes: Mapping[str, int]):
  """PSP or TBJE from ``model.<fusion>`` (missing keys take the released defaults)."""
  section = _plain(model_config.get(fusion, None)) or {}
  valid = ARCHITECTURE_OPTIONS[fusion]
  unknown = sorted(set(section) - set(valid))
  if unknown:
    raise ValueError(f"unknown model.{fusion} key {unknown[0]!r}; valid: {', '.join(valid)}")
  opts = {**valid, **section}
  if len(modalities) != 2:
    raise ValueError(f"{fusion} takes exactly 2 modalities "
                     f"({'audio, visual' if fusion == 'psp' else 'text, audio'}); got "
                     f"{', '.join(modalities)}")
  if fusion == "psp":
    a, v = (shapes[m] for m in modalities)
    if len(a) != 2 or len(v) != 4:
      raise ValueError(f"psp takes audio (T, F) and visual (T, H, W, C) per example (AVE with "
                       f"data.visual_pool='none'); got {modalities[0]} {a}, {modalities[1]} {v}")
    if a[0] != v[0]:
      raise ValueError(f"psp needs the same number of segments in both modalities; got {a[0]} "
                       f"and {v[0]}")
    return psp_lib.PSP(tuple(modalities), num_classes, hidden=int(opts["hidden"]),
                       threshold=float(opts["threshold"]), dropout=float(opts["dropout"]),
                       avps_weight=float(opts["avps_weight"]),
                       attention_hidden=int(opts["attention_hidden"]), dtype=dtype)
  text, audio = modalities
  if len(shapes[text]) != 1 or len(shapes[audio]) != 2:
    raise ValueError(f"tbje takes text (L,) token ids and audio (S, F) per example; got "
                     f"{text} {shapes[text]}, {audio} {shapes[audio]}")
  if text not in vocab_sizes:
    raise ValueError(f"tbje needs the vocabulary size of {text!r}: the data source gives none "
                     f"(a tokenised text dataset such as mosei_tbje provides it)")
  if int(opts["width"]) % int(opts["num_heads"]):
    raise ValueError(f"model.tbje.width {opts['width']} is not divisible by num_heads "
                     f"{opts['num_heads']}")
  return tbje_lib.TBJE(tuple(modalities), num_classes, int(vocab_sizes[text]),
                       embed_dim=int(opts["embed_dim"]), width=int(opts["width"]),
                       num_layers=int(opts["num_layers"]), num_heads=int(opts["num_heads"]),
                       ff=int(opts["ff"]), dropout=float(opts["dropout"]), dtype=dtype)


def build_model(model_config, modalities: Sequence[str], num_classes: int,
                spec: Mapping[str, Any], bn_axis_name: str | None = None,
                vocab_sizes: Mapping[str, int] | None = None) -> nn.Module:
  """The classifier a ``c.model`` ConfigDict describes (see ``configs/default.py``).

  ``spec`` is ``{key: (shape_without_batch, dtype)}``; it is checked against the encoders
  (ranks, input_early's identical shapes). ``vocab_sizes``: ``{modality: size}`` of tokenised
  text (TBJE's embedding). ``bn_axis_name`` goes to the ResNets' BatchNorm
  and the maxout head's.
  Raises ValueError (one line naming the valid choices) for an unknown fusion, encoder type,
  encoder key or dtype.
  """
  modalities = tuple(modalities)
  fusion = model_config.fusion
  if fusion not in FUSIONS:
    raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
  dtype_name = model_config.dtype
  if dtype_name not in DTYPES:
    raise ValueError(f"unknown model dtype {dtype_name!r}; valid: {', '.join(DTYPES)}")
  dtype = DTYPES[dtype_name]
  if not modalities:
    raise ValueError("build_model needs at least one modality")
  missing = [m for m in modalities if m not in spec]
  if missing:
    raise ValueError(f"modality {missing[0]!r} is not in the data spec; it has "
                     f"{', '.join(spec)}")
  shapes = {m: tuple(spec[m][0]) for m in modalities}

  if fusion == "input_early":
    if len(set(shapes.values())) != 1:
      detail = ", ".join(f"{m} {s}" for m, s in shapes.items())
      raise ValueError(f"input_early fusion needs identical input shapes; got {detail}")
    configs = {m: _encoder_config(model_config, m) for m in modalities}
    first = configs[modalities[0]]
    differing = [m for m in modalities if configs[m] != first]
    if differing:
      raise ValueError(f"input_early fusion runs ONE encoder; the encoder configs of "
                       f"{modalities[0]!r} and {differing[0]!r} differ")
    encoder = make_encoder(first, modalities[0], shapes[modalities[0]], dtype=dtype,
                           bn_axis_name=bn_axis_name)
    return InputEarlyClassifier(modalities, encoder, int(num_classes))
  if fusion == "mmtm":
    return _mmtm_model(model_config, modalities, shapes, int(num_classes), dtype, bn_axis_name)
  if fusion in ARCHITECTURES:
    return _architecture(model_config, fusion, modalities, shapes, int(num_classes), dtype,
                         dict(vocab_sizes or {}))

  encoders = tuple(make_encoder(_encoder_config(model_config, m), m, shapes[m], dtype=dtype,
                                bn_axis_name=bn_axis_name) for m in modalities)
  head = _fusion_head(model_config, fusion, modalities, int(num_classes), bn_axis_name)
  return MultimodalClassifier(modalities, encoders, head)
