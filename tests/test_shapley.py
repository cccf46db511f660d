"""Shapley masks, coefficients, responses and gradients (AGM eq. 1-3, 6)."""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agm_jax import shapley

B, K, D = 3, 4, 2


def test_subset_masks_bit_order():
  m = shapley.subset_masks(3)
  assert m.shape == (8, 3) and m.dtype == bool
  assert not m[0].any() and m[-1].all()
  np.testing.assert_array_equal(m[5], [True, False, True])  # 0b101 = {m0, m2}


def test_coefficients_k2_by_hand():
  # phi^a = 1/2 (v(av) - v(v) + v(a)); subsets ordered (), (a), (v), (av).
  np.testing.assert_allclose(shapley.coefficients(2),
                             [[0, .5, -.5, .5], [0, -.5, .5, .5]], atol=1e-7)


def test_coefficients_k3_by_hand():
  # phi^t = 1/3 (v(avt) - v(av) + v(t)) + 1/6 (v(at) - v(a) + v(vt) - v(v)); t is bit 2.
  c = shapley.coefficients(3)
  s = lambda name: sum(1 << "avt".index(ch) for ch in name)  # noqa: E731
  want = np.zeros(8)
  for name, w in [("avt", 1 / 3), ("av", -1 / 3), ("t", 1 / 3), ("at", 1 / 6), ("a", -1 / 6),
                  ("vt", 1 / 6), ("v", -1 / 6)]:
    want[s(name)] = w
  np.testing.assert_allclose(c[2], want, atol=1e-7)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_coefficient_columns(k):
  col = shapley.coefficients(k).sum(0)
  np.testing.assert_allclose(col, np.eye(2**k)[-1], atol=1e-6)
  assert np.all(shapley.coefficients(k)[:, 0] == 0)


@pytest.mark.parametrize("k", [0, 1, 11])
def test_bad_k(k):
  with pytest.raises(ValueError):
    shapley.coefficients(k)


def _random_fn(k, seed, symmetric=(), ignored=()):
  """A nonlinear function with cross-modal interactions (products of modality terms)."""
  rng = np.random.default_rng(seed)
  w = [rng.normal(size=(D, K)) for _ in range(k)]
  u = [rng.normal(size=(D, K)) for _ in range(k)]
  for i in symmetric[1:]:
    w[i], u[i] = w[symmetric[0]], u[symmetric[0]]
  bias = rng.normal(size=(K,))

  def fn(inputs):
    terms = [jnp.tanh(inputs[f"m{i}"] @ w[i]) for i in range(k) if i not in ignored]
    gates = [jnp.sin(inputs[f"m{i}"] @ u[i]) + 1.5 for i in range(k) if i not in ignored]
    return sum(terms) + functools.reduce(jnp.multiply, gates) + bias

  return fn


def _inputs(k, seed):
  rng = np.random.default_rng(seed + 1)
  return {f"m{i}": jnp.asarray(rng.normal(size=(B, D)), jnp.float32) for i in range(k)}


@given(k=st.integers(2, 4), seed=st.integers(0, 10_000))
def test_efficiency(k, seed):
  fn, x = _random_fn(k, seed), _inputs(k, seed)
  mods = tuple(f"m{i}" for i in range(k))
  phi = shapley.mono_modal_responses(fn, x, mods)
  assert phi.shape == (k, B, K)
  np.testing.assert_allclose(phi.sum(0), fn(x), rtol=1e-5, atol=1e-5)


@given(k=st.integers(2, 4), seed=st.integers(0, 10_000))
def test_symmetry(k, seed):
  fn = _random_fn(k, seed, symmetric=(0, 1))
  x = _inputs(k, seed)
  x["m1"] = x["m0"]
  phi = shapley.mono_modal_responses(fn, x, tuple(f"m{i}" for i in range(k)))
  np.testing.assert_allclose(phi[0], phi[1], rtol=1e-5, atol=1e-5)


@given(k=st.integers(2, 4), seed=st.integers(0, 10_000))
def test_ignored_modality_has_zero_marginal_contribution(k, seed):
  fn, x = _random_fn(k, seed, ignored=(k - 1,)), _inputs(k, seed)
  v = shapley.subset_logits(fn, x, tuple(f"m{i}" for i in range(k)))
  np.testing.assert_allclose(shapley.marginal_contributions(v)[k - 1], 0, atol=1e-5)


@given(x=hnp.arrays(np.float32, (2, 2, 3), elements=st.floats(-5, 5, width=32)))
def test_k2_expansion(x):
  a, v = x[0], x[1]
  fn = lambda d: jnp.tanh(d["a"] * 2 + d["v"]) + d["a"] * d["v"]  # noqa: E731
  phi = shapley.mono_modal_responses(fn, {"a": a, "v": v}, ("a", "v"))
  z = np.zeros_like(a)
  want = 0.5 * (fn({"a": a, "v": v}) - fn({"a": z, "v": v}) + fn({"a": a, "v": z}))
  np.testing.assert_allclose(phi[0], want, rtol=1e-5, atol=1e-5)


def test_rand_pad_needs_key_and_is_used():
  fn, x = _random_fn(2, 0), _inputs(2, 0)
  with pytest.raises(ValueError, match="key"):
    shapley.mono_modal_responses(fn, x, ("m0", "m1"), pad="normal")
  phi_n = shapley.mono_modal_responses(fn, x, ("m0", "m1"), pad="normal",
                                       key=jax.random.key(0))
  phi_z = shapley.mono_modal_responses(fn, x, ("m0", "m1"))
  np.testing.assert_allclose(phi_n.sum(0), phi_z.sum(0), rtol=1e-5)
  assert not np.allclose(phi_n, phi_z)
  with pytest.raises(ValueError, match="valid"):
    shapley.mono_modal_responses(fn, x, ("m0", "m1"), pad="ones")


def test_bad_inputs():
  fn, x = _random_fn(2, 0), _inputs(2, 0)
  with pytest.raises(ValueError, match="lack modality 'm2'"):
    shapley.mono_modal_responses(fn, x, ("m0", "m2"))
  with pytest.raises(ValueError, match="batch sizes"):
    shapley.mono_modal_responses(fn, {"m0": x["m0"], "m1": x["m1"][:2]}, ("m0", "m1"))
  with pytest.raises(ValueError, match="at least 2"):
    shapley.mono_modal_responses(fn, x, ("m0",))


def test_extra_keys_pass_through_unmasked():
  x = dict(_inputs(2, 0), m0_lengths=jnp.array([1, 2, 3]))
  seen = []
  fn = lambda d: seen.append(d["m0_lengths"]) or d["m0"] @ jnp.ones((D, K))  # noqa: E731
  shapley.subset_logits(fn, x, ("m0", "m1"))
  assert seen[0].shape == (3,)  # not stacked over subsets


# --- gradients -----------------------------------------------------------------------------

def _mlp_logits(params, inputs):
  """Late fusion with a cross-modal hidden layer (so phi^m depends on both encoders)."""
  feats = [jnp.tanh(inputs[m] @ params[m]) for m in sorted(inputs) if m.startswith("m")]
  h = jnp.tanh(jnp.concatenate(feats, -1) @ params["mix"])
  return h @ params["head"] + sum(feats) @ params["skip"]


def _mlp_params(k, seed):
  rng = np.random.default_rng(seed)
  p = {f"m{i}": rng.normal(size=(D, 5)) for i in range(k)}
  p.update(mix=rng.normal(size=(5 * k, 6)), head=rng.normal(size=(6, K)),
           skip=rng.normal(size=(5, K)))
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)


@pytest.fixture(scope="module")
def grad_fns():
  fns = {}
  for k in (2, 3, 4):
    mods = tuple(f"m{i}" for i in range(k))
    per = jax.jit(lambda p, x, y, mods=mods: shapley.per_modality_grads(_mlp_logits, p, x, y,
                                                                        mods))
    fused = jax.jit(lambda p, x, y, kap, mods=mods: shapley.modulated_grads(
        _mlp_logits, p, x, y, mods, kap))
    fns[k] = per, fused
  return fns


@pytest.mark.parametrize("k", [2, 3, 4])
def test_fused_backward_equals_per_modality(grad_fns, k):
  per, fused = grad_fns[k]
  p, x = _mlp_params(k, k), _inputs(k, k)
  y = jnp.array([0, 1, 3])
  grads, aux = per(p, x, y)
  kappa = jnp.linspace(0.3, 1.7, k)
  want = jax.tree.map(lambda g: jnp.tensordot(kappa, g, axes=1), grads)
  got, aux2 = fused(p, x, y, kappa)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)
  np.testing.assert_allclose(aux["mono_ce"], aux2["mono_ce"], rtol=1e-6)
  # kappa = 1 is the ordinary joint gradient.
  loss, joint = jax.jit(jax.value_and_grad(
      lambda q: shapley.cross_entropy(_mlp_logits(q, x), y).mean()))(p)
  total = jax.tree.map(lambda g: g.sum(0), grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), total, joint)
  assert aux["mono_logits"].shape == (k, 3, K) and aux["mono_ce"].shape == (k,)
  np.testing.assert_allclose(aux["loss"], loss, rtol=1e-6)


def test_per_modality_grad_is_vjp_of_phi_m():
  """grads[m] == d/dparams <phi^m, dL/dphi> with dL/dphi held fixed (definition of eq. 6)."""
  k, p, x = 2, _mlp_params(2, 7), _inputs(2, 7)
  y = jnp.array([2, 0, 1])
  mods = ("m0", "m1")

  @jax.jit   # one compile for the library's gradients and the k reference VJPs
  def grads_and_wants(p):
    grads, _ = shapley.per_modality_grads(_mlp_logits, p, x, y, mods)
    phi_of = lambda q: shapley.mono_modal_responses(functools.partial(_mlp_logits, q), x, mods)  # noqa: E731
    full = phi_of(p).sum(0)
    dl = jax.grad(lambda z: shapley.cross_entropy(z, y).mean())(full)
    return grads, [jax.grad(lambda q, m=m: jnp.sum(phi_of(q)[m] * dl))(p) for m in range(k)]

  grads, wants = grads_and_wants(p)
  for m in range(k):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.tree.map(lambda g: g[m], grads), wants[m])


def test_kappa_function_form():
  p, x, y = _mlp_params(2, 1), _inputs(2, 1), jnp.array([0, 1, 2])
  got, aux = shapley.modulated_grads(_mlp_logits, p, x, y, ("m0", "m1"),
                                     lambda ce: jnp.exp(-ce))
  np.testing.assert_allclose(aux["kappa"], np.exp(-np.asarray(aux["mono_ce"])), rtol=1e-6)


# --- mono-modal cross-entropy ----------------------------------------------------------------

def test_mono_modal_ce_with_and_without_the_probability_floor():
  """Eq. 4 as written (no floor) against the released mains' floor on p at 1e-8: an example
  whose label has p = e^-25 / (1 + 5 e^-25) costs 25.0 unfloored, -log(1e-8) = 18.4207
  floored; the other example (uniform over 6 classes) log 6 = 1.7918 either way."""
  phi = jnp.zeros((2, 2, 6)).at[0, 0, 1].set(25.0)    # (k, B, K): modality 0, example 0
  labels = jnp.array([0, 3])
  np.testing.assert_allclose(shapley.mono_modal_ce(phi, labels), [13.39588, 1.791759],
                             rtol=1e-5)
  np.testing.assert_allclose(shapley.mono_modal_ce(phi, labels, p_floor=1e-8),
                             [10.10622, 1.791759], rtol=1e-5)
  # a floor the label's probability clears changes nothing
  np.testing.assert_allclose(shapley.mono_modal_ce(phi, labels, p_floor=1e-12),
                             shapley.mono_modal_ce(phi, labels), rtol=1e-6)
  # score labels (L1) have no probability to floor
  scores = jnp.array([0.5, -1.0])
  np.testing.assert_array_equal(shapley.mono_modal_ce(phi[..., :1], scores, p_floor=1e-8),
                                shapley.mono_modal_ce(phi[..., :1], scores))
  for bad in (-1e-8, 1.0, float("nan")):
    with pytest.raises(ValueError, match=r"p_floor must be in \[0, 1\)"):
      shapley.mono_modal_ce(phi, labels, p_floor=bad)


def test_shapley_vjp_floors_only_the_mono_modal_ce():
  p, x, y = _mlp_params(2, 3), _inputs(2, 3), jnp.array([0, 1, 3])
  scaled = jax.tree.map(lambda a: 30.0 * a, p)   # confident responses: some p < 1e-8
  fn = lambda q: shapley.subset_logits(functools.partial(_mlp_logits, q), x, ("m0", "m1"))  # noqa: E731
  plain, backward = shapley.shapley_vjp(fn, scaled, y)
  floored, backward_f = shapley.shapley_vjp(fn, scaled, y, p_floor=1e-8)
  per_example = shapley.cross_entropy(plain.mono_logits, y[None])
  assert (per_example > 18.5).any()
  np.testing.assert_allclose(floored.mono_ce,
                             np.minimum(per_example, -np.log(1e-8)).mean(-1), rtol=1e-6)
  assert (floored.mono_ce < plain.mono_ce).any()
  np.testing.assert_allclose(floored.loss, plain.loss)   # the loss and its gradient keep eq. 4
  jax.tree.map(np.testing.assert_allclose, backward_f(jnp.ones(2)), backward(jnp.ones(2)))
