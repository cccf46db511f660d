"""The comparison methods (issue #6): coefficients against hand-computed values, the optax
transforms jitted and chained, method-level state, and one epoch of every method end to end."""

import ast
import dataclasses
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import data_pipelines
from agm_jax import methods, modulation, shapley, subsets
from agm_jax.methods import agm, branches, gblending, joint, opm
from agm_jax.train import loop
from agm_jax.transforms import epoch as epoch_tx
from agm_jax.transforms import greedy as greedy_tx
from agm_jax.transforms import partition, score_ratio
from tests.conftest import ROOT, doc_block, tiny_config

NEW_METHODS = ("agm_1", "agm_ge", "ogm_ge", "ogm_ge_ra", "ogm", "opm", "opm_ogm", "mslr",
               "mses", "gblending", "greedy", "greedy_util", "moddrop", "feature_dropout")
T = math.tanh


def _params():
  """A params tree shaped like MultimodalClassifier's (two encoders and a fusion head)."""
  return {"encoders_0": {"Dense_0": {"kernel": jnp.full((3, 4), 1.0), "bias": jnp.ones(4)}},
          "encoders_1": {"Dense_0": {"kernel": jnp.full((2, 4), 2.0), "bias": jnp.ones(4)}},
          "fusion": {"classifier": {"kernel": jnp.full((8, 3), 3.0), "bias": jnp.ones(3)}}}


# --------------------------------------------------------------------------- partition


def test_partition():
  assert partition.modality_index(("encoders_1", "Dense_0", "kernel")) == 1
  assert partition.modality_index(("params", "encoders_12", "kernel")) == 12
  assert partition.modality_index(("fusion", "classifier_0", "kernel")) == partition.SHARED
  assert partition.modality_index(("encoders", "kernel")) == partition.SHARED
  labels = partition.modality_labels(_params())
  assert labels["encoders_1"]["Dense_0"]["bias"] == 1
  assert labels["fusion"]["classifier"]["kernel"] == -1
  scaled = partition.scale_by_modality(_params(), jnp.array([0.5, 0.0]))
  np.testing.assert_allclose(scaled["encoders_0"]["Dense_0"]["kernel"], 0.5)
  np.testing.assert_allclose(scaled["encoders_1"]["Dense_0"]["bias"], 0.0)
  np.testing.assert_allclose(scaled["fusion"]["classifier"]["kernel"], 3.0)
  with pytest.raises(ValueError, match="encoders_1"):
    partition.scale_by_modality(_params(), jnp.array([1.0]))


# --------------------------------------------------------------------------- OGM family


def test_ogm_scores_by_hand():
  # modality 0: logits favour class 0 by log(3) -> p = (3/5, 1/5, 1/5); modality 1: uniform.
  lg = jnp.array([[[math.log(3), 0, 0], [math.log(3), 0, 0]], [[0, 0, 0], [0, 0, 0]]])
  scores = score_ratio.ogm_scores(lg, jnp.array([0, 1]))
  np.testing.assert_allclose(scores, [0.6 + 0.2, 2 / 3], rtol=1e-6)


def test_ogm_ge_coefficients_by_hand():
  c = score_ratio.ogm_ge_coefficients(jnp.array([3.0, 1.0]), alpha=0.5)
  np.testing.assert_allclose(c, [1 - T(0.5 * 3.0), 1.0], rtol=1e-6)   # = (0.094852, 1)
  np.testing.assert_allclose(c[0], 0.0948517, rtol=1e-5)
  c = score_ratio.ogm_ge_coefficients(jnp.array([1.0, 3.0]), alpha=0.5)
  np.testing.assert_allclose(c, [1.0, 1 - T(1.5)], rtol=1e-6)
  # A tie modulates audio (the released else-branch): rho_a = 1.
  c = score_ratio.ogm_ge_coefficients(jnp.array([2.0, 2.0]), alpha=0.5)
  np.testing.assert_allclose(c, [1 - T(0.5), 1.0], rtol=1e-6)
  # k = 3: only the arg-max, with the ratio to the runner-up (4 / 2).
  c = score_ratio.ogm_ge_coefficients(jnp.array([4.0, 2.0, 1.0]), alpha=1.0)
  np.testing.assert_allclose(c, [1 - T(2.0), 1.0, 1.0], rtol=1e-6)


def test_ogm_ge_ra_reference_by_hand():
  # rho = (3, 1/3); against running means (2, 1): normalised (1.5, 1/3) -> audio.
  c = score_ratio.ogm_ge_coefficients(jnp.array([3.0, 1.0]), alpha=0.5,
                                         reference=jnp.array([2.0, 1.0]))
  np.testing.assert_allclose(c, [1 - T(0.75), 1.0], rtol=1e-6)
  # against (4, 0.25): normalised (0.75, 4/3) -> visual is above its history.
  c = score_ratio.ogm_ge_coefficients(jnp.array([3.0, 1.0]), alpha=0.5,
                                         reference=jnp.array([4.0, 0.25]))
  np.testing.assert_allclose(c, [1.0, 1 - T(0.5 * 4 / 3)], rtol=1e-6)
  # nobody above its running mean: no modulation.
  c = score_ratio.ogm_ge_coefficients(jnp.array([3.0, 1.0]), alpha=0.5,
                                         reference=jnp.array([6.0, 0.5]))
  np.testing.assert_allclose(c, [1.0, 1.0])


def test_ogm_tpami_coefficients_by_hand():
  np.testing.assert_allclose(score_ratio.mean_ratios(jnp.array([4.0, 2.0, 1.0])),
                             [3.0, 1.25, 0.375], rtol=1e-6)
  c = score_ratio.ogm_coefficients(jnp.array([3.0, 1.0]), alpha=0.5)
  np.testing.assert_allclose(c, [1 - 0.5 * T(2.0), 1.0], rtol=1e-6)   # (0.517986, 1)
  c = score_ratio.ogm_coefficients(jnp.array([4.0, 2.0, 1.0]), alpha=1.0)
  np.testing.assert_allclose(c, [1 - T(2.0), 1 - T(0.25), 1.0], rtol=1e-6)
  c = score_ratio.ogm_coefficients(jnp.array([9.0, 1.0]), alpha=3.0)   # floored at 0
  np.testing.assert_allclose(c, [0.0, 1.0])


def test_opm_drop_probabilities_by_hand():
  q = score_ratio.opm_drop_probabilities(jnp.array([3.0, 1 / 3]), q_base=0.5, lam=0.5)
  np.testing.assert_allclose(q, [0.5 * (1 + 0.5 * T(2.0)), 0.0], rtol=1e-6)   # (0.741007, 0)
  q = score_ratio.opm_drop_probabilities(jnp.array([3.0, 1.0]), q_base=0.9, lam=1.0)
  np.testing.assert_allclose(q, [1.0, 0.0])                                    # capped, rho=1


def test_opm_drop_features():
  feats = (jnp.ones((4, 3)), jnp.full((4, 3), 2.0))
  key = jax.random.PRNGKey(0)
  out, w = opm.drop_features(feats, jnp.array([1.0, 0.0]), key, p_exe=1.0)
  np.testing.assert_allclose(out[0], 0.0)
  np.testing.assert_allclose(out[1], 4.0)   # theta = 3*1 / 6: kept features times 2
  np.testing.assert_allclose(w, 1.0)
  out, w = opm.drop_features(feats, jnp.array([1.0, 1.0]), key, p_exe=1.0)
  np.testing.assert_allclose(w, 0.0)        # every modality dropped: out of the loss
  out, w = opm.drop_features(feats, jnp.array([1.0, 1.0]), key, p_exe=0.0)
  np.testing.assert_allclose(out[1], 2.0)   # the batch was not selected for dropping
  np.testing.assert_allclose(w, 1.0)


_OGM_GE = score_ratio.ogm_ge(0.5, num_modalities=2, noise=False)
_OGM_GE_JIT = jax.jit(_OGM_GE.update)


@pytest.mark.parametrize("jit", [False, True])
def test_ogm_ge_transform_scales_dominant_encoder(jit):
  update = _OGM_GE_JIT if jit else _OGM_GE.update
  out, state = update(_params(), _OGM_GE.init(None), scores=jnp.array([3.0, 1.0]))
  c = 1 - T(1.5)
  np.testing.assert_allclose(out["encoders_0"]["Dense_0"]["kernel"], c, rtol=1e-6)
  np.testing.assert_allclose(out["encoders_0"]["Dense_0"]["bias"], c, rtol=1e-6)
  np.testing.assert_allclose(out["encoders_1"]["Dense_0"]["kernel"], 2.0)
  np.testing.assert_allclose(out["fusion"]["classifier"]["kernel"], 3.0)
  np.testing.assert_allclose(state.coeff, [c, 1.0], rtol=1e-6)
  out, state = update(_params(), state, scores=jnp.array([3.0, 1.0]), active=False)
  np.testing.assert_allclose(out["encoders_0"]["Dense_0"]["kernel"], 1.0)
  np.testing.assert_allclose(state.coeff, 1.0)


def test_ogm_ge_ra_transform_uses_running_mean():
  tx = score_ratio.ogm_ge(0.5, num_modalities=2, noise=False, reference="running_mean")
  update = jax.jit(tx.update)
  state = tx.init(None)
  _, state = update(_params(), state, scores=jnp.array([3.0, 1.0]))   # reference 1
  np.testing.assert_allclose(state.coeff, [1 - T(1.5), 1.0], rtol=1e-6)
  _, state = update(_params(), state, scores=jnp.array([4.0, 1.0]))   # rho/mean = 4/3
  np.testing.assert_allclose(state.coeff, [1 - T(0.5 * 4 / 3), 1.0], rtol=1e-6)
  np.testing.assert_allclose(state.running_rho, [3.5, (1 / 3 + 1 / 4) / 2], rtol=1e-6)


def test_ge_noise_on_encoder_kernels_only():
  g = {"encoders_0": {"kernel": jnp.arange(2000.0).reshape(40, 50), "bias": jnp.ones(50)},
       "fusion": {"kernel": jnp.ones((5, 3))}}
  tx = modulation.ge_noise(seed=1)
  out, _ = jax.jit(tx.update)(g, tx.init(None))
  noise = out["encoders_0"]["kernel"] - g["encoders_0"]["kernel"]
  want = float(np.std(np.arange(2000.0), ddof=1))
  assert abs(float(jnp.std(noise)) / want - 1) < 0.1
  np.testing.assert_array_equal(out["encoders_0"]["bias"], 1.0)
  np.testing.assert_array_equal(out["fusion"]["kernel"], 1.0)
  same, _ = tx.update(g, tx.init(None), active=False)
  jax.tree.map(np.testing.assert_array_equal, same, g)


def test_ogm_transform_with_noise_and_pmean():
  tx = score_ratio.ogm(0.5, num_modalities=2, axis_name="d")
  scores = jnp.array([[2.0, 1.0], [4.0, 1.0]])   # two "devices": mean (3, 1)
  grads = jax.tree.map(lambda x: jnp.stack([x, x]), _params())
  out, state = jax.vmap(lambda g, s: tx.update(g, tx.init(None), scores=s), axis_name="d")(
      grads, scores)
  np.testing.assert_allclose(state.coeff, [[1 - 0.5 * T(2.0), 1.0]] * 2, rtol=1e-6)
  # GE noise: the same key on every replica, so the replicas stay identical.
  np.testing.assert_array_equal(out["encoders_0"]["Dense_0"]["kernel"][0],
                                out["encoders_0"]["Dense_0"]["kernel"][1])
  np.testing.assert_allclose(out["fusion"]["classifier"]["kernel"], 3.0)


def test_transforms_compose_in_chain_jitted():
  params = _params()
  cases = [
      (score_ratio.ogm_ge(0.1, num_modalities=2), dict(scores=jnp.array([3.0, 1.0]))),
      (score_ratio.ogm(0.8, num_modalities=2), dict(scores=jnp.array([3.0, 1.0]))),
      (epoch_tx.mslr((0.9, 1.1)), {}),
  ]
  for head, kwargs in cases:
    tx = optax.chain(head, optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    state = tx.init(params)
    step = jax.jit(lambda g, s, p, kw, tx=tx: tx.update(g, s, p, active=True, **kw))
    updates, state = step(params, state, params, kwargs)
    new = optax.apply_updates(params, updates)
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(new))
  # G-Blending: per-loss gradients stacked on a leading axis of k + 1.
  tx = optax.chain(epoch_tx.blend(2), optax.sgd(0.1))
  stacked = jax.tree.map(lambda x: jnp.stack([x, 2 * x, 3 * x]), params)
  updates, _ = jax.jit(tx.update)(stacked, tx.init(params), params)
  np.testing.assert_allclose(updates["fusion"]["classifier"]["bias"], -0.1 * 2.0, rtol=1e-6)
  # MSES wraps the optimiser.
  tx = epoch_tx.mses(optax.sgd(0.1, momentum=0.9), num_modalities=2)
  updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
  np.testing.assert_allclose(updates["encoders_1"]["Dense_0"]["kernel"], -0.2, rtol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: score_ratio.ogm_ge(-1.0, num_modalities=2),
    lambda: score_ratio.ogm_ge(0.1, num_modalities=2, reference="median"),
    lambda: score_ratio.ogm(0.1, num_modalities=1),
    lambda: score_ratio.opm(1.5, 0.5, num_modalities=2),
    lambda: epoch_tx.mslr((1.0,)),
    lambda: epoch_tx.mslr((1.0, 1.0), window=0),
])
def test_rejects_bad_hyperparameters(make):
  with pytest.raises(ValueError):
    make()


# --------------------------------------------------------------------------- epoch-level


def test_mslr_ratios_by_hand():
  tx = epoch_tx.mslr((0.9, 1.1), window=5)
  state = tx.init(None)
  accs = [(0.5, 0.2), (0.6, 0.2), (0.7, 0.4), (0.8, 0.4), (0.9, 0.3)]
  for acc in accs:            # the first `window` epochs fill the history: ratio 1
    state = epoch_tx.mslr_epoch_update(state, acc)
    np.testing.assert_allclose(state.coeff, [0.9, 1.1], rtol=1e-6)
  state = epoch_tx.mslr_epoch_update(state, (1.0, 0.15))
  np.testing.assert_allclose(state.ratio, [1.0 / 0.7, 0.15 / 0.3], rtol=1e-5)
  np.testing.assert_allclose(state.coeff, [0.9 / 0.7, 1.1 * 0.5], rtol=1e-5)
  state = epoch_tx.mslr_epoch_update(state, (0.4, 0.3))   # history 0.6 … 1.0
  np.testing.assert_allclose(state.ratio, [0.4 / 0.8, 0.3 / 0.29], rtol=1e-5)
  g, _ = tx.update(_params(), state)
  np.testing.assert_allclose(g["encoders_0"]["Dense_0"]["kernel"], 0.9 * 0.5, rtol=1e-5)
  np.testing.assert_allclose(g["fusion"]["classifier"]["kernel"], 3.0)


def test_mses_stops_and_restores_branch_by_hand():
  tx = epoch_tx.mses(optax.chain(optax.add_decayed_weights(0.1),
                                         optax.sgd(0.1, momentum=0.9)), num_modalities=2,
                     restore="modality")
  params_at = lambda e: jax.tree.map(lambda x: jnp.full_like(x, float(e)), _params())  # noqa
  state = tx.init(params_at(0))
  # smoothed: epoch 0 (1, 1); epoch 1 0.6*prev + 0.4*now = (0.92, 1.08); epoch 2 (0.84, 1.16)
  # visual's best stays epoch 0: 2 - 0 > patience 1 stops it after epoch 2.
  for epoch, loss in enumerate([(1.0, 1.0), (0.8, 1.2), (0.9, 1.1)]):
    state, params, stop = epoch_tx.mses_epoch_update(
        state, loss, epoch, params_at(epoch), patience=1)
  np.testing.assert_allclose(state.best_loss, [0.84, 1.0], rtol=1e-6)
  np.testing.assert_array_equal(state.best_epoch, [2, 0])
  np.testing.assert_array_equal(stop, [False, True])
  np.testing.assert_allclose(state.coeff, [1.0, 0.0])
  np.testing.assert_allclose(params["encoders_1"]["Dense_0"]["kernel"], 0.0)  # epoch 0's
  np.testing.assert_allclose(params["encoders_0"]["Dense_0"]["kernel"], 2.0)
  np.testing.assert_allclose(params["fusion"]["classifier"]["kernel"], 2.0)
  # A stopped branch does not move, despite momentum and weight decay.
  updates, _ = jax.jit(tx.update)(_params(), state, params)
  np.testing.assert_allclose(updates["encoders_1"]["Dense_0"]["kernel"], 0.0)
  assert float(jnp.abs(updates["encoders_0"]["Dense_0"]["kernel"]).min()) > 0


def test_gblend_weights_by_hand():
  # heads a, v, fused: dG = (0.2, 0.1, 0.2); dO = (0.3, 0.1, 0.2);
  # G/O^2 = (2.2222, 10, 5) -> normalised by 17.2222.
  w = epoch_tx.gblend_weights([1.0, 1.0, 1.0], [1.2, 1.1, 1.0],
                                      [0.5, 0.8, 0.6], [1.0, 1.0, 0.8])
  np.testing.assert_allclose(w, [2.2222222 / 17.222222, 10 / 17.222222, 5 / 17.222222],
                             rtol=1e-4)
  np.testing.assert_allclose(w, [0.129032, 0.580645, 0.290323], rtol=1e-4)
  w = epoch_tx.gblend_weights([1.0, 1.0, 1.0], [1.0, 1.0, 1.0],
                                      [0.5, 0.5, 0.5], [1.1, 0.9, 1.2])
  np.testing.assert_allclose(w, [0.0, 1.0, 0.0], atol=1e-6)   # only v generalised better
  w = epoch_tx.gblend_weights([1.0] * 3, [1.0] * 3, [0.5] * 3, [1.1] * 3)
  np.testing.assert_allclose(w, [1 / 3] * 3, rtol=1e-6)       # nobody did: uniform
  state = epoch_tx.blend(2).init(None)
  state = epoch_tx.blend_epoch_update(state, [1.0, 1.0, 1.0], [1.2, 1.1, 1.0])
  np.testing.assert_allclose(state.coeff, [1 / 3, 1 / 3])     # first measurement: uniform
  state = epoch_tx.blend_epoch_update(state, [0.5, 0.8, 0.6], [1.0, 1.0, 0.8])
  np.testing.assert_allclose(state.coeff, [0.129032, 0.580645], rtol=1e-4)
  np.testing.assert_allclose(state.fused_weight, 0.290323, rtol=1e-4)


def test_greedy_utilisation_and_schedule_by_hand():
  eye = jnp.eye(3) * 5.0
  labels = jnp.array([0, 1, 2, 0])
  # subsets 0 (none), 1 (audio), 2 (visual), 3 (both): accuracy 0, 1/4, 3/4, 1.
  preds = {0: [1, 2, 0, 1], 1: [0, 2, 0, 1], 2: [0, 1, 2, 1], 3: [0, 1, 2, 0]}
  v = jnp.stack([eye[jnp.array(preds[s])] for s in range(4)])
  u = greedy_tx.utilisation_rates(v, labels)
  np.testing.assert_allclose(u, [(1 - 0.75) / 1, (1 - 0.25) / 1])   # audio 0.25, visual 0.75
  tx = greedy_tx.greedy_schedule(0.3, 2, 0.5, num_modalities=2)
  update = jax.jit(tx.update)
  s = tx.init(None)
  _, s = update({}, s, utilisation=jnp.array([0.5, 0.4]))     # spread 0.1: normal
  np.testing.assert_allclose(s.caring, [0, 0])
  _, s = update({}, s, utilisation=jnp.array([0.9, 0.0]))     # ema (0.7, 0.2): spread 0.5
  np.testing.assert_allclose(s.util, [0.7, 0.2], rtol=1e-6)
  np.testing.assert_allclose(s.caring, [0, 1])                # re-balance visual …
  _, s = update({}, s, utilisation=jnp.array([0.9, 0.0]))
  np.testing.assert_allclose(s.caring, [0, 1])                # … for window = 2 steps
  _, s = update({}, s, utilisation=jnp.array([0.9, 0.0]))
  np.testing.assert_allclose(s.caring, [0, 0])
  _, s = update({}, s, utilisation=jnp.array([0.9, 0.0]), active=False)
  np.testing.assert_allclose(s.caring, [0, 0])                # not outside the window


# --------------------------------------------------------------------------- methods


@pytest.fixture(scope="module")
def tiny_run():
  run = loop.Run(tiny_config(method="gblending", **{"gblending.estimate": "shapley_heads"}))
  state = run.init_state()
  batch = next(run.train_batches(0))
  return run, state, batch


def test_gblending_backward_matches_per_loss_gradients(tiny_run):
  run, state, batch = tiny_run
  ctx, labels, key = run.ctx, batch["label"], jax.random.PRNGKey(0)
  inputs = {k: x for k, x in batch.items() if k != "label"}

  @jax.jit
  def compare(params):
    out = gblending.gradients(ctx, params, state.batch_stats, batch, key, True, state.opt_state)
    plain = joint.gradients(ctx, params, state.batch_stats, batch, key, True,
                            state.opt_state).updates

    def head_loss(p):   # CE of the visual head phi^v, differentiated directly
      v, _ = subsets.subset_forward(ctx.model, p, state.batch_stats, inputs, ctx.modalities,
                                    subset_bn=ctx.subsets.bn, pad=ctx.subsets.pad, key=key)
      return shapley.mono_modal_ce(shapley.responses(v), labels)[1]

    return (out.updates(jnp.array([0.0, 0.0, 1.0])), plain,
            out.updates(jnp.array([0.0, 1.0, 0.0])), jax.grad(head_loss)(params))

  fused, plain, head, want = compare(state.params)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # noqa: E731
  jax.tree.map(close, fused, plain)
  jax.tree.map(close, head, want)


def test_agm_hands_kappa_the_floored_mono_modal_ce(tiny_run):
  """agm.p_floor reaches the ce^m that kappa sees (and the train line's mono_ce/<m>); the
  loss keeps eq. 4. A floor of 0.5 caps each example's -log p at log 2."""
  run, state, batch = tiny_run
  key = jax.random.PRNGKey(0)

  @functools.partial(jax.jit, static_argnums=1)
  def step(params, p_floor):
    hp = methods.hparams(methods.get("agm"), tiny_config(**{"agm.p_floor": p_floor}))
    ctx = dataclasses.replace(run.ctx, hp=hp)
    out = agm.gradients(ctx, params, state.batch_stats, batch, key, True, state.opt_state)
    return out._replace(updates=None)   # the linear backward function is not an array

  plain, floored = step(state.params, 0.0), step(state.params, 0.5)
  for out in (plain, floored):
    np.testing.assert_allclose(out.tx_kwargs["mono_ce"],
                               [out.metrics[f"mono_ce/{m}"] for m in run.ctx.modalities])
  assert (plain.tx_kwargs["mono_ce"] > np.log(2)).any()
  assert (floored.tx_kwargs["mono_ce"] <= np.log(2) + 1e-6).all()
  assert floored.metrics["loss"] == plain.metrics["loss"]


@pytest.mark.parametrize("site", ["subsets_fn", "feature_step"])
def test_noise_pads_differ_across_devices(tiny_run, site):
  """pad="normal" under pmap: every device holds the same replicated step key, so the noise
  pads fold in the device index (``subsets.device_key``) and example i of each device gets
  its own; one device draws as before. A named ``vmap`` stands in for the devices."""
  run, state, batch = tiny_run
  ctx = dataclasses.replace(run.ctx, subsets=subsets.Settings(pad="normal"))
  keys = jnp.stack([jax.random.PRNGKey(1)] * 2)   # replicated, as the train step's

  def masked_rows(key, axis_name):
    c = dataclasses.replace(ctx, axis_name=axis_name)
    if site == "subsets_fn":
      return methods.base.subsets_fn(c, state.batch_stats, batch, key)(state.params)[0][:-1]

    def objective(p, feats, fuse):
      logits, stats = fuse(feats)
      return (shapley.cross_entropy(logits, batch["label"]).mean(),
              branches.Objective(logits, stats, True))

    metrics = branches.feature_step(c, state.params, state.batch_stats, batch, key,
                                    objective).metrics
    return jnp.stack([metrics[f"mono_ce/{m}"] for m in c.modalities])

  folded = jax.jit(jax.vmap(lambda k: masked_rows(k, "d"), axis_name="d"))(keys)
  assert not np.allclose(folded[0], folded[1])
  one = jax.jit(lambda k: masked_rows(k, None))(keys[0])
  shared = jax.jit(jax.vmap(lambda k: masked_rows(k, None)))(keys)
  np.testing.assert_array_equal(shared[0], shared[1])
  np.testing.assert_allclose(one, shared[0], rtol=1e-6)


@pytest.mark.parametrize("name", ["mslr", "mses"])
@pytest.mark.parametrize("split", ["val", "test"])
def test_epoch_rule_reads_the_configured_split(name, split):
  """MSLR's accuracies and MSES's losses come from ``<name>.split``: "val" (the default) or
  "test" (the released CREMA-D and AV-MNIST mains feed them from test_dataloader)."""
  import flax  # noqa: PLC0415

  @flax.struct.dataclass
  class State:
    params: dict
    opt_state: object

  method = methods.get(name)
  hp = methods.hparams(method, tiny_config(method=name, **{f"{name}.split": split}))
  ctx = methods.Context(model=None, modalities=("audio", "visual"), hp=hp)
  params = {"encoders_0": {"kernel": jnp.ones(2)}, "encoders_1": {"kernel": jnp.ones(2)}}
  state = State(params, method.make_tx(ctx, optax.sgd(0.1)).init(params))
  asked = []

  def evaluate(s):
    asked.append(s)
    return {"acc/audio": 0.5, "acc/visual": 0.25, "mono_ce/audio": 1.0,
            "mono_ce/visual": 2.0}, None, None

  method.epoch_end(ctx, state, 0, evaluate)
  assert asked == [split]


def test_epoch_rule_split_is_checked():
  for name in ("mslr", "mses"):
    with pytest.raises(ValueError, match=rf"{name}.split must be one of \['val', 'test'\]"):
      methods.hparams(methods.get(name), tiny_config(**{f"{name}.split": "dep"}))


def test_every_method_is_registered():
  for name in NEW_METHODS:
    assert name in methods.NAMES
    assert methods.get(name).name == name


def _code(source: str) -> str:
  """``source``'s syntax tree without its module docstring (comments and layout ignored)."""
  tree = ast.parse(source)
  body = tree.body
  if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
    body = body[1:]
  return ast.dump(ast.Module(body=body, type_ignores=[]))


def test_the_worked_example_is_the_real_method_file():
  """docs/ARCHITECTURE.md's "Adding a method" block is agm_jax/methods/agm_1.py, the same code
  (docstring, comments and layout aside): the example a contributor copies is one that runs."""
  block = doc_block(os.path.join("docs", "ARCHITECTURE.md"), "## Adding a method")
  assert block.startswith("# agm_jax/methods/agm_1.py\n")
  with open(os.path.join(ROOT, "agm_jax", "methods", "agm_1.py")) as f:
    assert _code(block) == _code(f.read())


@pytest.mark.parametrize("name", ["ogm_ge", "ogm", "opm", "mslr", "mses", "gblending",
                                  "greedy_util"])
def test_separable_methods_reject_input_early(name):
  with pytest.raises(ValueError, match="needs per-modality branches"):
    loop.Run(tiny_config(method=name, **{"model.fusion": "input_early"}))


@pytest.mark.parametrize("name", ["ogm_ge", "ogm_ge_ra", "ogm", "opm"])
def test_unimodal_logit_methods_name_supported_fusions(name):
  with pytest.raises(ValueError, match="supported fusions: sum, concat"):
    loop.Run(tiny_config(method=name, **{"model.fusion": "maxout"}))


def test_mslr_init_must_match_modalities():
  c = tiny_config(method="mslr")
  c.mslr.init = (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="mslr.init has 3 values"):
    loop.Run(c)


LOGGED = {"agm_1": "kappa", "agm_ge": "kappa", "ogm_ge": "coeff", "ogm_ge_ra": "coeff",
          "ogm": "coeff", "opm": "drop_prob", "opm_ogm": "drop_prob", "mslr": "coeff",
          "mses": "coeff", "gblending": "coeff", "greedy_util": "util", "moddrop": "drop_rate",
          "feature_dropout": "drop_rate"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NEW_METHODS if n != "greedy"])  # greedy: MMTM
def test_one_epoch_of_every_method(tmp_path, name):
  c = tiny_config(method=name, num_epochs=1, checkpoint_every_steps=0)
  c.data.synthetic_options = dict(c.data.synthetic_options, num_train=128, num_dep=64,
                                  num_test=64)
  summary = loop.train_and_evaluate(c, str(tmp_path))
  final = summary["final"]
  assert 0.0 <= final["acc"] <= 1.0 and np.isfinite(final["loss"])
  assert {"acc/audio", "acc/visual"} <= set(final)
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    train = [json.loads(x) for x in f if '"train"' in x]
  for m in ("audio", "visual"):
    assert all(np.isfinite(line[f"{LOGGED[name]}/{m}"]) for line in train), name


def test_method_state_survives_a_checkpoint(tmp_path):
  from agm_jax.train.checkpoint import Checkpointer  # noqa: PLC0415
  params = _params()
  tx = epoch_tx.mses(optax.chain(epoch_tx.mslr((0.9, 1.1), window=1),
                                         epoch_tx.blend(2), optax.sgd(0.1)),
                             num_modalities=2)
  target = tx.init(params)
  state, _, _ = epoch_tx.mses_epoch_update(target, (0.5, 0.7), 0, params, patience=1)
  inner = list(state.inner)
  inner[0] = epoch_tx.mslr_epoch_update(epoch_tx.mslr_epoch_update(
      inner[0], (0.5, 0.4)), (0.6, 0.2))
  inner[1] = epoch_tx.blend_epoch_update(inner[1], (1.0, 1.0, 1.0), (1.2, 1.1, 1.0))
  state = state._replace(inner=tuple(inner))
  ckpt = Checkpointer(str(tmp_path))
  ckpt.save(1, state)
  restored, step = ckpt.restore(target)
  ckpt.close()
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  np.testing.assert_allclose(optax.tree_utils.tree_get(restored.inner, "ratio"), [1.2, 0.5],
                             rtol=1e-6)


def test_hyper_parameters_come_from_one_section():
  """A method's section becomes typed hyper-parameters once; a stale or misspelt key, or a
  missing one, is an error naming the key."""
  c = tiny_config(method="agm")
  hp = methods.hparams(methods.get("agm"), c)
  assert (hp.alpha, hp.clip, hp.reference) == (1.0, 10.0, "running_mean")
  assert methods.window(hp).active(0) and not methods.window(
      methods.hparams(methods.get("agm"), tiny_config(**{"agm.end_epoch": 3}))).active(4)
  assert methods.window(methods.hparams(methods.get("joint"), c)) is None
  with pytest.raises(ValueError, match="alhpa is not a setting of this method"):
    methods.from_section(type(hp), dict(alpha=1.0, alhpa=2.0, clip=1.0, reference="one",
                                        outside="one", p_floor=0.0, start_epoch=0,
                                        end_epoch=1))
  with pytest.raises(ValueError, match="clip is missing"):
    methods.from_section(type(hp), dict(alpha=1.0, reference="one", outside="one",
                                        p_floor=0.0, start_epoch=0, end_epoch=1))
  with pytest.raises(ValueError, match="opm.p_exe must be in"):
    methods.hparams(methods.get("opm"), tiny_config(**{"opm.p_exe": 1.5}))
  for name in ("agm", "agm_1", "agm_ge"):
    with pytest.raises(ValueError, match=rf"{name}.p_floor must be in \[0, 1\), got 1.0"):
      methods.hparams(methods.get(name), tiny_config(**{f"{name}.p_floor": 1.0}))


def test_every_method_honours_the_subsets_section(monkeypatch):
  """Every method that runs masked passes runs them as the `subsets` section says (traced
  with eval_shape: nothing compiles). The section carries a marker mode that no code could
  hard-code ("eval"-like for the passes), so a method that ignored the section and passed
  "eval" or "batch" itself would show up."""
  bn = "marker"
  monkeypatch.setattr(subsets, "SUBSET_BN", (*subsets.SUBSET_BN, bn))
  seen = []
  real = subsets.masked_train_mode
  monkeypatch.setattr(subsets, "masked_train_mode",
                      lambda train, mode, stats: seen.append(mode) or
                      real(train, "eval" if mode == bn else mode, stats))
  data = data_pipelines.load(tiny_config().data)
  for name in methods.NAMES:
    if name == "unimodal":   # one modality: no masked passes
      continue
    if name == "greedy":     # the MMTM model on images (tests/test_greedy.py)
      continue
    seen.clear()
    run = loop.Run(tiny_config(method=name, **{"subsets.bn": bn}), dataset=data)
    state = jax.eval_shape(run.init_state)
    batch = next(run.train_batches(0))
    jax.eval_shape(lambda s, b: run.method.gradients(run.ctx, s.params, s.batch_stats, b,
                                                     s.rng, True, s.opt_state).metrics,
                   state, batch)
    assert seen and set(seen) == {bn}, (name, seen)
