"""The 2**k masked passes of a multimodal classifier, as one function of the parameters (core).

The model is an argument: any Flax module called as ``model.apply(variables, inputs, train)``
that returns ``(logits, z)``; one with per-modality encoders (``model.separable``) also has
``encode(inputs, train) -> features`` and ``fuse(features, train) -> (logits, z)`` methods and
gets the fast path. Nothing here knows about training methods or the trainer.

``subset_forward`` returns ``V`` (``(2**k, B, K)``, the logits of every zero- or noise-padded
modality subset, the full input last), the full input's feature ``z`` and the updated
BatchNorm statistics. Only the full-input pass updates running statistics.

BatchNorm in the masked passes (``Settings.bn``; docs/ARCHITECTURE.md):

* ``subset_bn="eval"`` (reference semantics): the full input runs in train mode, every
  masked subset in eval mode with the running statistics (as updated by the full pass, like
  the in-place update of the released PyTorch code).
* ``subset_bn="batch"``: every subset runs in train mode with its own batch statistics.

Dropout (a model with ``stochastic`` True, e.g. the paper's maxout head) draws from the
``"dropout"`` RNG stream: :func:`dropout_stream` derives it from the step's key (``fold_in`` of a
constant, so the key's own use, the noise pads, is unchanged), and the pass of row ``s`` of
``V`` gets ``fold_in(dropout_key, s)`` (:func:`pass_key`): the full input one key, each masked
subset under ``subset_bn="batch"`` its own; under ``subset_bn="eval"`` the masked passes run
in eval mode, without dropout.

Two ways to compute the masked passes, equal to float tolerance:

* fast path (models with per-modality encoders, ``model.separable``; ``Settings.path``
  "auto" or "fast"): each encoder runs once
  on the real inputs (once more in eval mode under ``subset_bn="eval"``) and once on a single
  zero example (or the noise batch), and only the fusion head is vmapped over the subsets.
  Where both run in eval mode (the eval-mode pass of ``subset_bn="eval"``, evaluation), the
  zero example is appended to the real batch: one pass of B + 1 examples, the same numbers
  with one set of kernels;
* generic path (``input_early`` fusion, or ``path="generic"``): the whole model is vmapped over
  the masked inputs (``shapley.subset_logits``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from agm_jax import shapley

SUBSET_BN = ("eval", "batch")
PATHS = ("auto", "fast", "generic")
# fold_in constant of the dropout stream ("drop"), apart from every other use of a step's key.
DROPOUT_STREAM = 0x64726F70


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the masked passes run (the config's ``subsets`` section), for every method.

  ``bn``: "eval" (masked passes with the running statistics, the released code) or "batch";
  ``pad``: what replaces an absent modality ("zeros", or "normal": N(0, 1) noise);
  ``path``: "auto" (fast when the model has per-modality encoders), "fast" or "generic".
  """
  bn: str = "eval"
  pad: str = "zeros"
  path: str = "auto"

  def __post_init__(self):
    for name, value, valid in (("bn", self.bn, SUBSET_BN), ("pad", self.pad, shapley.PADS),
                               ("path", self.path, PATHS)):
      if value not in valid:
        raise ValueError(f"{name} {value!r} is unknown; valid: {', '.join(valid)}")

  @property
  def fast(self) -> bool | None:
    """``subset_forward``'s ``fast`` argument (None: decided by the model)."""
    return None if self.path == "auto" else self.path == "fast"


class Forward(NamedTuple):
  z: jax.Array            # (B, D) feature before the last classifier layer, full input
  batch_stats: Any        # running statistics after the full-input pass
  aux_loss: Any = None    # the model's own auxiliary loss on the train-mode full pass, if any


def has_auxiliary_loss(model) -> bool:
  """Whether ``model`` has its own auxiliary objective (``with_auxiliary_loss(inputs, train)
  -> ((logits, z), loss)``, e.g. PSP's AVPS loss), computed on the train-mode full pass."""
  return bool(getattr(model, "has_auxiliary_loss", False))


def _variables(params, batch_stats):
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def stochastic(model) -> bool:
  """Whether ``model``'s train-mode passes draw dropout masks: its ``stochastic`` flag, or
  else a positive ``dropout`` rate of its own (a whole architecture such as PSP or TBJE)."""
  flag = getattr(model, "stochastic", None)
  return bool(getattr(model, "dropout", 0)) if flag is None else bool(flag)


def device_key(key: jax.Array, axis_name: str | None = None) -> jax.Array:
  """``key`` with the device index folded in under ``pmap`` (``axis_name``), unchanged
  otherwise (one device, ``sharding``). For per-example draws: every device holds the same
  replicated step key, and without the fold example i of every device would draw the same;
  a per-batch decision that all devices must share is drawn from the unfolded key."""
  if axis_name is None:
    return key
  return jax.random.fold_in(key, jax.lax.axis_index(axis_name))


def dropout_stream(key: jax.Array | None, axis_name: str | None = None) -> jax.Array | None:
  """A step's dropout key from its key ``key`` (None for None): ``fold_in`` of
  ``DROPOUT_STREAM``, and under ``pmap`` (``axis_name``) of the device index
  (:func:`device_key`), so devices that hold the same replicated key draw different masks."""
  if key is None:
    return None
  return device_key(jax.random.fold_in(key, DROPOUT_STREAM), axis_name)


def pass_key(key: jax.Array | None, row) -> jax.Array | None:
  """The dropout key of the pass that computes row ``row`` of ``V`` (``2**k - 1``: the full
  input; ``2**k``: the fast path's encoders on the pads)."""
  return None if key is None else jax.random.fold_in(key, row)


def apply(model, params, batch_stats, *args, train: bool, method=None,
          update: bool = False, dropout_key: jax.Array | None = None):
  """``model.apply``; returns ``(out, new_batch_stats)`` (unchanged unless ``update``).
  ``dropout_key`` is the ``"dropout"`` RNG of a train-mode pass (unused in eval mode).

  The updated statistics carry no gradient: PyTorch updates its BatchNorm buffers outside
  autograd, so a later eval-mode pass that reads them (the masked passes of
  ``subset_bn="eval"``) depends on the parameters only through its own layers. Without the
  ``stop_gradient`` the gradient would also flow into the full pass's batch means and
  variances through the running averages."""
  variables = _variables(params, batch_stats)
  rngs = {"dropout": dropout_key} if train and dropout_key is not None else None
  if train and batch_stats:
    out, mutated = model.apply(variables, *args, train, method=method, mutable=["batch_stats"],
                               rngs=rngs)
    return out, (jax.lax.stop_gradient(mutated["batch_stats"]) if update else batch_stats)
  return model.apply(variables, *args, train, method=method, rngs=rngs), batch_stats


def _masked(masks):
  """Every subset but the full one (rows 0 … 2**k - 2)."""
  return jnp.asarray(masks[:-1])


def subset_forward(model, params, batch_stats, inputs: Mapping[str, Any],
                   modalities: Sequence[str], *, subset_bn: str = "eval", pad: str = "zeros",
                   key: jax.Array | None = None, grad_masked: bool = True,
                   fast: bool | None = None, train: bool = True,
                   dropout_key: jax.Array | None = None):
  """``(V, Forward)`` for ``jax.vjp(..., has_aux=True)``; see the module docstring.

  ``train=False`` runs every pass in eval mode (evaluation). ``grad_masked=False`` stops the
  gradient through the masked passes (they then only feed metrics, e.g. joint training's
  mono-modal accuracy). ``key`` draws the noise pads; ``dropout_key`` is the step's dropout
  key (default ``dropout_stream(key)``), split per pass with :func:`pass_key`.
  """
  if subset_bn not in SUBSET_BN:
    raise ValueError(f"subset_bn {subset_bn!r} is unknown; valid: {list(SUBSET_BN)}")
  shapley.check_inputs(inputs, modalities)
  separable = getattr(model, "separable", False)
  if fast is None:
    fast = separable
  if fast and not separable:
    raise ValueError("the fast subset path needs per-modality encoders; this model has none")
  masks = shapley.subset_masks(len(modalities))
  run = _fast if fast else _generic
  masked_train = masked_train_mode(train, subset_bn, batch_stats or stochastic(model))
  if dropout_key is None:
    dropout_key = dropout_stream(key)
  if train and stochastic(model) and dropout_key is None:
    raise ValueError("this model has dropout: a train-mode subset_forward needs key= or "
                     "dropout_key=")
  if fast and has_auxiliary_loss(model):
    raise ValueError("a model with its own auxiliary loss runs on the generic subset path")
  v_full, v_masked, z, stats, aux = run(model, params, batch_stats, inputs, modalities, masks,
                                   train=train, masked_train=masked_train, pad=pad, key=key,
                                   dropout_key=dropout_key)
  if not grad_masked:
    v_masked = jax.lax.stop_gradient(v_masked)
  v = jnp.concatenate([v_masked, v_full[None]], 0)
  return v, Forward(z, stats, aux)


def _masked_keys(dropout_key, n: int, masked_train: bool):
  """``(n - 1,)`` keys, one per masked pass (rows ``0 … n - 2``), or None (no dropout)."""
  if dropout_key is None or not masked_train:
    return None
  return jax.vmap(lambda row: pass_key(dropout_key, row))(jnp.arange(n - 1))


def _vmap_masked(one, masks, keys):
  """``one(mask, key)`` vmapped over the masked subsets (``key`` None without dropout)."""
  if keys is None:
    return jax.vmap(lambda mask: one(mask, None))(_masked(masks))
  return jax.vmap(one)(_masked(masks), keys)


def _generic(model, params, batch_stats, inputs, modalities, masks, *, train, masked_train,
             pad, key, dropout_key=None):
  n = len(masks)
  aux = None
  if train and has_auxiliary_loss(model):   # the same pass gives the model's own loss
    ((v_full, z), aux), stats = apply(model, params, batch_stats, dict(inputs), train=True,
                                      method="with_auxiliary_loss", update=True,
                                      dropout_key=pass_key(dropout_key, n - 1))
  else:
    (v_full, z), stats = apply(model, params, batch_stats, dict(inputs), train=train,
                               update=True, dropout_key=pass_key(dropout_key, n - 1))
  pads = shapley.pads_for(inputs, modalities, pad, key)

  def one(mask, row_key):
    x = dict(inputs)
    for i, m in enumerate(modalities):
      x[m] = jnp.where(mask[i], inputs[m], pads[m])
    (logits, _), _ = apply(model, params, stats, x, train=masked_train, dropout_key=row_key)
    return logits

  v_masked = _vmap_masked(one, masks, _masked_keys(dropout_key, n, masked_train))
  return v_full, v_masked, z, stats, aux


def encode_each(model, params, stats, inputs, modalities, *, train, dropout_key=None):
  """Every encoder on its own modality (no statistics update)."""
  feats, _ = apply(model, params, stats, dict(inputs), train=train, method="encode",
                   dropout_key=dropout_key)
  return tuple(feats)


def pad_features(model, params, stats, inputs, modalities, *, train, pad, key,
                 dropout_key=None):
  """Each encoder on its pad: one zero example (broadcast later), or the noise batch."""
  if pad == "zeros":
    one = {m: jnp.zeros_like(inputs[m][:1]) for m in modalities}
    extra = {k: v[:1] for k, v in inputs.items() if k not in modalities}
    return encode_each(model, params, stats, {**one, **extra}, modalities, train=train,
                       dropout_key=dropout_key)
  noise = shapley.pads_for(inputs, modalities, pad, key)
  return encode_each(model, params, stats, {**inputs, **noise}, modalities, train=train,
                     dropout_key=dropout_key)


def with_zero_example(inputs, modalities):
  """``inputs`` with one more example: zeros for every modality (its other fields, e.g.
  ``<m>_lengths``, copied from the first example, as :func:`pad_features` does)."""
  return {k: jnp.concatenate([v, jnp.zeros_like(v[:1]) if k in modalities else v[:1]], 0)
          for k, v in inputs.items()}


def split_zero_example(feats):
  """``(features of the B real examples, features of the appended zero example)``."""
  return tuple(f[:-1] for f in feats), tuple(f[-1:] for f in feats)


def masked_train_mode(train: bool, bn: str, batch_stats) -> bool:
  """Whether the masked passes run in train mode. Without BatchNorm statistics the two ``bn``
  modes compute the same thing, so the eval passes are skipped; for a model with dropout the
  callers pass ``batch_stats or stochastic(model)`` (its eval passes differ: no dropout)."""
  return train and (bn == "batch" or not batch_stats)


def masked_logits(model, params, stats, inputs, feats, modalities, *, train: bool,
                  masked_train: bool, pad: str, key, dropout_key=None,
                  absent=None, head=None) -> jax.Array:
  """``V[:-1]`` ``(2**k - 1, B, K)`` of a separable model from the full input's features
  ``feats``: the fusion head vmapped over the masked subsets, each absent modality replaced
  by its encoder's output on the pad. Under ``masked_train != train`` the present modalities'
  features are recomputed in eval mode (running statistics ``stats``). ``dropout_key``: the
  step's dropout key; in train mode the head on subset ``s`` draws with ``pass_key(
  dropout_key, s)`` and the encoders on the pads with ``pass_key(dropout_key, 2**k)`` (the
  present modalities keep the full pass's features, so its encoders' dropout masks).
  ``absent``: the encoders' outputs on the pads when the caller already has them. ``head``:
  ``features -> logits`` in place of the model's fusion head (a method's own head on the
  encoders' features, e.g. MMCosine's cosine logits)."""
  masks = shapley.subset_masks(len(modalities))
  n = len(masks)
  if absent is not None:
    present = feats
  elif masked_train != train and pad == "zeros":
    # Both eval-mode encoder passes (the present modalities' features with the running
    # statistics, and each encoder on the zero pad) as one pass over B + 1 examples: eval mode
    # treats examples independently, so the numbers are the same with one set of kernels.
    both = encode_each(model, params, stats, with_zero_example(inputs, modalities), modalities,
                       train=False)
    present, absent = split_zero_example(both)
  else:
    present = feats if masked_train == train else encode_each(model, params, stats, inputs,
                                                             modalities, train=False)
    absent = pad_features(model, params, stats, inputs, modalities, train=masked_train,
                          pad=pad, key=key, dropout_key=pass_key(dropout_key, n))

  def one(mask, row_key):
    f = tuple(jnp.where(mask[i], present[i], absent[i]) for i in range(len(modalities)))
    if head is not None:
      return head(f)
    (logits, _), _ = apply(model, params, stats, f, train=masked_train, method="fuse",
                           dropout_key=row_key)
    return logits

  return _vmap_masked(one, masks, _masked_keys(dropout_key, n, masked_train))


def _fast(model, params, batch_stats, inputs, modalities, masks, *, train, masked_train, pad,
          key, dropout_key=None):
  full_key = pass_key(dropout_key, len(masks) - 1)
  absent = None
  if not train and pad == "zeros":   # evaluation: the zero pads ride in the full pass
    feats, stats = apply(model, params, batch_stats, with_zero_example(inputs, modalities),
                         train=False, method="encode")
    feats, absent = split_zero_example(tuple(feats))
  else:
    feats, stats = apply(model, params, batch_stats, dict(inputs), train=train,
                         method="encode", update=True, dropout_key=full_key)
    feats = tuple(feats)
  (v_full, z), stats = apply(model, params, stats, feats, train=train, method="fuse",
                             update=True, dropout_key=full_key)
  v_masked = masked_logits(model, params, stats, inputs, feats, modalities, train=train,
                           masked_train=masked_train, pad=pad, key=key,
                           dropout_key=dropout_key, absent=absent)
  return v_full, v_masked, z, stats, None
