"""Per-modality encoders: ResNet-18 (spectrograms, images, video frames), Transformer, MLP.

Every encoder is called ``encoder(x, train, lengths=None) -> (B, D)`` float32 features.
``dtype`` is the compute dtype (``jnp.bfloat16`` for mixed precision); parameters are always
float32. ``lengths`` only matters to the Transformer; the others take fixed-size arrays and
ignore it (so a dataset's ``"<modality>_lengths"`` companion never breaks them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def conv_init(key, shape, dtype=jnp.float32):
  """He-normal with fan_out for an ``(h, w, in, out)`` kernel, as torchvision's (and the
  released AGM code's) ResNet init. Drawn as a flat vector and reshaped: the same
  distribution, but XLA:CPU compiles the 1-D draw in a fraction of the time it takes for a
  4-D one (a ResNet-18 init goes from tens of seconds to a few)."""
  fan_out = shape[-1] * math.prod(shape[:-2])
  flat = jax.random.normal(key, (math.prod(shape),), jnp.float32)
  return (math.sqrt(2.0 / fan_out) * flat).reshape(shape).astype(dtype)


def fold_time(x: jnp.ndarray) -> tuple[jnp.ndarray, int | None]:
  """``(B,H,W)`` -> ``(B,H,W,1)``; ``(B,T,H,W,C)`` -> ``(B*T,H,W,C)``; returns ``(x, T)``.

  ``T`` is None for a single frame. Raises ValueError for any other rank.
  """
  if x.ndim == 3:
    return x[..., None], None
  if x.ndim == 4:
    return x, None
  if x.ndim == 5:
    b, t = x.shape[:2]
    return x.reshape(b * t, *x.shape[2:]), t
  raise ValueError(f"ResNet18 takes (B,H,W), (B,H,W,C) or (B,T,H,W,C) inputs, got shape "
                   f"{x.shape}")


def pool_time_space(y: jnp.ndarray, t: int | None) -> jnp.ndarray:
  """Feature maps ``(B*T,h,w,D)`` -> ``(B,D)``: float32 mean over time (if any) and space."""
  y = y.astype(jnp.float32)
  if t is None:
    return y.mean(axis=(1, 2))
  y = y.reshape(-1, t, *y.shape[1:])
  return y.mean(axis=(1, 2, 3))


class BasicBlock(nn.Module):
  """ResNet basic block: two 3x3 convs + BN, identity or 1x1-projection shortcut."""
  filters: int
  strides: int = 1
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=jnp.float32, kernel_init=conv_init)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32,
                             axis_name=self.bn_axis_name)
    s = (self.strides, self.strides)
    y = conv(self.filters, (3, 3), s, padding=((1, 1), (1, 1)))(x)
    y = nn.relu(norm()(y))
    y = conv(self.filters, (3, 3), padding=((1, 1), (1, 1)))(y)
    y = norm()(y)
    if x.shape != y.shape:
      x = norm()(conv(self.filters, (1, 1), s, name="proj_conv")(x))
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet-18 trunk with global average pooling: ``(…) -> (B, width * 2**(stages-1))``.

  Input ``(B,H,W)`` (spectrogram: a channel axis is added), ``(B,H,W,C)`` (image) or
  ``(B,T,H,W,C)`` (video frames: time is folded into the batch, the 2-D net runs on every
  frame and the feature maps are averaged over time and space, as the released AGM/OGM-GE
  code does for its visual branch). With the default 4 stages the output is ``8 * width``.
  BatchNorm uses ``momentum=0.9`` (PyTorch's 0.1) and ``axis_name=bn_axis_name`` for
  cross-device statistics under ``pmap``.
  """
  width: int = 64
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  # A rank-3 input (B,H,W) has no channel axis; input-level fusion stacks such inputs on
  # a new last axis instead of concatenating them (see classifier.InputEarlyClassifier).
  channelless_rank = 3

  @nn.compact
  def __call__(self, x, train: bool, lengths=None):
    del lengths  # fixed-size input
    x, t = fold_time(jnp.asarray(x, self.dtype))
    x = nn.Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                dtype=self.dtype, param_dtype=jnp.float32, kernel_init=conv_init,
                name="stem_conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, param_dtype=jnp.float32, axis_name=self.bn_axis_name,
                     name="stem_bn")(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = BasicBlock(self.width * 2**i, strides=2 if i > 0 and j == 0 else 1,
                       dtype=self.dtype, bn_axis_name=self.bn_axis_name)(x, train)
    return pool_time_space(x, t)


def valid_mask(lengths, batch: int, length: int) -> jnp.ndarray:
  """Bool ``(B, L)``: token ``l`` of row ``b`` is valid iff ``l < lengths[b]`` (all if None)."""
  if lengths is None:
    return jnp.ones((batch, length), bool)
  return jnp.arange(length)[None, :] < jnp.asarray(lengths).reshape(batch, 1)


def masked_mean(x: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """``(B,L,D)``, ``(B,L)`` -> float32 ``(B,D)`` mean over valid tokens (0 for none)."""
  w = valid.astype(jnp.float32)[..., None]
  count = jnp.maximum(w.sum(axis=1), 1.0)
  return (x.astype(jnp.float32) * w).sum(axis=1) / count


ACTIVATIONS = {"gelu": nn.gelu, "relu": nn.relu}
# The TransformerEncoder options with a fixed set of values (the first is the default).
TRANSFORMER_CHOICES = {"norm": ("pre", "post"), "pool": ("mean", "first"),
                       "positions": ("learned", "none"), "activation": tuple(ACTIVATIONS)}


class TransformerLayer(nn.Module):
  """Encoder layer. ``norm="pre"``: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``; ``"post"``
  (PyTorch's ``nn.TransformerEncoderLayer`` default): ``LN(x + MHA(x))``, then
  ``LN(x + MLP(x))``. ``dropout`` (PyTorch's places: the attention weights, each residual
  branch, and after the MLP's activation) draws from the ``"dropout"`` RNG when ``train``."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  norm: str = "pre"
  dropout: float = 0.0
  activation: str = "gelu"
  norm_eps: float = 1e-6

  @nn.compact
  def __call__(self, x, mask, train: bool = False):
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32)
    norm = functools.partial(nn.LayerNorm, epsilon=self.norm_eps, dtype=self.dtype,
                             param_dtype=jnp.float32)
    act = ACTIVATIONS[self.activation]
    deterministic = not train or not self.dropout
    drop = functools.partial(nn.Dropout, self.dropout, deterministic=deterministic)
    # Created in this order whatever ``norm``: the parameter names do not depend on it.
    attention = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, param_dtype=jnp.float32,
        dropout_rate=self.dropout, deterministic=deterministic)
    norm1 = norm()
    out, hidden = dense(x.shape[-1]), dense(self.mlp_dim)
    norm2 = norm()

    def mlp(y):
      return drop()(out(drop()(act(hidden(y)))))

    if self.norm == "pre":
      x = x + drop()(attention(norm1(x), mask=mask))
      return x + mlp(norm2(x))
    x = norm1(x + drop()(attention(x, mask=mask)))
    return norm2(x + mlp(x))


class TransformerEncoder(nn.Module):
  """``(B,L,F)`` sequence -> ``(B, width)``: Dense(width) + learned positions, pre-LN layers
  with a padding mask, masked mean pool, LayerNorm (the defaults).

  ``lengths`` ``(B,)`` int gives each row's number of valid tokens (None: all valid). A row
  with no valid token (``lengths == 0``) has an all-True key mask (its outputs are finite
  and discarded) and pools to zeros, so its feature is the final LayerNorm's bias: never NaN,
  and it sends no gradient to the layers.

  Options (defaults first; the released AGM UR-Funny encoder, ``model/utils/module_base.py``
  ``Transformer``, is the second of each): ``input_bias`` True/False (the input projection's
  bias; released: a bias-free ``Conv1d(k=1)``); ``positions`` "learned"/"none";
  ``norm`` "pre"/"post" (``TransformerLayer``); ``activation`` "gelu"/"relu" of the MLP
  (``mlp_dim`` wide, default ``4 * width``); ``dropout`` 0.0/0.1 (at train time, from the
  ``"dropout"`` RNG); ``norm_eps`` 1e-6/1e-5 (every LayerNorm); ``use_lengths`` True/False
  (False ignores ``lengths``: every token is attended to and pooled); ``pool`` "mean"/"first"
  (token 0's output); ``final_norm`` True/False (the LayerNorm after pooling).
  """
  num_layers: int = 4
  num_heads: int = 8
  width: int = 768
  mlp_dim: int | None = None
  max_len: int = 512
  dtype: Any = jnp.float32
  norm: str = "pre"
  dropout: float = 0.0
  pool: str = "mean"
  input_bias: bool = True
  positions: str = "learned"
  activation: str = "gelu"
  norm_eps: float = 1e-6
  use_lengths: bool = True
  final_norm: bool = True

  @nn.compact
  def __call__(self, x, train: bool, lengths=None):
    if x.ndim != 3:
      raise ValueError(f"TransformerEncoder takes (B,L,F) inputs, got shape {x.shape}")
    b, length, _ = x.shape
    if length > self.max_len:
      raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
    for name, valid in TRANSFORMER_CHOICES.items():
      if getattr(self, name) not in valid:
        raise ValueError(f"unknown transformer {name} {getattr(self, name)!r}; valid: "
                         f"{', '.join(valid)}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"transformer dropout must be in [0, 1), got {self.dropout}")
    valid = valid_mask(lengths if self.use_lengths else None, b, length)
    # Key-padding mask; a row without valid tokens attends to every (padding) position.
    keys = valid | ~valid.any(axis=1, keepdims=True)
    mask = keys[:, None, None, :]                                       # (B,1,1,L)
    h = nn.Dense(self.width, use_bias=self.input_bias, dtype=self.dtype,
                 param_dtype=jnp.float32, name="embed")(jnp.asarray(x, self.dtype))
    if self.positions == "learned":
      pos = self.param("pos_embedding", nn.initializers.normal(0.02),
                       (self.max_len, self.width), jnp.float32)
      h = h + pos[:length].astype(self.dtype)
    mlp_dim = self.mlp_dim or 4 * self.width
    for _ in range(self.num_layers):
      h = TransformerLayer(self.num_heads, mlp_dim, dtype=self.dtype, norm=self.norm,
                           dropout=self.dropout, activation=self.activation,
                           norm_eps=self.norm_eps)(h, mask, train)
    pooled = masked_mean(h, valid) if self.pool == "mean" else h[:, 0].astype(jnp.float32)
    if not self.final_norm:
      return pooled
    return nn.LayerNorm(epsilon=self.norm_eps, param_dtype=jnp.float32,
                        name="final_norm")(pooled).astype(jnp.float32)


class MLP(nn.Module):
  """``(B, …)`` -> ``(B, features)``: flatten, Dense+ReLU per ``hidden``, Dense+ReLU."""
  hidden: Sequence[int] = (64,)
  features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, lengths=None):
    del train, lengths
    x = jnp.asarray(x, self.dtype).reshape(x.shape[0], -1)
    for h in (*self.hidden, self.features):
      x = nn.relu(nn.Dense(h, dtype=self.dtype, param_dtype=jnp.float32)(x))
    return x.astype(jnp.float32)
