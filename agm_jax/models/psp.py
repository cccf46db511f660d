"""PSP: Positive Sample Propagation for audio-visual event localisation (Zhou, Zheng, Zhong,
Hao, Wang, "Positive Sample Propagation along the Audio-Visual Event Line", CVPR 2021), as the
AGM paper's Table 4 runs it on AVE (released AGM code, ``model/AVE_net.py`` ``psp_net`` with
``(a_dim, v_dim, hidden, classes) = (128, 512, 128, 29)``).

Inputs per video: ``audio`` ``(B, T, 128)`` (one VGGish vector per 1-s segment) and ``visual``
``(B, T, 7, 7, 512)`` (the VGG-19 pool5 map of each segment), ``T = 10``. The network:

1. audio MLP ``fa``: 128 → 256 → 128 (bias-free, no activation between, as released);
2. audio-guided visual attention (``AVGA``, hidden 512, 49 regions): per segment
   ``alpha_r = softmax_r(w_h · tanh(W_v relu(A_v v_r) + (W_g relu(A_a a))_r))`` over the 49
   regions ``r`` — the audio term's entry ``r`` is added to every entry of region ``r``'s
   49-vector, as the released ``AVGA`` broadcasts it (``unsqueeze(2)``) —, the attended
   512-d visual vector ``sum_r alpha_r v_r``; then ``fv``: 512 → 256 → 128;
3. one bi-LSTM per modality (hidden 128 each way → 256);
4. the PSP module: two ReLU branches per modality (``L1``, ``L2``, 256 → 256, dropout 0.1);
   the visual-to-audio similarity ``beta = relu(v2 · a1ᵀ / sqrt(256))`` ``(T, T)``, each row
   normalised to sum 1 (``+1e-8``), the *positive samples* kept where ``beta > threshold``
   (0.099, released ``AVE_Config``) and renormalised (``gamma``); the same from audio to
   visual with ``betaᵀ``. Propagation: ``v' = v + gamma_va · a2`` and ``a' = a + gamma_av · v1``;
   then ``relu(fc)`` 256 → 256 with dropout and ONE LayerNorm (eps 1e-6) shared by both;
5. fusion ``f = (v' + a') / 2``; classifier ``z = relu(L1 f)`` (256 → 64, bias-free) and
   ``logits = L2 z`` (64 → 29, bias-free) per segment.

Segment outputs are flattened: ``logits`` ``(B·T, 29)`` and ``z`` ``(B·T, 64)`` (the released
``mode="feature"`` also returns ``encoded_out.reshape(-1, 64)``), so a per-segment label
array ``(B, T)`` flattens to match (``agm_jax.train.steps``).

The audio-visual pair similarity loss (AVPS, PSP §3.3) is the model's own auxiliary
objective: :meth:`PSP.with_auxiliary_loss` returns, beside the logits,
``avps_weight · MSE(s / (sum_t s + 1e-8), target)`` with ``s = relu(cos(v'_t, a'_t))`` and
the target the batch's ``avps_target`` ``(B, T)`` companion (1/n on the n segments of the
video's event). Weight 100: released ``AVE_Config`` ``LAMBDA``. The train-mode full pass of
every method computes it (``agm_jax.subsets``) and its gradient joins the method's in the same
backward pass, unmodulated (the released code adds it to the loss outside the modulation
hooks).

Masked subsets zero an input (the released ``pad_audio``/``pad_visual``). The modalities mix
from step 2 on, so there is no per-modality encoder: ``separable = False`` (generic path).

Parameters as the released model less its unused layers (``linear_v``, ``v_classify``,
``a_classify``, ``L3``, ``L4``, never called in ``forward``). Initialisation: Xavier-uniform
kernels where the released code re-initialises them (AVGA, PSP, the classifier), Flax defaults
elsewhere; the LSTMs use Flax's ``OptimizedLSTMCell`` (one bias per gate where PyTorch has
two: 4·128 fewer parameters per direction, the same function class).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

AVPS_KEY = "avps_target"
_xavier = nn.initializers.xavier_uniform()


def positive_samples(beta: jnp.ndarray, threshold: float) -> jnp.ndarray:
  """PSP's selection: rows of ``beta`` (``(..., T, T)``, non-negative) normalised to sum 1,
  entries ``<= threshold`` dropped, the rest renormalised (both sums ``+1e-8``)."""
  beta = beta / (beta.sum(-1, keepdims=True) + 1e-8)
  gamma = jnp.where(beta > threshold, beta, 0.0)
  return gamma / (gamma.sum(-1, keepdims=True) + 1e-8)


def avps_loss(similarity: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """PSP's audio-visual pair similarity loss: ``s = relu(similarity)`` ``(B, T)`` normalised
  over the segments (``+1e-8``), mean squared error to ``target`` (released ``AVPSLoss``)."""
  s = jax.nn.relu(similarity)
  s = s / (s.sum(-1, keepdims=True) + 1e-8)
  return jnp.mean((s - target) ** 2)


def cosine(a: jnp.ndarray, b: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """Cosine similarity over the last axis (``F.normalize``'s eps on each norm). The norm is
  ``sqrt(max(|x|², eps²))``: the same value, and a zero gradient (not NaN) for a zero vector,
  e.g. a zero-padded modality's features after PSP's LayerNorm at initialisation."""
  na = jnp.sqrt(jnp.maximum((a * a).sum(-1), eps * eps))
  nb = jnp.sqrt(jnp.maximum((b * b).sum(-1), eps * eps))
  return (a * b).sum(-1) / (na * nb)


class AudioGuidedAttention(nn.Module):
  """AVGA: ``(B,T,128)`` audio, ``(B,T,R,512)`` visual regions -> ``(B,T,512)`` (``R`` = 49
  for the 7x7 map)."""
  hidden: int = 512

  @nn.compact
  def __call__(self, audio, visual):
    regions = visual.shape[-2]
    v = jax.nn.relu(nn.Dense(self.hidden, kernel_init=_xavier, name="affine_video")(visual))
    a = jax.nn.relu(nn.Dense(self.hidden, kernel_init=_xavier, name="affine_audio")(audio))
    content = (nn.Dense(regions, use_bias=False, kernel_init=_xavier, name="affine_v")(v)
               + nn.Dense(regions, use_bias=False, kernel_init=_xavier,
                          name="affine_g")(a)[..., :, None])
    scores = nn.Dense(1, use_bias=False, kernel_init=_xavier, name="affine_h")(
        jnp.tanh(content))[..., 0]                                   # (B, T, R)
    alpha = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("btr,btrd->btd", alpha, visual)


class BiLSTM(nn.Module):
  """Bidirectional LSTM over the segments: ``(B,T,F) -> (B,T,2·hidden)`` [forward, backward]."""
  hidden: int

  @nn.compact
  def __call__(self, x):
    return nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(self.hidden), name="forward"),
                            nn.RNN(nn.OptimizedLSTMCell(self.hidden), name="backward"))(x)


class PositiveSamplePropagation(nn.Module):
  """The PSP module (released ``PSP``): ``(a, v) (B,T,D)`` -> ``(fused, v', a')``."""
  width: int = 256
  threshold: float = 0.099
  dropout: float = 0.1

  @nn.compact
  def __call__(self, a, v, train: bool):
    drop = nn.Dropout(self.dropout, deterministic=not train)

    def branch(name, x):
      return drop(jax.nn.relu(nn.Dense(self.width, use_bias=False, kernel_init=_xavier,
                                       name=name)(x)))

    v1, v2 = branch("v_L1", v), branch("v_L2", v)
    a1, a2 = branch("a_L1", a), branch("a_L2", a)
    beta_va = jax.nn.relu(jnp.einsum("bsd,btd->bst", v2, a1) / jnp.sqrt(float(self.width)))
    gamma_va = positive_samples(beta_va, self.threshold)
    gamma_av = positive_samples(jnp.swapaxes(beta_va, -1, -2), self.threshold)
    v_psp = v + jnp.einsum("bst,btd->bsd", gamma_va, a2)
    a_psp = a + jnp.einsum("bst,btd->bsd", gamma_av, v1)
    norm = nn.LayerNorm(epsilon=1e-6, name="layer_norm")
    v_psp = norm(drop(jax.nn.relu(nn.Dense(self.width, use_bias=False, kernel_init=_xavier,
                                           name="v_fc")(v_psp))))
    a_psp = norm(drop(jax.nn.relu(nn.Dense(self.width, use_bias=False, kernel_init=_xavier,
                                           name="a_fc")(a_psp))))
    return (v_psp + a_psp) * 0.5, v_psp, a_psp


class PSP(nn.Module):
  """PSP for AVE (see the module docstring); ``(logits (B·T, K), z (B·T, 64))``."""
  modalities: tuple[str, ...]
  num_classes: int = 29
  hidden: int = 128
  threshold: float = 0.099
  dropout: float = 0.1
  avps_weight: float = 100.0
  attention_hidden: int = 512
  dtype: Any = jnp.float32

  separable = False

  def setup(self):
    if len(self.modalities) != 2:
      raise ValueError(f"PSP takes (audio, visual); got modalities {self.modalities}")
    self.fa = [nn.Dense(256, use_bias=False, name="fa_0"),
               nn.Dense(self.hidden, use_bias=False, name="fa_1")]
    self.attention = AudioGuidedAttention(self.attention_hidden, name="attention")
    self.fv = [nn.Dense(256, use_bias=False, name="fv_0"),
               nn.Dense(self.hidden, use_bias=False, name="fv_1")]
    self.lstm_audio = BiLSTM(self.hidden, name="lstm_audio")
    self.lstm_video = BiLSTM(self.hidden, name="lstm_video")
    self.psp = PositiveSamplePropagation(2 * self.hidden, self.threshold, self.dropout,
                                         name="psp")
    self.head = nn.Dense(64, use_bias=False, kernel_init=_xavier, name="head")
    self.classifier = nn.Dense(self.num_classes, use_bias=False, kernel_init=_xavier,
                               name="classifier")

  def _forward(self, inputs: Mapping[str, Any], train: bool):
    audio_key, visual_key = self.modalities
    audio = jnp.asarray(inputs[audio_key], self.dtype)
    visual = jnp.asarray(inputs[visual_key], self.dtype)
    if audio.ndim != 3 or visual.ndim != 5:
      raise ValueError(f"PSP takes audio (B,T,F) and visual (B,T,H,W,C); got {audio.shape} "
                       f"and {visual.shape}")
    b, t = audio.shape[:2]
    fa = self.fa[1](self.fa[0](audio))
    regions = visual.reshape(b, t, -1, visual.shape[-1])
    video = self.attention(fa, regions)
    video = self.fv[1](self.fv[0](video))
    fused, v_psp, a_psp = self.psp(self.lstm_audio(fa), self.lstm_video(video), train)
    z = jax.nn.relu(self.head(fused)).astype(jnp.float32)
    logits = self.classifier(z).astype(jnp.float32)
    return logits.reshape(b * t, -1), z.reshape(b * t, -1), cosine(v_psp, a_psp)

  def __call__(self, inputs: Mapping[str, Any], train: bool):
    logits, z, _ = self._forward(inputs, train)
    return logits, z

  def with_auxiliary_loss(self, inputs: Mapping[str, Any], train: bool):
    """``((logits, z), avps_weight · AVPS)`` from ONE pass (``inputs[AVPS_KEY]``: the target):
    what the train-mode full pass of every method runs (``agm_jax.subsets``)."""
    if AVPS_KEY not in inputs:
      raise ValueError(f"PSP's AVPS loss needs the batch key {AVPS_KEY!r} (AVE with "
                       "data.task='segment'); set model.psp.avps_weight=0 to train without it")
    logits, z, similarity = self._forward(inputs, train)
    loss = self.avps_weight * avps_loss(similarity, jnp.asarray(inputs[AVPS_KEY]))
    return (logits, z), loss

  def auxiliary_loss(self, inputs: Mapping[str, Any], train: bool):
    """``(avps_weight · AVPS, logits)``; the logits equal ``__call__``'s under the same
    dropout key."""
    (logits, _), loss = self.with_auxiliary_loss(inputs, train)
    return loss, logits

  @property
  def has_auxiliary_loss(self) -> bool:
    return self.avps_weight > 0
