"""TBJE: the Transformer-based joint encoding of text and audio (Delbrouck, Tits, Brousmiche,
Dupont, "A Transformer-based joint-encoding for emotion recognition and sentiment analysis",
Challenge-HML 2020), as the AGM paper's Table 4 runs it on CMU-MOSEI (released AGM code,
``model/MOSEI_net.py`` ``Model_LA`` with ``MOSEI_Config``: 6 layers, hidden 512, 4 heads, FFN
1024, dropout 0.1, 300-d word embeddings, 60 tokens and 60 audio frames of 80 mel bins).

Inputs: ``text`` ``(B, L)`` int token ids (0 = padding) with optional ``text_lengths``, and
``audio`` ``(B, S, 80)`` mel frames with optional ``audio_lengths``. The network:

1. text: a trainable embedding (``vocab_size × 300``; GloVe rows when the data provide them,
   ``agm_jax.train.state``), then an LSTM (300 → 512); audio: a linear adapter 80 → 512;
2. ``num_layers`` blocks. Block ``i`` runs self-attention (SA) on the text and, on the audio,
   self-attention then attention guided by the text (SGA), each sub-layer
   ``x = LN(x + dropout(sublayer(x)))``; then adds the block's input again (``x = SA(x) + x``,
   as released). Every block but the last then applies a *glimpse* layer per modality:
   ``AttFlat`` with as many glimpses as positions (``L`` and ``S``) — an MLP (512 → 1024 → g)
   gives attention weights over the positions, each glimpse a weighted sum — and
   ``x = LN(x + dropout(glimpses))``;
3. a final one-glimpse ``AttFlat`` per modality merged to ``2·512`` (a linear layer), the sum
   of the two, a LayerNorm (``z``), and the classifier ``2·512 → K`` (``classifier``).

Masks: a padded position (``position >= length``) is masked (scores ``-1e9``) in the first
block's attention and glimpse layers only; later blocks and the final glimpses attend to every
position (released: ``x_m, x_y = None`` for ``i > 0`` and ``attflat(x, None)``). Without a
``<m>_lengths`` companion the released rule applies: a text position is padding where its id is
0, an audio frame where all its values are 0. The masks come from the lengths, not the (masked)
inputs, so a zero-padded modality in a Shapley subset keeps its real mask, as the released code
computes the masks before zeroing.

LayerNorm is TBJE's own: ``a·(x − mean)/(std + 1e-6) + b`` with the unbiased std
(:class:`StdLayerNorm`), not Flax's. Masked subsets zero an input: every token id becomes 0 and
every audio frame 0 (the released ``pad_x``/``pad_y``). The modalities mix from the first block,
so there is no per-modality encoder: ``separable = False`` (generic path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NEG_INF = -1e9


class StdLayerNorm(nn.Module):
  """TBJE's LayerNorm: ``a·(x − mean)/(std + eps) + b``, ``std`` unbiased (``torch.std``)."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    a = self.param("scale", nn.initializers.ones, (d,))
    b = self.param("bias", nn.initializers.zeros, (d,))
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).sum(-1, keepdims=True) / max(d - 1, 1)
    # sqrt with a zero gradient at var == 0 (a constant row, e.g. a zero-padded modality's
    # features): the same value, no NaN.
    positive = var > 0
    std = jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)
    return a * (x - mean) / (std + self.eps) + b


def padding_mask(lengths: jnp.ndarray | None, x: jnp.ndarray, tokens: bool) -> jnp.ndarray:
  """``(B, L)`` True where a position is padding: ``position >= length``, or (no lengths) the
  released rule: id 0 for tokens, an all-zero frame for features."""
  if lengths is not None:
    return jnp.arange(x.shape[1])[None, :] >= jnp.asarray(lengths)[:, None]
  return (x == 0) if tokens else (jnp.abs(x).sum(-1) == 0)


class MultiHeadAttention(nn.Module):
  """Released ``MHAtt``: q/k/v/merge linear layers, softmax of masked scaled scores, dropout on
  the attention map. ``mask`` ``(B, S)`` True = masked key (or None)."""
  width: int
  heads: int
  dropout: float

  @nn.compact
  def __call__(self, v, k, q, mask, train: bool):
    b, d, h = q.shape[0], self.width, self.heads

    def split(x, name):
      return nn.Dense(d, name=name)(x).reshape(b, -1, h, d // h)

    qh, kh, vh = split(q, "linear_q"), split(k, "linear_k"), split(v, "linear_v")
    scores = jnp.einsum("bqhd,bkhd->bhqk", qh, kh) / jnp.sqrt(float(d // h))
    if mask is not None:
      scores = jnp.where(mask[:, None, None, :], NEG_INF, scores)
    att = nn.Dropout(self.dropout, deterministic=not train)(jax.nn.softmax(scores, -1))
    out = jnp.einsum("bhqk,bkhd->bqhd", att, vh).reshape(b, -1, d)
    return nn.Dense(d, name="linear_merge")(out)


class FeedForward(nn.Module):
  """Released ``FFN``: Dense(ff) → ReLU → dropout → Dense(width)."""
  width: int
  ff: int
  dropout: float

  @nn.compact
  def __call__(self, x, train: bool):
    x = jax.nn.relu(nn.Dense(self.ff, name="fc")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.width, name="linear")(x)


class AttFlat(nn.Module):
  """Released ``AttFlat``: ``glimpses`` attention distributions over the positions from an
  MLP; ``merge``: the glimpses concatenated and mapped to ``2·width``, else stacked
  ``(B, glimpses, width)``."""
  width: int
  ff: int
  glimpses: int
  dropout: float
  merge: bool = False

  @nn.compact
  def __call__(self, x, mask, train: bool):
    att = FeedForward(self.glimpses, self.ff, self.dropout, name="mlp")(x, train)  # (B, L, g)
    if mask is not None:
      att = jnp.where(mask[:, :, None], NEG_INF, att)
    att = jax.nn.softmax(att, axis=1)
    pooled = jnp.einsum("blg,bld->bgd", att, x)
    if self.merge:
      return nn.Dense(2 * self.width, name="linear_merge")(pooled.reshape(x.shape[0], -1))
    return pooled


class Residual(nn.Module):
  """``LN(x + dropout(y))`` with TBJE's LayerNorm."""
  dropout: float

  @nn.compact
  def __call__(self, x, y, train: bool):
    return StdLayerNorm(name="norm")(x + nn.Dropout(self.dropout, deterministic=not train)(y))


class Block(nn.Module):
  """One TBJE layer (released ``Block``): SA on the text, SGA on the audio, the glimpses."""
  width: int
  heads: int
  ff: int
  dropout: float
  text_len: int
  audio_len: int
  last: bool

  @nn.compact
  def __call__(self, x, x_mask, y, y_mask, train: bool):
    def mha(name):
      return MultiHeadAttention(self.width, self.heads, self.dropout, name=name)

    def ffn(name):
      return FeedForward(self.width, self.ff, self.dropout, name=name)

    # SA on the text.
    ax = Residual(self.dropout, name="sa_norm1")(x, mha("sa_att")(x, x, x, x_mask, train), train)
    ax = Residual(self.dropout, name="sa_norm2")(ax, ffn("sa_ffn")(ax, train), train)
    # SGA on the audio, guided by the text.
    ay = Residual(self.dropout, name="sga_norm1")(y, mha("sga_att1")(y, y, y, y_mask, train),
                                                  train)
    ay = Residual(self.dropout, name="sga_norm2")(ay, mha("sga_att2")(x, x, ay, x_mask, train),
                                                  train)
    ay = Residual(self.dropout, name="sga_norm3")(ay, ffn("sga_ffn")(ay, train), train)
    x, y = ax + x, ay + y
    if self.last:
      return x, y
    gx = AttFlat(self.width, self.ff, self.text_len, self.dropout, name="att_lang")(
        x, x_mask, train)
    gy = AttFlat(self.width, self.ff, self.audio_len, self.dropout, name="att_audio")(
        y, y_mask, train)
    return (Residual(self.dropout, name="norm_l")(x, gx, train),
            Residual(self.dropout, name="norm_i")(y, gy, train))


class TBJE(nn.Module):
  """TBJE on (text, audio); see the module docstring. ``(logits (B,K), z (B, 2·width))``."""
  modalities: tuple[str, ...]
  num_classes: int
  vocab_size: int
  embed_dim: int = 300
  width: int = 512
  num_layers: int = 6
  num_heads: int = 4
  ff: int = 1024
  dropout: float = 0.1
  dtype: Any = jnp.float32

  separable = False

  @property
  def embedding_paths(self) -> dict[str, tuple[str, ...]]:
    """Where a modality's token embedding lives in the params (for GloVe initialisation)."""
    return {self.modalities[0]: ("embedding", "embedding")}

  @nn.compact
  def __call__(self, inputs: Mapping[str, Any], train: bool):
    if len(self.modalities) != 2:
      raise ValueError(f"TBJE takes (text, audio); got modalities {self.modalities}")
    if self.width % self.num_heads:
      raise ValueError(f"TBJE width {self.width} is not divisible by num_heads "
                       f"{self.num_heads}")
    text_key, audio_key = self.modalities
    tokens = jnp.asarray(inputs[text_key])
    audio = jnp.asarray(inputs[audio_key], self.dtype)
    if tokens.ndim != 2 or audio.ndim != 3:
      raise ValueError(f"TBJE takes text (B,L) token ids and audio (B,S,F); got "
                       f"{tokens.shape} and {audio.shape}")
    x_mask = padding_mask(inputs.get(f"{text_key}_lengths"), tokens, tokens=True)
    y_mask = padding_mask(inputs.get(f"{audio_key}_lengths"), audio, tokens=False)

    emb = nn.Embed(self.vocab_size, self.embed_dim, name="embedding")(
        tokens.astype(jnp.int32))
    x = nn.RNN(nn.OptimizedLSTMCell(self.width), name="lstm_x")(emb)
    y = nn.Dense(self.width, name="adapter")(audio)
    for i in range(self.num_layers):
      first = i == 0
      x, y = Block(self.width, self.num_heads, self.ff, self.dropout, tokens.shape[1],
                   audio.shape[1], last=i == self.num_layers - 1, name=f"block_{i}")(
                       x, x_mask if first else None, y, y_mask if first else None, train)
    fx = AttFlat(self.width, self.ff, 1, self.dropout, merge=True, name="attflat_lang")(
        x, None, train)
    fy = AttFlat(self.width, self.ff, 1, self.dropout, merge=True, name="attflat_audio")(
        y, None, train)
    z = StdLayerNorm(name="proj_norm")(fx + fy).astype(jnp.float32)
    return nn.Dense(self.num_classes, name="classifier")(z).astype(jnp.float32), z
