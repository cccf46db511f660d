"""G-Blending (methods/gblending.py, transforms/epoch.py): the weight formula by hand, the
uni-modal copies' estimate through the epoch-end hook, and a short run."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agm_jax import shapley, subsets
from agm_jax.methods import gblending
from agm_jax.methods.base import Copies, find_state
from agm_jax.train import loop
from agm_jax.transforms import epoch as epoch_tx
from tests.conftest import tiny_config


def test_weights_by_hand():
  # heads a, v, fused: G = L^dep_n - L^dep_{n+N}; dO = (d1 - t1) - (d0 - t0); w ∝ G / dO^2
  t0, d0 = [1.0, 1.0, 1.0], [1.2, 1.0, 1.0]
  t1, d1 = [0.6, 0.7, 0.5], [1.0, 0.8, 0.9]
  # a: G 0.2, dO 0.4 - 0.2 = 0.2 -> 5; v: G 0.2, dO 0.1 -> 20; fused: G 0.1, dO 0.4 -> 0.625
  want = np.array([5.0, 20.0, 0.625]) / 25.625
  np.testing.assert_allclose(epoch_tx.gblend_weights(t0, d0, t1, d1), want, rtol=1e-5)
  np.testing.assert_allclose(epoch_tx.gblend_weights(t0, d0, t1, d1, gain="abs"), want,
                             rtol=1e-5)


def test_weights_when_the_held_out_loss_rises():
  # a: G = -0.1, dO = 0.6 - 0 = 0.6; v: G 0.2, dO 0.1; fused: G 0.1, dO 0.4
  t0, d0, t1, d1 = [1.0] * 3, [1.0] * 3, [0.5, 0.7, 0.5], [1.1, 0.8, 0.9]
  clip = epoch_tx.gblend_weights(t0, d0, t1, d1)      # max(G, 0): a gets 0
  np.testing.assert_allclose(clip, np.array([0.0, 20.0, 0.625]) / 20.625, rtol=1e-5)
  absolute = epoch_tx.gblend_weights(t0, d0, t1, d1, gain="abs")   # |G| (BalanceBenchmark)
  raw = np.array([0.1 / 0.36, 20.0, 0.625])
  np.testing.assert_allclose(absolute, raw / raw.sum(), rtol=1e-5)
  # no head generalised better: uniform; dO = 0: finite (eps), that head takes ~all
  np.testing.assert_allclose(epoch_tx.gblend_weights(t0, d0, [0.5] * 3, [1.1] * 3),
                             [1 / 3] * 3, rtol=1e-6)
  w = epoch_tx.gblend_weights(t0, d0, [0.9, 0.5, 0.5], [0.9, 0.9, 0.9])
  assert np.all(np.isfinite(w)) and w[0] > 0.999
  with pytest.raises(ValueError, match="gain must be one of"):
    epoch_tx.gblend_weights(t0, d0, t1, d1, gain="relu")


class FakeCopies:
  """``Copies`` whose copies are labels: head h's copy has the given losses after training."""

  def __init__(self, before, after, num_epochs=10):
    self.before, self.after, self.calls = before, after, []
    heads = {gblending.copy_gradients(h): h for h in range(3)}
    self.copies = Copies(
        lambda state, fn, epochs, **kw: self.calls.append((heads[fn], epochs, kw)) or heads[fn],
        self.evaluate, num_epochs)

  def evaluate(self, state, fn, split):
    assert fn is gblending.heads_evaluate
    t, d = self.before if not isinstance(state, int) else self.after
    losses = t if split == "train" else d
    return {"mono_ce/audio": losses[0], "mono_ce/visual": losses[1], "loss": losses[2]}


@pytest.fixture(scope="module")
def run():
  return loop.Run(tiny_config(method="gblending", **{"gblending.super_epoch": 2}))


def test_an_overfitting_modality_gets_the_smaller_weight(run):
  # audio overfits (train 1.0 -> 0.5, dep 1.0 -> 1.1); visual generalises (0.8, 0.85).
  before = ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
  after = ([0.5, 0.8, 0.6], [1.1, 0.85, 0.9])
  fake = FakeCopies(before, after)
  state = run.init_state()
  blend = find_state(state.opt_state, epoch_tx.BlendState)
  np.testing.assert_allclose(blend.coeff, [1 / 3, 1 / 3])
  same = gblending.epoch_end(run.ctx, state, 0, None, copies=fake.copies)   # mid super-epoch
  assert same is state and not fake.calls
  state = gblending.epoch_end(run.ctx, state, 1, None, copies=fake.copies)
  assert [c[:2] for c in fake.calls] == [(0, 2), (1, 2), (2, 2)]
  assert fake.calls[0][2] == {"first_epoch": 2, "fresh_optimizer": False}
  blend = find_state(state.opt_state, epoch_tx.BlendState)
  # audio G -0.1 -> 0; visual G 0.15, dO 0.05 -> 60; fused G 0.1, dO 0.3 -> 1/0.9
  raw = np.array([0.0, 60.0, 1 / 0.9])
  np.testing.assert_allclose(np.append(blend.coeff, blend.fused_weight), raw / raw.sum(),
                             rtol=1e-4)
  assert int(blend.measured) == 1
  last = FakeCopies(before, after, num_epochs=4)   # after the run's last epoch: no estimate
  assert gblending.epoch_end(run.ctx, state, 3, None, copies=last.copies) is state


def test_copies_gradient_is_the_head_loss_gradient(run):
  ctx, state = run.ctx, run.init_state()
  batch = next(run.train_batches(0))
  labels, key = batch["label"], jax.random.PRNGKey(0)
  inputs = {k: x for k, x in batch.items() if k != "label"}

  @jax.jit
  def compare(params):
    got = gblending.copy_gradients(1)(ctx, params, state.batch_stats, batch, key, True,
                                      state.opt_state).updates(None)

    def visual_only(p):   # CE of V[{visual}] (row 2), differentiated directly
      v, _ = subsets.subset_forward(ctx.model, p, state.batch_stats, inputs, ctx.modalities,
                                    subset_bn=ctx.subsets.bn, pad=ctx.subsets.pad, key=key)
      return shapley.cross_entropy(v[2].astype(jnp.float32), labels).mean()

    return got, jax.grad(visual_only)(params)

  got, want = compare(state.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got, want)


def test_short_run_estimates_from_unimodal_copies(tmp_path):
  c = tiny_config(method="gblending", num_epochs=2, checkpoint_every_steps=0,
                  **{"gblending.super_epoch": 1})
  _, state, summary = loop.fit(c, str(tmp_path))
  blend = find_state(state.opt_state, epoch_tx.BlendState)
  w = np.append(blend.coeff, blend.fused_weight)
  assert int(blend.measured) == 1   # after epoch 0; none after the last epoch
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)
  assert np.all(w >= 0) and not np.allclose(w, 1 / 3)
  assert np.isfinite(summary["final"]["loss"])


def test_resume_mid_super_epoch_is_exact(tmp_path):
  """The estimate's weights are in the checkpointed optimiser state: a run resumed from a
  mid-epoch checkpoint (step 12 of 16, after the estimate at step 8) ends where one run does."""
  c = tiny_config(method="gblending", num_epochs=2, checkpoint_every_steps=12,
                  **{"gblending.super_epoch": 1})
  _, whole, _ = loop.fit(c, str(tmp_path / "a"))
  ckpts = tmp_path / "a" / "checkpoints"
  assert {"8", "12", "16"} <= set(os.listdir(ckpts))
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "16")
  _, resumed, _ = loop.fit(c, str(tmp_path / "b"))
  jax.tree.map(np.testing.assert_array_equal, resumed.params, whole.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, whole.opt_state)
