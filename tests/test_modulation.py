"""AGM coefficients and the optax transformation (docs/ARCHITECTURE.md, sign conventions: κ)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agm_jax import modulation


def test_kappa_k2_first_step_by_hand():
  # t = 1: running mean 0 -> tau = 1; r = exp((mean ce - ce) * 2) = exp(+-1).
  kappa = modulation.agm_coefficients(jnp.array([0.5, 1.5]), jnp.zeros(2), alpha=1.0, clip=10.)
  np.testing.assert_allclose(kappa, [math.exp(1 - math.e), math.exp(1 - math.exp(-1))],
                             rtol=1e-6)
  np.testing.assert_allclose(kappa, [0.179374, 1.881605], rtol=1e-5)


def test_kappa_k2_equals_released_formula():
  ce, rce, alpha, clip = np.array([0.7, 1.2]), np.array([0.9, 1.0]), 0.8, 10.0
  kappa = modulation.agm_coefficients(ce, rce, alpha=alpha, clip=clip)
  audio = math.exp(alpha * min(math.exp(rce[1] - rce[0]) - math.exp(ce[1] - ce[0]), clip))
  visual = math.exp(alpha * min(math.exp(rce[0] - rce[1]) - math.exp(ce[0] - ce[1]), clip))
  np.testing.assert_allclose(kappa, [audio, visual], rtol=1e-6)


def test_kappa_k3_by_hand():
  # mean ce = 0.6, mean rce = 0.5, k/(k-1) = 1.5
  kappa = modulation.agm_coefficients(jnp.array([0.2, 0.5, 1.1]), jnp.array([0.4, 0.4, 0.7]),
                                      alpha=0.5, clip=10.0)
  r = [math.exp(0.6), math.exp(0.15), math.exp(-0.75)]
  tau = [math.exp(0.15), math.exp(0.15), math.exp(-0.3)]
  np.testing.assert_allclose(kappa, [math.exp(0.5 * (t - q)) for t, q in zip(tau, r)],
                             rtol=1e-6)


def test_kappa_clip_and_reference_one():
  kappa = modulation.agm_coefficients(jnp.array([1.0, 1.0]), jnp.array([0.0, 10.0]),
                                      alpha=0.5, clip=3.0)
  np.testing.assert_allclose(kappa[0], math.exp(1.5), rtol=1e-6)  # tau - r = e^10 - 1 > 3
  ones = modulation.agm_coefficients(jnp.array([0.5, 1.5]), jnp.array([9.0, 0.0]), alpha=1.0,
                                     clip=10.0, reference="one")
  np.testing.assert_allclose(ones, [math.exp(1 - math.e), math.exp(1 - math.exp(-1))],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="valid"):
    modulation.agm_coefficients(jnp.ones(2), jnp.ones(2), alpha=1, clip=1, reference="zero")


def _grads(k):
  return {"w": jnp.arange(k * 6, dtype=jnp.float32).reshape(k, 2, 3), "b": jnp.ones((k, 3))}


@pytest.mark.parametrize("jit", [False, True])
def test_transform_running_mean_and_kappa(jit):
  tx = modulation.agm(alpha=1.0, clip=10.0, num_modalities=2)
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(None)
  ces = np.array([[0.5, 1.5], [0.6, 1.2], [0.2, 1.4], [0.9, 0.3]], np.float32)
  for t, ce in enumerate(ces, start=1):
    prev = ces[:t - 1].mean(0) if t > 1 else np.zeros(2)
    want = modulation.agm_coefficients(ce, prev, alpha=1.0, clip=10.0)
    out, state = update(_grads(2), state, mono_ce=ce)
    np.testing.assert_allclose(state.kappa, want, rtol=1e-5)
    np.testing.assert_allclose(state.running_ce, ces[:t].mean(0), rtol=1e-6)
    assert int(state.count) == t
    np.testing.assert_allclose(out["w"], want[0] * _grads(2)["w"][0] + want[1] *
                               _grads(2)["w"][1], rtol=1e-5)


def test_inactive_gives_kappa_one_and_updates_mean():
  tx = modulation.agm(alpha=1.0, num_modalities=3)
  g = _grads(3)
  out, state = tx.update(g, tx.init(None), mono_ce=jnp.array([0.1, 0.5, 2.0]), active=False)
  np.testing.assert_allclose(state.kappa, 1.0)
  np.testing.assert_allclose(out["b"], 3.0)
  np.testing.assert_allclose(state.running_ce, [0.1, 0.5, 2.0])


def test_callable_updates_single_backward():
  tx = modulation.agm(alpha=1.0, num_modalities=2)
  g = _grads(2)
  backward = lambda kappa: jax.tree.map(lambda x: jnp.tensordot(kappa, x, 1), g)  # noqa: E731
  a, _ = tx.update(backward, tx.init(None), mono_ce=jnp.array([0.5, 1.5]))
  b, _ = tx.update(g, tx.init(None), mono_ce=jnp.array([0.5, 1.5]))
  jax.tree.map(np.testing.assert_allclose, a, b)


def test_state_is_a_checkpointable_pytree():
  tx = modulation.agm(alpha=1.0, num_modalities=2)
  _, state = tx.update(_grads(2), tx.init(None), mono_ce=jnp.array([0.5, 1.5]))
  leaves, treedef = jax.tree.flatten(state)
  again = jax.tree.unflatten(treedef, [np.asarray(x) for x in leaves])
  assert isinstance(again, modulation.AGMState)
  _, s1 = tx.update(_grads(2), state, mono_ce=jnp.array([1.0, 1.0]))
  _, s2 = tx.update(_grads(2), again, mono_ce=jnp.array([1.0, 1.0]))
  jax.tree.map(np.testing.assert_array_equal, s1, s2)


def test_composes_in_optax_chain_jitted():
  params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
  tx = optax.chain(modulation.agm(alpha=0.5, num_modalities=2), optax.clip_by_global_norm(1.0),
                   optax.add_decayed_weights(1e-4), optax.sgd(1e-3, momentum=0.9))
  state = tx.init(params)
  step = jax.jit(lambda g, s, p, ce: tx.update(g, s, p, mono_ce=ce))
  updates, state = step(_grads(2), state, params, jnp.array([0.3, 0.9]))
  params = optax.apply_updates(params, updates)
  assert optax.tree_utils.tree_get(state, "kappa").shape == (2,)
  assert jnp.isfinite(params["w"]).all()


def test_pmean_over_axis_name():
  tx = modulation.agm(alpha=1.0, num_modalities=2, axis_name="d")
  ce = jnp.array([[0.2, 1.0], [0.6, 1.4]])  # two "devices"
  grads = jax.tree.map(lambda x: jnp.stack([x, x]), _grads(2))
  _, state = jax.vmap(lambda g, c: tx.update(g, tx.init(None), mono_ce=c), axis_name="d")(
      grads, ce)
  want = modulation.agm_coefficients(ce.mean(0), jnp.zeros(2), alpha=1.0, clip=10.0)
  np.testing.assert_allclose(state.kappa, np.stack([want, want]), rtol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(alpha=-1.0), dict(alpha=1.0, clip=0.0),
                                    dict(alpha=1.0, num_modalities=1),
                                    dict(alpha=1.0, reference="median")])
def test_rejects_bad_hyperparameters(kwargs):
  with pytest.raises(ValueError):
    modulation.agm(**{"num_modalities": 2, **kwargs})


def test_a_misspelt_keyword_is_an_error():
  """optax.chain hands every keyword to every transform: one that no transform reads (here a
  misspelling of ``active``) must raise, not be swallowed."""
  from agm_jax import transforms  # noqa: PLC0415 - keeps this module's imports minimal
  grads = _grads(2)
  params = jax.tree.map(lambda g: g[0], grads)
  agm_ge = optax.chain(modulation.agm(alpha=1.0, num_modalities=2), modulation.ge_noise())
  cases = [(modulation.agm(alpha=1.0, num_modalities=2), grads, {"mono_ce": jnp.ones(2)}),
           (agm_ge, grads, {"mono_ce": jnp.ones(2)}),
           (transforms.mslr((1.0, 1.0)), params, {}),
           (transforms.ogm_ge(0.1, num_modalities=2), params, {"scores": jnp.ones(2)})]
  for tx, updates, kwargs in cases:
    with pytest.raises(TypeError, match="unknown keyword argument.*'actve'"):
      tx.update(updates, tx.init(params), params, actve=False, **kwargs)
  # A neighbour's known keyword passes through: agm ignores nothing it should read, ge_noise
  # ignores agm's `mono_ce`.
  out, _ = agm_ge.update(grads, agm_ge.init(params), params, mono_ce=jnp.ones(2),
                         active=False)
  assert jax.tree.structure(out) == jax.tree.structure(params)
