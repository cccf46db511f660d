"""The AGM paper's baselines as its released code runs them (issue 15 item 6): OGM-GE's scope,
MSLR's coefficient sequence, MSES's smoothing, stop epoch, restore and run end — against
hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agm_jax.methods import base, mses, mslr
from agm_jax.models import fusion
from agm_jax.train import loop
from agm_jax.train.state import TrainState
from agm_jax.transforms import epoch as epoch_tx
from agm_jax.transforms import partition, score_ratio
from tests.conftest import tiny_config


def _leaf(*shape):
  return jnp.arange(1.0, 1.0 + np.prod(shape)).reshape(shape)   # distinct values: std > 0


def _tree():
  """Two ResNet-like encoders (a 4-D conv kernel, a BatchNorm scale, a Dense kernel and
  bias) and a sum head with one classifier block per modality."""
  def encoder():
    return {"stem_conv": {"kernel": _leaf(3, 3, 1, 2)}, "stem_bn": {"scale": _leaf(2)},
            "Dense_0": {"kernel": _leaf(2, 4), "bias": _leaf(4)}}
  head = {f"classifier_{i}": {"kernel": _leaf(4, 3), "bias": _leaf(3)} for i in (0, 1)}
  return {"encoders_0": encoder(), "encoders_1": encoder(), "fusion": head}


def _ratio(out, tree):
  """Per leaf: the one factor ``out = f * tree``, or NaN when there is none (noise)."""
  def one(a, b):
    f = np.asarray(a) / np.asarray(b)
    return float(f.flat[0]) if np.allclose(f, f.flat[0], rtol=1e-6) else float("nan")
  return jax.tree.map(one, out, tree)


def _paths(tree, pick):
  return sorted(jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(tree)
                if pick(p, x))


ENC0 = ["['encoders_0']['Dense_0']['bias']", "['encoders_0']['Dense_0']['kernel']",
        "['encoders_0']['stem_bn']['scale']", "['encoders_0']['stem_conv']['kernel']"]
CLS0 = ["['fusion']['classifier_0']['bias']", "['fusion']['classifier_0']['kernel']"]


# --------------------------------------------------------------------------- OGM-GE scope


@pytest.mark.parametrize("scope, scaled, noised", [
    ("conv", ["['encoders_0']['stem_conv']['kernel']"],
     ["['encoders_0']['stem_conv']['kernel']"]),
    ("encoder", ENC0, ENC0),
    ("branch", sorted(ENC0 + CLS0), sorted(ENC0 + CLS0)),
    ("mixed", ENC0, ["['encoders_0']['Dense_0']['kernel']",
                     "['encoders_0']['stem_conv']['kernel']"]),
])
def test_ogm_ge_scope_picks_the_leaves(scope, scaled, noised):
  tree = _tree()
  assert _paths(tree, lambda p, x: partition.scope_index(p, x, scope) == 0) == scaled
  assert _paths(tree, lambda p, x: partition.scope_index(p, x, scope, noise=True) == 0) == noised
  # The transform: audio dominant (scores 3, 1), alpha 0.5 -> audio's coefficient 1 - tanh(1.5).
  tx = score_ratio.ogm_ge(0.5, num_modalities=2, noise=False, scope=scope)
  out, _ = jax.jit(tx.update)(tree, tx.init(tree), scores=jnp.array([3.0, 1.0]))
  c = 1 - np.tanh(1.5)
  ratio = _ratio(out, tree)
  every = _paths(tree, lambda p, x: True)
  assert _paths(ratio, lambda p, f: np.isclose(f, c, rtol=1e-6)) == scaled
  assert _paths(ratio, lambda p, f: f == 1.0) == sorted(set(every) - set(scaled))
  # GE noise lands exactly on the noised leaves, of both modalities.
  tx = score_ratio.ogm_ge(0.5, num_modalities=2, noise=True, scope=scope)
  out, _ = jax.jit(tx.update)(tree, tx.init(tree), scores=jnp.array([3.0, 1.0]))
  moved = _paths(_ratio(out, tree), lambda p, f: np.isnan(f))
  other = [n.replace("encoders_0", "encoders_1").replace("classifier_0", "classifier_1")
           for n in noised]
  assert moved == sorted(noised + other)


def test_conv_scope_needs_conv_kernels_and_sum_head_names_blocks():
  mlp_only = {"encoders_0": {"kernel": jnp.ones((2, 2))}, "encoders_1": {"kernel": jnp.ones(2)}}
  with pytest.raises(ValueError, match="scope 'conv' selects no parameter of modality 0"):
    score_ratio.ogm_ge(0.1, num_modalities=2, scope="conv").init(mlp_only)
  with pytest.raises(ValueError, match="scope 'convs' is unknown"):
    score_ratio.ogm_ge(0.1, num_modalities=2, scope="convs")
  # "branch" relies on SumFusion naming modality i's block classifier_<i>.
  shapes = jax.eval_shape(lambda: fusion.SumFusion(3).init(
      jax.random.PRNGKey(0), (jnp.ones((1, 4)), jnp.ones((1, 5))), False))
  assert [partition.branch_index(("fusion", name)) for name in shapes["params"]] == [0, 1]


# --------------------------------------------------------------------------- MSLR


def test_mslr_coefficients_over_seven_epochs():
  audio = [0.50, 0.55, 0.60, 0.65, 0.70, 0.72, 0.54]
  visual = [0.30, 0.40, 0.35, 0.45, 0.50, 0.40, 0.60]
  # Epochs 1-5 fill the memory (ratio 1); epoch 6: acc / mean(epochs 1-5) = 0.72/0.60, 0.40/0.40;
  # epoch 7: acc / mean(epochs 2-6) = 0.54/0.644, 0.60/0.42.
  want = [(0.9, 1.1)] * 5 + [(0.9 * 1.2, 1.1), (0.9 * 0.54 / 0.644, 1.1 * 0.60 / 0.42)]
  tx = epoch_tx.mslr((0.9, 1.1), window=5, scope="branch")
  state = tx.init(None)
  for a, v, w in zip(audio, visual, want):
    state = epoch_tx.mslr_epoch_update(state, (a, v))
    np.testing.assert_allclose(state.coeff, w, rtol=1e-5)
  np.testing.assert_allclose(want[-1], (0.754658, 1.571429), rtol=1e-5)
  ratio = _ratio(tx.update(_tree(), state)[0], _tree())
  np.testing.assert_allclose(ratio["fusion"]["classifier_0"]["kernel"], 0.754658, rtol=1e-5)
  np.testing.assert_allclose(ratio["encoders_1"]["stem_bn"]["scale"], 1.571429, rtol=1e-5)
  ratio = _ratio(tx.update(_tree(), state, active=False)[0], _tree())   # outside the window
  assert set(jax.tree.leaves(ratio)) == {1.0}
  # The default scope leaves the head's blocks alone.
  tx = epoch_tx.mslr((0.5, 2.0))
  ratio = _ratio(tx.update(_tree(), tx.init(None))[0], _tree())
  assert ratio["fusion"]["classifier_0"]["kernel"] == 1.0
  assert ratio["encoders_0"]["stem_conv"]["kernel"] == 0.5


# --------------------------------------------------------------------------- MSES

# patience 2, weight 0.4. audio raw 1.0, 0.5, 1.5, 1.5, 1.0: smoothed 1.0, 0.8, 0.9 (0.6 * the
# previous RAW 0.5 + 0.4 * 1.5; the previous smoothed would give 1.08), 1.5, 1.3 -> best epoch
# 1; after epoch 3, 3 - 1 = 2 is not > 2; after epoch 4 it stops. visual raw 1.0, 0.9, 0.8, 0.7,
# 0.6, then 2.0: smoothed 1.0, 0.96, 0.86, 0.76, 0.66, 1.16, 2.0, 2.0 -> best epoch 4, stops
# after epoch 7, and then every branch has stopped.
AUDIO = [1.0, 0.5, 1.5, 1.5, 1.0, 2.0, 2.0, 2.0]
VISUAL = [1.0, 0.9, 0.8, 0.7, 0.6, 2.0, 2.0, 2.0]
SMOOTHED_A = [1.0, 0.8, 0.9, 1.5, 1.3]
SMOOTHED_V = [1.0, 0.96, 0.86, 0.76, 0.66, 1.16, 2.0, 2.0]


def _fill(tree, value):
  return jax.tree.map(lambda x: jnp.full_like(x, value), tree)


def test_mses_smoothing_stop_epoch_restore_and_run_end():
  tx = epoch_tx.mses(optax.sgd(0.1, momentum=0.9), num_modalities=2)   # restore="model"
  state = tx.init(_tree())
  update = jax.jit(epoch_tx.mses_epoch_update, static_argnames=("patience", "weight"))
  stops = []
  for epoch in range(8):
    # The state after `epoch`: every parameter and the momentum equal the epoch number.
    state = state._replace(inner=_fill(state.inner, epoch))
    before = state
    state, params, stop = update(state, (AUDIO[epoch], VISUAL[epoch]), epoch,
                                 _fill(_tree(), epoch), patience=2)
    stops.append(np.asarray(stop).tolist())
    if epoch < 5:    # the best smoothed loss so far (0.86 after epoch 2: the previous RAW)
      np.testing.assert_allclose(state.best_loss, [min(SMOOTHED_A[:epoch + 1]),
                                                   min(SMOOTHED_V[:epoch + 1])], rtol=1e-6)
    if epoch == 3:
      assert np.asarray(state.coeff).tolist() == [1.0, 1.0]    # best + patience: not yet
    if epoch == 4:   # audio stops: the whole state of its best epoch 1 comes back
      np.testing.assert_array_equal(state.best_epoch, [1, 4])
      np.testing.assert_allclose(state.best_loss, [0.8, 0.66], rtol=1e-6)
      jax.tree.map(lambda x: np.testing.assert_array_equal(x, 1.0), params)
      jax.tree.map(lambda x: np.testing.assert_array_equal(x, 1.0), state.inner[0].trace)
      # visual's snapshot is epoch 4's state before the restore (saved first, as released).
      jax.tree.map(lambda x: np.testing.assert_array_equal(x, 4.0), state.best_params[1])
      assert not bool(state.run_finished)
    if epoch == 7:
      jax.tree.map(lambda x: np.testing.assert_array_equal(x, 4.0), params)
      jax.tree.map(lambda x: np.testing.assert_array_equal(x, 4.0), state.inner[0].trace)
      assert bool(state.run_finished)
      done = lambda s: loop.run_finished(TrainState(  # noqa: E731
          step=0, params=params, batch_stats={}, opt_state=(s, optax.EmptyState()), rng=0))
      assert done(state) and not done(before)
  np.testing.assert_allclose(state.best_loss, [0.8, 0.66], rtol=1e-6)
  assert stops == [[False, False]] * 4 + [[True, False]] + [[False, False]] * 2 + [[False, True]]
  np.testing.assert_allclose(state.last_loss, [2.0, 2.0])


@pytest.mark.parametrize("freeze, moves", [("update", False), ("gradient", True)])
def test_mses_freeze_and_window(freeze, moves):
  tx = epoch_tx.mses(optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1, momentum=0.9)),
                     num_modalities=2, restore="modality", freeze=freeze, scope="branch")
  state = tx.init(_tree())
  state = state._replace(coeff=jnp.array([0.0, 1.0]), inner=_fill(state.inner, 1.0))
  out, _ = tx.update(_tree(), state, _tree())
  # A stopped branch: zero gradient; momentum 1 and weight decay would still move it.
  assert bool(jnp.any(out["fusion"]["classifier_0"]["kernel"] != 0)) == moves
  assert bool(jnp.any(out["encoders_0"]["stem_conv"]["kernel"] != 0)) == moves
  # A training branch: g + 0.1 p (here p = g) plus momentum 0.9 * 1, times -lr.
  want = -0.1 * (0.9 + 1.1 * _leaf(2))
  np.testing.assert_allclose(out["encoders_1"]["stem_bn"]["scale"], want, rtol=1e-6)
  out, _ = tx.update(_tree(), state, _tree(), active=False)   # outside the window: trains
  np.testing.assert_allclose(out["encoders_0"]["stem_bn"]["scale"], want, rtol=1e-6)


def test_mses_method_epoch_end_restores_the_train_state():
  hp = mses.hparams(dict(patience=1, weight=0.4, restore="model", freeze="update",
                         scope="encoder", mono="shapley", split="val", start_epoch=0,
                         end_epoch=9))
  ctx = base.Context(model=None, modalities=("audio", "visual"), hp=hp)
  tx = epoch_tx.mses(optax.sgd(0.1, momentum=0.9), num_modalities=2)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=_tree(), batch_stats={},
                     opt_state=tx.init(_tree()), rng=jnp.zeros(2))
  for epoch, (a, v) in enumerate([(1.0, 1.0), (2.0, 2.0), (2.0, 2.0)]):
    state = state.replace(params=_fill(_tree(), epoch + 1))
    metrics = {"mono_ce/audio": a, "mono_ce/visual": v}
    state = mses.epoch_end(ctx, state, epoch, lambda split, m=metrics: (m, None, None))
  # Both best at epoch 0 (params 1); after epoch 2, 2 - 0 > 1: both stop, epoch 0 restored.
  jax.tree.map(lambda x: np.testing.assert_array_equal(x, 1.0), state.params)
  assert loop.run_finished(state)
  with pytest.raises(ValueError, match="mono 'logits' is unknown"):
    mslr.hparams(dict(init=(), window=5, scope="encoder", mono="logits", split="val",
                      start_epoch=0, end_epoch=1))


def test_run_ends_when_every_branch_has_stopped(tmp_path, monkeypatch):
  """The loop reads the flag: a 3-epoch run whose branches all stop after epoch 0 ends there,
  and a resumed run stays ended. Also runs the released reading end to end (sum head,
  ``scope="branch"``, uni-modal logits)."""
  real = mses._epoch_update

  def stop_all(*args, **kwargs):
    new, params, stop = real(*args, **kwargs)
    return new._replace(coeff=new.coeff * 0, run_finished=jnp.array(True)), params, stop

  monkeypatch.setattr(mses, "_epoch_update", stop_all)
  c = tiny_config(method="mses", num_epochs=3, checkpoint_every_steps=0,
                  **{"model.fusion": "sum", "mses.scope": "branch", "mses.mono": "unimodal"})
  summary = loop.train_and_evaluate(c, str(tmp_path))
  assert summary["final"]["epoch"] == 0 and summary["steps"] == 8
  assert np.isfinite(summary["final"]["mono_ce/audio"])
  assert loop.train_and_evaluate(c, str(tmp_path))["steps"] == 8
