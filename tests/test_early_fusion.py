"""The AGM paper's early-fusion head (``MaxOutFusion`` with BatchNorm and dropout, the released
code's ``AV_Early_Classifier`` at tiny sizes) and the dropout keys of the masked passes
(``agm_jax.subsets``: the full input one key, each masked subset its own under
``subset_bn="batch"``, none under ``subset_bn="eval"``)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from agm_jax import methods, subsets
from agm_jax.models import fusion as fus
from agm_jax.models.classifier import build_model
from configs import default as default_config

B, K = 4, 3
MODS = ("audio", "visual")
DIMS = {"audio": 5, "visual": 6}
# The released head's options at tiny widths (the paper: hidden (2048, 1024)).
RELEASED = dict(maxout_hidden=(8, 4), maxout_pieces=2, maxout_input_bn=True, maxout_bn=True,
                maxout_dropout=0.3)


def _features(seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(B, 4)), jnp.float32),
          jnp.asarray(rng.normal(size=(B, 4)), jnp.float32))


def _dense(p, h):
  return np.asarray(h, np.float64) @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"])


def _maxout(p, h, width, pieces):
  return _dense(p, h).reshape(len(h), width, pieces).max(-1)


def _bn_eval(p, s, h, eps):
  return (h - np.asarray(s["mean"])) / np.sqrt(np.asarray(s["var"]) + eps) \
      * np.asarray(p["scale"]) + np.asarray(p["bias"])


def test_default_head_is_the_plain_maxout():
  """Default options: the parameters and logits of the MaxOut MLP without BatchNorm and
  dropout (no batch statistics, no RNG needed in train mode), whatever ``train``."""
  opts = default_config.get_config().model.fusion_options
  assert (opts.maxout_input_bn, opts.maxout_bn, opts.maxout_dropout) == (False, False, 0.0)
  head = fus.MaxOutFusion(K, hidden=6, pieces=3)
  feats = _features()
  variables = head.init(jax.random.PRNGKey(0), feats, False)
  assert set(variables) == {"params"}
  assert set(variables["params"]) == {"maxout_0", "maxout_1", "classifier"}
  p = variables["params"]
  h = np.concatenate([np.asarray(f) for f in feats], -1)
  for i in range(2):
    h = _maxout(p[f"maxout_{i}"], h, 6, 3)
  for train in (False, True):
    logits, z = head.apply(variables, feats, train)
    np.testing.assert_allclose(z, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, _dense(p["classifier"], h), rtol=1e-5, atol=1e-6)
  # The same jnp operations as the head without the new options: bitwise equal.
  hj = jnp.concatenate(feats, -1)
  for i in range(2):
    hj = (hj @ p[f"maxout_{i}"]["kernel"] + p[f"maxout_{i}"]["bias"]).reshape(B, 6, 3).max(-1)
  logits, z = head.apply(variables, feats, False)
  np.testing.assert_array_equal(z, hj)
  np.testing.assert_array_equal(
      logits, hj @ p["classifier"]["kernel"] + p["classifier"]["bias"])


def test_released_head_layers_and_dropout():
  """hidden (8, 4), pieces 2, BatchNorm (eps 1e-4 on the input, 1e-5 after each maxout,
  momentum 0.1 as PyTorch's), dropout 0.3 after each block; z is the last block's output."""
  head = fus.MaxOutFusion(K, hidden=(8, 4), pieces=2, input_bn=True, bn=True, dropout=0.3)
  assert head.widths == (8, 4)
  feats = _features()
  variables = head.init(jax.random.PRNGKey(0), feats, False)
  shapes = jax.tree.map(jnp.shape, variables)
  assert shapes["params"] == {
      "input_bn": {"scale": (8,), "bias": (8,)},
      "maxout_0": {"kernel": (8, 16), "bias": (16,)}, "bn_0": {"scale": (8,), "bias": (8,)},
      "maxout_1": {"kernel": (8, 8), "bias": (8,)}, "bn_1": {"scale": (4,), "bias": (4,)},
      "classifier": {"kernel": (4, K), "bias": (K,)}}
  assert shapes["batch_stats"] == {"input_bn": {"mean": (8,), "var": (8,)},
                                   "bn_0": {"mean": (8,), "var": (8,)},
                                   "bn_1": {"mean": (4,), "var": (4,)}}
  # Eval mode with non-trivial running statistics and BN parameters, by hand.
  rng = np.random.default_rng(1)
  p = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32),
                   variables["params"])
  s = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.1, 2.0, a.shape), jnp.float32),
                   variables["batch_stats"])
  h = np.concatenate([np.asarray(f) for f in feats], -1)
  h = _bn_eval(p["input_bn"], s["input_bn"], h, 1e-4)
  for i, width in enumerate((8, 4)):
    h = _bn_eval(p[f"bn_{i}"], s[f"bn_{i}"], _maxout(p[f"maxout_{i}"], h, width, 2), 1e-5)
  logits, z = head.apply({"params": p, "batch_stats": s}, feats, False)
  assert z.shape == (B, 4)
  np.testing.assert_allclose(z, h, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits, _dense(p["classifier"], h), rtol=1e-5, atol=1e-5)
  # Train mode: the input BN's running mean moves by 0.1 of the batch mean; the last dropout
  # keeps each unit of bn_1's output scaled by 1/0.7 or zeroes it; its key decides which.
  def train(key):
    return head.apply({"params": p, "batch_stats": s}, feats, True, rngs={"dropout": key},
                      mutable=["batch_stats", "intermediates"], capture_intermediates=True)
  (logits, z), new = train(jax.random.PRNGKey(2))
  x = np.concatenate([np.asarray(f) for f in feats], -1)
  np.testing.assert_allclose(new["batch_stats"]["input_bn"]["mean"],
                             0.9 * np.asarray(s["input_bn"]["mean"]) + 0.1 * x.mean(0),
                             rtol=1e-5, atol=1e-6)
  inter = new["intermediates"]
  before = np.asarray(inter["bn_1"]["__call__"][0])
  kept = np.asarray(z) != 0
  assert 0 < kept.sum() < kept.size
  np.testing.assert_allclose(z, np.where(kept, before / 0.7, 0.0), rtol=1e-5, atol=1e-6)
  (_, z_same), _ = train(jax.random.PRNGKey(2))
  (_, z_other), _ = train(jax.random.PRNGKey(3))
  np.testing.assert_array_equal(z_same, z)
  assert not np.array_equal(z_other, z)
  with pytest.raises(Exception, match="dropout"):
    head.apply({"params": p, "batch_stats": s}, feats, True, mutable=["batch_stats"])


def _model(**opts):
  cfg = ml_collections.ConfigDict(dict(
      fusion="maxout", encoders={}, dtype="float32",
      encoder_default=dict(type="mlp", hidden=(8,), features=4),
      fusion_options=dict(film_condition="", **opts)))
  return build_model(cfg, MODS, K, {m: ((d,), np.float32) for m, d in DIMS.items()})


@pytest.fixture(scope="module")
def released():
  """A tiny MultimodalClassifier with the released head, its variables and a batch."""
  model = _model(**RELEASED)
  rng = np.random.default_rng(0)
  x = {m: jnp.asarray(rng.normal(size=(B, d)), jnp.float32) for m, d in DIMS.items()}
  variables = jax.jit(lambda key: model.init(key, x, False))(jax.random.PRNGKey(0))
  return model, variables["params"], variables["batch_stats"], x


def _zero_padded(x, s):
  return {m: x[m] if s >> i & 1 else jnp.zeros_like(x[m]) for i, m in enumerate(MODS)}


def test_config_keys_build_the_released_head(released):
  model = released[0]
  head = model.fusion
  assert (head.hidden, head.pieces, head.input_bn, head.bn, head.dropout) == \
      ((8, 4), 2, True, True, 0.3)
  assert model.stochastic and not _model(maxout_hidden=6, maxout_pieces=3).stochastic
  assert _model(maxout_hidden=6, maxout_pieces=3).fusion.widths == (6, 6)
  assert _model(**RELEASED).fusion.bn_axis_name is None
  with pytest.raises(ValueError, match="maxout_dropout"):
    _model(**{**RELEASED, "maxout_dropout": 1.0})


def test_masked_passes_eval_mode(released, fast=True):
  """``subset_bn="eval"``: the full input in train mode with its own dropout key; every masked
  subset in eval mode with the running statistics the full pass left, without dropout."""
  model, params, stats, x = released
  key = jax.random.PRNGKey(7)
  full_key = subsets.pass_key(subsets.dropout_stream(key), 3)
  (full, _), new_stats = subsets.apply(model, params, stats, x, train=True, update=True,
                                       dropout_key=full_key)
  v, fwd = subsets.subset_forward(model, params, stats, x, MODS, subset_bn="eval", key=key,
                                  fast=fast)
  np.testing.assert_allclose(v[3], full, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               fwd.batch_stats, new_stats)
  for s in range(3):
    (want, _), _ = subsets.apply(model, params, new_stats, _zero_padded(x, s), train=False)
    np.testing.assert_allclose(v[s], want, rtol=1e-5, atol=1e-5)
  # The masked rows draw no dropout: any dropout key gives the same rows.
  feats = subsets.encode_each(model, params, new_stats, x, MODS, train=True)
  rows = [subsets.masked_logits(model, params, new_stats, x, feats, MODS, train=True,
                                masked_train=False, pad="zeros", key=None,
                                dropout_key=jax.random.PRNGKey(seed)) for seed in (1, 2)]
  np.testing.assert_array_equal(rows[0], rows[1])
  np.testing.assert_allclose(rows[0], v[:3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fast", (True, False))
def test_masked_passes_batch_mode(released, fast):
  """``subset_bn="batch"``: row s is a train-mode pass on subset s with its own batch
  statistics and its own dropout key ``fold_in(dropout_stream(key), s)``; the full pass's
  statistics are the only ones kept; the same step key gives the same rows."""
  model, params, stats, x = released
  key = jax.random.PRNGKey(7)
  dk = subsets.dropout_stream(key)
  v, fwd = subsets.subset_forward(model, params, stats, x, MODS, subset_bn="batch", key=key,
                                  fast=fast)
  (full, _), new_stats = subsets.apply(model, params, stats, x, train=True, update=True,
                                       dropout_key=subsets.pass_key(dk, 3))
  np.testing.assert_allclose(v[3], full, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               fwd.batch_stats, new_stats)

  def row(s, r):   # subset s through the whole model in train mode, with row r's key
    return subsets.apply(model, params, stats, _zero_padded(x, s), train=True,
                         dropout_key=subsets.pass_key(dk, r))[0][0]

  for s in (1, 2):
    np.testing.assert_allclose(v[s], row(s, s), rtol=1e-5, atol=1e-5)
    assert not np.allclose(v[s], row(s, 3 - s), atol=1e-3)   # another row's mask differs
  # Subset 0 (both modalities zero): identical rows, so every BN outputs its bias.
  np.testing.assert_allclose(v[0], row(0, 0), rtol=1e-5, atol=1e-5)
  again, _ = subsets.subset_forward(model, params, stats, x, MODS, subset_bn="batch",
                                    key=key, fast=fast)
  np.testing.assert_array_equal(again, v)
  other, _ = subsets.subset_forward(model, params, stats, x, MODS, subset_bn="batch",
                                    key=jax.random.PRNGKey(8), fast=fast)
  assert not np.allclose(other[1:], v[1:], atol=1e-3)


def test_dropout_stream_leaves_the_noise_pads(released):
  """The dropout stream is a fold_in of the step key, so the noise pads drawn from that key
  are unchanged: a dropout-free model's V under ``pad="normal"`` is ``shapley.subset_logits``
  with the same key (the pads as drawn before dropout keys existed)."""
  model = _model(maxout_hidden=6, maxout_pieces=3)
  x = released[3]
  variables = model.init(jax.random.PRNGKey(0), x, False)
  key = jax.random.PRNGKey(3)
  want = subsets.shapley.subset_logits(lambda xs: model.apply(variables, xs, False)[0], x,
                                       MODS, pad="normal", key=key)
  for fast in (True, False):
    v, _ = subsets.subset_forward(model, variables["params"], {}, x, MODS, pad="normal",
                                  key=key, fast=fast)
    np.testing.assert_allclose(v, want, rtol=1e-5, atol=1e-6)
  assert not np.array_equal(subsets.dropout_stream(key), key)
  assert subsets.dropout_stream(None) is None
  # Without BatchNorm statistics only a model with dropout runs eval-mode masked passes.
  assert not subsets.stochastic(model) and subsets.stochastic(released[0])
  with pytest.raises(ValueError, match="dropout"):
    subsets.subset_forward(released[0], {}, {}, x, MODS, key=None)


def test_eval_mode_without_batchnorm_draws_no_masked_dropout(released):
  """A head with dropout and no BatchNorm anywhere: under ``subset_bn="eval"`` the masked
  passes still run in eval mode (no dropout), the full pass in train mode (dropout)."""
  model = _model(maxout_hidden=(8, 4), maxout_pieces=2, maxout_dropout=0.3)
  x = released[3]
  params = model.init(jax.random.PRNGKey(0), x, False)["params"]
  rows = [subsets.subset_forward(model, params, {}, x, MODS, subset_bn="eval",
                                 key=jax.random.PRNGKey(seed))[0] for seed in (1, 2)]
  for s in range(3):
    want = model.apply({"params": params}, _zero_padded(x, s), False)[0]
    np.testing.assert_allclose(rows[0][s], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(rows[0][:3], rows[1][:3])
  assert not np.allclose(rows[0][3], rows[1][3], atol=1e-3)


@pytest.mark.parametrize(("name", "bn"), (("agm", "batch"), ("joint", "eval")))
def test_training_step_with_dropout(released, name, bn):
  """One step of agm and joint on the released head: finite loss and update, the head's
  running statistics updated, reproducible from the step key."""
  model, params, stats, x = released
  config = default_config.get_config()
  method = methods.get(name)
  ctx = methods.Context(model=model, modalities=MODS, hp=methods.hparams(method, config),
                        subsets=subsets.Settings(bn=bn))
  tx = methods.make_tx(method, ctx, optax.sgd(0.1), config)
  batch = {**x, "label": jnp.asarray([0, 1, 2, 0])}

  @jax.jit
  def step(key):
    out = method.gradients(ctx, params, stats, batch, key, jnp.bool_(True), tx.init(params))
    updates, _ = tx.update(out.updates, tx.init(params), params, **out.tx_kwargs)
    return out.metrics["loss"], updates, out.batch_stats

  loss, updates, new_stats = step(jax.random.PRNGKey(0))
  assert np.isfinite(loss)
  assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))
  assert not np.allclose(new_stats["fusion"]["bn_1"]["mean"], stats["fusion"]["bn_1"]["mean"])
  loss_again, updates_again, _ = step(jax.random.PRNGKey(0))
  assert loss_again == loss
  jax.tree.map(np.testing.assert_array_equal, updates_again, updates)
