"""The AGM paper's Table 4 models (PSP on AVE, TBJE on CMU-MOSEI) at toy sizes: shapes, the
positive-sample selection and AVPS loss by hand, masks with padded text, masked passes equal to
zeroing an input by hand, the auxiliary loss in the train step, per-position labels."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from agm_jax import shapley, subsets
from agm_jax.methods import base as method_base
from agm_jax.models import build_model, psp, tbje
from agm_jax.train import loop, steps
from agm_jax.train import state as state_lib
from data_pipelines.sources.base import ArrayDataset
from tests.conftest import read_lines, tiny_config

B, T = 2, 3


def psp_inputs(seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 3)
  target = np.zeros((B, T), np.float32)
  target[0, :2] = 0.5
  target[1, 2] = 1.0
  return {"audio": jax.random.normal(k[0], (B, T, 6)),
          "visual": jax.random.normal(k[1], (B, T, 2, 2, 5)),
          psp.AVPS_KEY: jnp.asarray(target)}


def tbje_inputs():
  return {"text": jnp.array([[3, 4, 5, 0], [6, 7, 0, 0]], jnp.int32),
          "text_lengths": jnp.array([3, 2], jnp.int32),
          "audio": jax.random.normal(jax.random.PRNGKey(1), (B, 5, 4)),
          "audio_lengths": jnp.array([5, 2], jnp.int32)}


def _init(model, x):
  return jax.jit(lambda k, x: model.init(k, x, False))(jax.random.PRNGKey(0), x)["params"]


def _eval(model):
  """The model's jitted eval-mode apply: ``(params, inputs) -> (logits, z)``."""
  return jax.jit(lambda p, x: model.apply({"params": p}, x, False))


@pytest.fixture(scope="module")
def psp_model():
  model = psp.PSP(("audio", "visual"), 7, hidden=4, attention_hidden=6, dropout=0.1)
  x = psp_inputs()
  return model, _init(model, x), x


@pytest.fixture(scope="module")
def tbje_model():
  model = tbje.TBJE(("text", "audio"), 3, vocab_size=9, embed_dim=4, width=8, num_layers=2,
                    num_heads=2, ff=6, dropout=0.1)
  x = tbje_inputs()
  return model, _init(model, x), x


def test_positive_samples_by_hand():
  beta = jnp.array([[0.5, 0.3, 0.2], [2.0, 0.0, 0.0], [0.1, 0.1, 1.8], [0.0, 0.0, 0.0]])
  gamma = psp.positive_samples(beta, 0.25)
  # row 0 sums to 1: 0.2 is dropped, 0.5 and 0.3 renormalised; row 2: 0.05, 0.05, 0.9.
  expected = [[0.625, 0.375, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
  np.testing.assert_allclose(gamma, expected, atol=1e-6)


def test_avps_loss_by_hand():
  sim = jnp.array([[0.5, -0.2, 0.5]])
  target = jnp.array([[0.5, 0.0, 0.5]])
  assert float(psp.avps_loss(sim, target)) == pytest.approx(0.0, abs=1e-7)
  # relu -> [1, 0, 0]; target uniform over the last two: ((1)^2 + 0.5^2 + 0.5^2) / 3.
  got = psp.avps_loss(jnp.array([[1.0, -1.0, 0.0]]), jnp.array([[0.0, 0.5, 0.5]]))
  assert float(got) == pytest.approx(1.5 / 3, rel=1e-5)


def test_psp_shapes_and_aux_matches_forward(psp_model):
  model, params, x = psp_model
  logits, z = _eval(model)(params, x)
  assert logits.shape == (B * T, 7) and z.shape == (B * T, 64)
  key = jax.random.PRNGKey(5)

  @jax.jit
  def both(p, x):
    train_logits, _ = model.apply({"params": p}, x, True, rngs={"dropout": key})
    return train_logits, model.apply({"params": p}, x, True, rngs={"dropout": key},
                                     method="auxiliary_loss")

  train_logits, (aux, aux_logits) = both(params, x)
  np.testing.assert_array_equal(train_logits, aux_logits)   # same dropout masks
  assert float(aux) > 0 and model.has_auxiliary_loss


def _zeroed(x, modality):
  return dict(x, **{modality: jnp.zeros_like(x[modality])})


@pytest.mark.parametrize("which", ["psp", "tbje"])
def test_masked_passes_equal_zeroing_by_hand(which, psp_model, tbje_model):
  model, params, x = psp_model if which == "psp" else tbje_model
  mods = model.modalities
  v, _ = jax.jit(lambda p, x: subsets.subset_forward(model, p, {}, x, mods, train=False))(
      params, x)
  # Row s: bit i set = modality i present; rows 0..3 = {}, {m0}, {m1}, {m0, m1}.
  rows = [_zeroed(_zeroed(x, mods[0]), mods[1]), _zeroed(x, mods[1]), _zeroed(x, mods[0]), x]
  by_hand = jax.jit(jax.vmap(lambda x: model.apply({"params": params}, x, False)[0]))(
      jax.tree.map(lambda *a: jnp.stack(a), *rows))
  np.testing.assert_allclose(v, by_hand, atol=1e-5)


@pytest.mark.parametrize("which", ["psp", "tbje"])
def test_gradients_finite_with_a_modality_zeroed(which, psp_model, tbje_model):
  """A zero-padded modality gives constant / zero feature rows (LayerNorm of a constant row,
  the cosine of a zero vector): the gradient must stay finite, not NaN."""
  model, params, x = psp_model if which == "psp" else tbje_model

  def loss(p, x):
    if which == "psp":   # the AVPS loss takes the cosine of the two modalities' features
      aux, logits = model.apply({"params": p}, x, False, method="auxiliary_loss")
      return aux + logits.sum()
    return model.apply({"params": p}, x, False)[0].sum()

  grad = jax.jit(jax.grad(loss))
  for m in model.modalities:
    finite = jax.tree.map(lambda g: bool(jnp.isfinite(g).all()), grad(params, _zeroed(x, m)))
    assert all(jax.tree.leaves(finite)), m


def test_tbje_shapes_and_lengths_keep_masks(tbje_model):
  model, params, x = tbje_model
  apply = _eval(model)
  logits, z = apply(params, x)
  assert logits.shape == (B, 3) and z.shape == (B, 16)
  # Without lengths the released rule (id 0 / all-zero frame) gives the same masks here.
  no_lengths = {k: v for k, v in x.items() if not k.endswith("_lengths")}
  audio = np.array(x["audio"])
  audio[1, 2:] = 0.0
  no_lengths["audio"] = jnp.asarray(audio)
  with_lengths = dict(x, audio=no_lengths["audio"])
  np.testing.assert_allclose(apply(params, no_lengths)[0], apply(params, with_lengths)[0],
                             atol=1e-5)


def test_padding_mask_and_masked_attention():
  tokens = jnp.array([[3, 4, 0], [5, 0, 0]])
  np.testing.assert_array_equal(tbje.padding_mask(None, tokens, tokens=True),
                                [[False, False, True], [False, True, True]])
  np.testing.assert_array_equal(tbje.padding_mask(jnp.array([1, 3]), tokens, tokens=True),
                                [[False, True, True], [False, False, False]])
  att = tbje.MultiHeadAttention(4, 2, 0.0)
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 4))
  kv = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 4))
  mask = jnp.array([[False, False, True]])
  p = att.init(jax.random.PRNGKey(2), kv, kv, q, mask, False)
  changed = kv.at[0, 2].set(100.0)   # a masked key/value position: no effect
  np.testing.assert_allclose(att.apply(p, kv, kv, q, mask, False),
                             att.apply(p, changed, changed, q, mask, False), atol=1e-5)
  flat = tbje.AttFlat(4, 5, 2, 0.0)
  pf = flat.init(jax.random.PRNGKey(3), kv, mask, False)
  np.testing.assert_allclose(flat.apply(pf, kv, mask, False),
                             flat.apply(pf, changed, mask, False), atol=1e-5)


def test_std_layer_norm_is_tbje_formula():
  x = jnp.array([[1.0, 2.0, 4.0, 7.0]])
  ln = tbje.StdLayerNorm()
  out = ln.apply(ln.init(jax.random.PRNGKey(0), x), x)
  ref = (x - x.mean()) / (np.std(np.asarray(x), ddof=1) + 1e-6)
  np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_flatten_positions():
  batch = {"label": jnp.array([[1, 2, 3], [4, 5, 6]]), "audio": jnp.ones((2, 3, 4))}
  flat, weight = steps.flatten_positions(batch, jnp.array([True, False]))
  np.testing.assert_array_equal(flat["label"], [1, 2, 3, 4, 5, 6])
  np.testing.assert_array_equal(weight, [True] * 3 + [False] * 3)
  assert flat["audio"].shape == (2, 3, 4)
  same, w = steps.flatten_positions({"label": jnp.array([1, 2])}, None)
  assert same["label"].shape == (2,) and w is None


def test_auxiliary_gradients_join_the_method_gradient(psp_model):
  """The AVPS loss is computed in the methods' own full pass (its dropout key) and its gradient
  rides along in the one backward pass, once and unmodulated: ``backward(κ = 0)`` is the AVPS
  gradient alone, ``backward(1)`` the gradient of cross-entropy + AVPS."""
  model, params, x = psp_model
  ctx = method_base.Context(model, model.modalities, method_base.NoHParams())
  labels = jnp.arange(B * T, dtype=jnp.int32) % 7
  batch = dict(x, label=labels)
  rng = jax.random.PRNGKey(7)
  key = subsets.pass_key(subsets.dropout_stream(rng), 3)   # the full pass: row 2**k - 1

  @jax.jit
  def both(p):
    fwd, backward = method_base.shapley_step(ctx, p, {}, batch, rng, grad_masked=True)
    return fwd.aux.aux_loss, backward(jnp.zeros(2)), backward(jnp.ones(2))

  @jax.jit
  def direct(p):
    def parts(p):
      (logits, _), aux = model.apply({"params": p}, x, True, rngs={"dropout": key},
                                     method="with_auxiliary_loss")
      return aux, aux + shapley.cross_entropy(logits, labels).mean()
    return jax.grad(lambda p: parts(p)[0])(p), jax.grad(lambda p: parts(p)[1])(p)

  aux, at_zero, at_one = both(params)
  g_aux, g_total = direct(params)
  assert float(aux) > 0
  close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, at_zero, g_aux)
  jax.tree.map(close, at_one, g_total)


def _model_config(fusion, **section):
  return ml_collections.ConfigDict(dict(fusion=fusion, dtype="float32", encoders={},
                                        encoder_default=None, fusion_options={},
                                        **{fusion: section}))


def test_build_model_checks():
  f32 = np.dtype(np.float32)
  spec = {"audio": ((10, 128), f32), "visual": ((10, 512), f32)}
  with pytest.raises(ValueError, match="visual_pool='none'"):
    build_model(_model_config("psp"), ("audio", "visual"), 29, spec)
  with pytest.raises(ValueError, match="unknown model.psp key 'lambda'"):
    build_model(_model_config("psp", **{"lambda": 1.0}), ("audio", "visual"), 29, spec)
  text_spec = {"text": ((60,), np.dtype(np.int32)), "audio": ((60, 80), f32)}
  with pytest.raises(ValueError, match="vocabulary size"):
    build_model(_model_config("tbje"), ("text", "audio"), 2, text_spec)
  model = build_model(_model_config("tbje", width=8, num_heads=2), ("text", "audio"), 2,
                      text_spec, vocab_sizes={"text": 11})
  assert model.vocab_size == 11 and model.width == 8


def test_set_embeddings(tbje_model):
  model, params, _ = tbje_model
  matrix = np.arange(9 * 4, dtype=np.float32).reshape(9, 4)
  out = state_lib.set_embeddings(model, params, {"text": matrix})
  np.testing.assert_array_equal(out["embedding"]["embedding"], matrix)
  with pytest.raises(ValueError, match="shape"):
    state_lib.set_embeddings(model, params, {"text": matrix[:3]})
  with pytest.raises(ValueError, match="no token embedding"):
    state_lib.set_embeddings(model, params, {"audio": matrix})


def _segment_split(n, seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 5, size=(n, T)).astype(np.int32)
  target = np.zeros((n, T), np.float32)
  for i in range(n):
    first = labels[i] == labels[i].min()
    target[i, first] = 1.0 / first.sum()
  return {"audio": (rng.standard_normal((n, T, 6)) + labels[..., None]).astype(np.float32),
          "visual": rng.standard_normal((n, T, 2, 2, 5)).astype(np.float32),
          psp.AVPS_KEY: target, "label": labels}


def test_psp_trains_per_segment_and_scores_every_segment(tmp_path):
  """AGM on a per-segment task end to end: the AVPS loss is logged, and the test accuracy is the
  fraction of correct segments (a padded last eval batch included)."""
  data = ArrayDataset("segments", ("audio", "visual"), 5,
                      {"train": _segment_split(32, 0), "dep": _segment_split(20, 1),
                       "test": _segment_split(20, 2)})
  c = tiny_config(**{"model.fusion": "psp", "num_epochs": 1, "batch_size": 16,
                     "eval_batch_size": 16, "method": "agm"})
  c.model.psp = dict(hidden=4, attention_hidden=6)
  c.optimizer.name, c.optimizer.learning_rate = "adam", 1e-3
  run, state, _ = loop.fit(c, str(tmp_path), dataset=data)
  lines = read_lines(tmp_path)
  assert all(np.isfinite(line["aux_loss"]) and line["aux_loss"] > 0
             for line in lines if line.get("split") == "train")
  test = [line for line in lines if line.get("split") == "test"][-1]
  x = {k: v for k, v in data.arrays["test"].items() if k != "label"}
  logits, _ = _eval(run.model)(state.params, x)
  expected = float((np.argmax(logits, -1) == data.arrays["test"]["label"].reshape(-1)).mean())
  assert test["acc"] == pytest.approx(expected, abs=1e-6)
