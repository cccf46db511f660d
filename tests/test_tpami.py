"""T-PAMI 2024 OGM and OPM (issue 16): the coefficient forms by hand, the released warm-up
window, OPM's skipped step on an empty batch, and OPM's current against previous rho."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agm_jax import methods
from agm_jax.methods import opm
from agm_jax.train import loop
from agm_jax.transforms import score_ratio
from configs import tpami_cremad, tpami_ks
from tests.conftest import tiny_config

T = math.tanh


def test_ogm_forms_at_rho_two_by_hand():
  s = jnp.array([2.0, 1.0])                     # rho = (2, 1/2)
  np.testing.assert_allclose(score_ratio.ogm_coefficients(s, alpha=0.8),
                             [1 - 0.8 * T(1.0), 1.0], rtol=1e-6)
  np.testing.assert_allclose(score_ratio.ogm_coefficients(s, alpha=0.8)[0], 0.3907, atol=1e-4)
  np.testing.assert_allclose(score_ratio.ogm_code_coefficients(s, alpha=0.8),
                             [1 - T(1.6), 1.0], rtol=1e-6)
  np.testing.assert_allclose(score_ratio.ogm_code_coefficients(s, alpha=0.8)[0], 0.0783,
                             atol=1e-4)
  np.testing.assert_allclose(score_ratio.ogm_plus_coefficients(s, gain=4.0), [1.0, 4.0])
  # A tie: the paper's form leaves both, the released code modulates modality 2 (its else).
  tie = jnp.array([1.0, 1.0])
  np.testing.assert_allclose(score_ratio.ogm_coefficients(tie, alpha=0.8), [1.0, 1.0])
  np.testing.assert_allclose(score_ratio.ogm_code_coefficients(tie, alpha=0.8),
                             [1.0, 1 - T(0.8)], rtol=1e-6)
  np.testing.assert_allclose(score_ratio.ogm_plus_coefficients(tie, gain=4.0), [4.0, 1.0])
  # k = 3, scores (4, 2, 1): rho = (3, 1.25, 0.375); code form: only the arg-max.
  s3 = jnp.array([4.0, 2.0, 1.0])
  np.testing.assert_allclose(score_ratio.ogm_code_coefficients(s3, alpha=0.5),
                             [1 - T(1.5), 1.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(score_ratio.ogm_coefficients(s3, alpha=0.5),
                             [1 - 0.5 * T(2.0), 1 - 0.5 * T(0.25), 1.0], rtol=1e-6)


@pytest.mark.parametrize("form, want", [("paper", 1 - 0.8 * T(1.0)), ("code", 1 - T(1.6)),
                                        ("plus", 1.0)])
def test_ogm_transform_form_and_warm_up(form, want):
  g = {"encoders_0": {"kernel": jnp.ones((1, 1, 1, 2))},
       "encoders_1": {"kernel": jnp.ones((1, 1, 1, 2))}}
  tx = score_ratio.ogm(0.8, num_modalities=2, form=form, noise=False, scope="conv")
  out, state = jax.jit(tx.update)(g, tx.init(g), scores=jnp.array([2.0, 1.0]))
  np.testing.assert_allclose(out["encoders_0"]["kernel"], want, rtol=1e-6)
  np.testing.assert_allclose(out["encoders_1"]["kernel"], 4.0 if form == "plus" else 1.0)
  same, _ = tx.update(g, state, scores=jnp.array([2.0, 1.0]), active=False)   # warm-up
  jax.tree.map(np.testing.assert_array_equal, same, g)
  with pytest.raises(ValueError, match="form 'x' is unknown"):
    score_ratio.ogm(0.8, num_modalities=2, form="x")


def test_released_configs_windows():
  for module in (tpami_ks, tpami_cremad):
    c = module.get_config()
    ogm_hp = methods.hparams(methods.get("ogm"), c)
    opm_hp = methods.hparams(methods.get("opm"), c)
    assert (ogm_hp.form, ogm_hp.alpha, ogm_hp.scope, ogm_hp.noise) == ("code", 0.8, "conv", True)
    assert [ogm_hp.window.active(e) for e in (5, 6, 60, 61)] == [False, True, True, False]
    assert [opm_hp.window.active(e) for e in (5, 6, 99)] == [False, True, True]
    assert (opm_hp.q_base, opm_hp.lam, opm_hp.p_exe, opm_hp.rho) == (0.5, 0.5, 0.7, "current")
    assert c.model.fusion == "concat" and c.optimizer.name == "adamw"


def test_skip_empty_batch_leaves_params_and_momentum():
  params = {"encoders_0": {"w": jnp.array([1.0, 2.0])}, "fusion": {"w": jnp.array([3.0])}}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = score_ratio.skip_empty_batches(optax.chain(
      score_ratio.opm(0.5, 0.5, num_modalities=2), optax.add_decayed_weights(1e-2),
      optax.sgd(0.1, momentum=0.9)))
  update = jax.jit(lambda g, s, p, kept: tx.update(g, s, p, scores=jnp.array([2.0, 1.0]),
                                                    kept=kept))
  upd, state = update(grads, tx.init(params), params, 4)          # builds momentum
  params = optax.apply_updates(params, upd)
  upd, skipped = update(grads, state, params, 0)                   # every example dropped
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), upd)
  jax.tree.map(np.testing.assert_array_equal, skipped.inner, state.inner)
  assert int(skipped.skipped) == 1 and int(state.skipped) == 0
  upd, _ = update(grads, skipped, params, 1)                       # one example left: a step
  assert float(jnp.abs(upd["fusion"]["w"]).sum()) > 0


@pytest.fixture(scope="module")
def opm_runs():
  return {rho: loop.Run(tiny_config(method="opm", **{"opm.rho": rho, "opm.p_exe": 1.0}))
          for rho in ("current", "previous")}


def test_opm_run_skips_an_empty_batch(opm_runs):
  run = opm_runs["current"]
  state = run.init_state()
  batch = next(run.train_batches(0))
  out = run.method.gradients(run.ctx, state.params, state.batch_stats, batch, state.rng, True,
                             state.opt_state)
  kw = dict(out.tx_kwargs)
  assert int(kw["kept"]) == batch["label"].shape[0]   # the weaker modality is never dropped
  upd, s1 = run.tx.update(out.updates, state.opt_state, state.params, **kw)
  params = optax.apply_updates(state.params, upd)
  upd, s2 = run.tx.update(out.updates, s1, params, **dict(kw, kept=0))
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), upd)
  jax.tree.map(np.testing.assert_array_equal, s2.inner, s1.inner)   # momentum, counts, rho


def test_opm_current_and_previous_rho(opm_runs, monkeypatch):
  seen = []
  real = opm.drop_features

  def spy(feats, q, key, **kw):
    jax.debug.callback(lambda v: seen.append(np.asarray(v)), q)
    return real(feats, q, key, **kw)

  monkeypatch.setattr(opm, "drop_features", spy)
  for rho, run in opm_runs.items():
    seen.clear()
    state = run.init_state()
    batches = run.train_batches(0)
    params, opt_state, qs = state.params, state.opt_state, []
    for step in range(2):
      out = run.method.gradients(run.ctx, params, state.batch_stats, next(batches),
                                 jax.random.PRNGKey(step), True, opt_state)
      qs.append(score_ratio.opm_drop_probabilities(
          score_ratio.mean_ratios(out.tx_kwargs["scores"]), q_base=0.5, lam=0.5))
      upd, opt_state = run.tx.update(out.updates, opt_state, params, **out.tx_kwargs)
      params = optax.apply_updates(params, upd)
    assert len(seen) == 2
    assert not np.allclose(qs[0], qs[1])
    want = qs if rho == "current" else [np.zeros(2), qs[0]]
    for got, q in zip(seen, want, strict=True):
      np.testing.assert_allclose(got, q, rtol=1e-5, atol=1e-6)


def test_opm_ogm_one_step_and_one_epoch(tmp_path):
  c = tiny_config(method="opm_ogm", num_epochs=1, checkpoint_every_steps=0,
                  **{"opm_ogm.form": "code", "opm_ogm.noise": False})
  c.data.synthetic_options = dict(c.data.synthetic_options, num_train=64, num_dep=32,
                                  num_test=32)
  run = loop.Run(c)
  state = run.init_state()
  out = run.method.gradients(run.ctx, state.params, state.batch_stats,
                             next(run.train_batches(0)), state.rng, True, state.opt_state)
  _, s1 = run.tx.update(out.updates, state.opt_state, state.params, **out.tx_kwargs)
  scores = out.tx_kwargs["scores"]
  np.testing.assert_allclose(optax.tree_utils.tree_get(s1, "coeff"),
                             score_ratio.ogm_code_coefficients(scores, alpha=0.8), rtol=1e-6)
  np.testing.assert_allclose(optax.tree_utils.tree_get(s1, "drop_prob"),
                             score_ratio.opm_drop_probabilities(
                                 score_ratio.mean_ratios(scores), q_base=0.5, lam=0.5),
                             rtol=1e-6)
  final = loop.train_and_evaluate(c, str(tmp_path))["final"]
  assert np.isfinite(final["loss"])
