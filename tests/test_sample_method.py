"""The ``sample`` method (Wei et al., CVPR 2024, sample-level modality valuation;
agm_jax/methods/sample.py).

Its rules by hand: the per-example Shapley contributions against a brute-force computation
(itertools over the subsets, hand-written Shapley weights) for both benefits and k = 2, 3;
the sample-level copy thresholds; the modality-level gap rule (authors' and toolkit's); the
weighted loss; the epoch estimate kept in the optimiser state. End to end: a 2-epoch run on
the tiny default config per level (the loss, the logged estimate), exact resume after a kill
(tests/test_seeds.py's trick), and one jitted step with k = 3 equal to the eager one.
"""

import itertools
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agm_jax import methods
from agm_jax.methods import sample
from agm_jax.train import loop
from agm_jax.transforms import carry as carry_tx
from configs import npz_mlp
from tests.conftest import read_lines, tiny_config, write_k3_npz

# --------------------------------------------------------------------------- rules by hand


def _brute_force(correct, k, variant):
  """``(k, B)`` Shapley values from a ``(2**k, B)`` correctness table by enumeration."""
  def value(subset, i):
    if not subset:
      return 0.0
    row = sum(1 << m for m in subset)
    return float(correct[row, i]) * (len(subset) if variant == "authors" else 1.0)

  out = np.zeros((k, correct.shape[1]))
  for m in range(k):
    others = [n for n in range(k) if n != m]
    for size in range(k):
      weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
      for subset in itertools.combinations(others, size):
        for i in range(correct.shape[1]):
          out[m, i] += weight * (value((*subset, m), i) - value(subset, i))
  return out


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("variant", sample.VARIANTS)
def test_contributions_against_brute_force(k, variant):
  rng = np.random.default_rng(k)
  v = rng.normal(size=(2 ** k, 12, 3)).astype(np.float32)
  labels = rng.integers(0, 3, 12)
  phi = sample.sample_contributions(jnp.asarray(v), jnp.asarray(labels), variant)
  correct = v.argmax(-1) == labels[None]
  np.testing.assert_allclose(phi, _brute_force(correct, k, variant), atol=1e-6)
  full = correct[-1] * (k if variant == "authors" else 1)   # efficiency: sum_m phi = v(M)
  np.testing.assert_allclose(np.asarray(phi).sum(0), full, atol=1e-6)


def test_contributions_by_hand_two_modalities():
  # rows: {}, {a}, {v}, {a, v}; example 0 right everywhere, 1 only by a, 2 only jointly.
  correct = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 1]], bool)
  v = np.where(correct[..., None], np.eye(2)[0], np.eye(2)[1]).astype(np.float32)
  labels = jnp.zeros(3, jnp.int32)
  # authors: phi_a = (v(a) + v(av) - v(v)) / 2 with v(av) = 2 when right (sample_level.py).
  np.testing.assert_allclose(sample.sample_contributions(jnp.asarray(v), labels, "authors"),
                             [[1.0, 0.5, 1.0], [1.0, -0.5, 1.0]])
  np.testing.assert_allclose(sample.sample_contributions(jnp.asarray(v), labels, "toolkit"),
                             [[0.5, 0.5, 0.5], [0.5, -0.5, 0.5]])


def test_sample_copies_by_hand():
  phi = jnp.asarray([[-0.5, -0.1, 0.0, 0.4, 0.5, 0.95, 1.0, 1.5]])
  # both codes: 3 below -0.1, 2 in (-0.1, 0.4), 1 in (0.4, 1); the bounds themselves none
  np.testing.assert_array_equal(sample.sample_copies(phi), [[3, 0, 2, 0, 1, 1, 0, 0]])


def test_modality_copies_by_hand():
  # k = 2, phi = (0.8, 0.2): gaps (0.2, 0.8); authors d = (2/3) 0.6 on {v} (row 2).
  np.testing.assert_allclose(sample.modality_copies(jnp.asarray([0.8, 0.2]), 1.0, "authors"),
                             [0, 0, 0.4, 0], atol=1e-6)
  # toolkit: ordered pairs (2/3) 1.2 = 0.8, one copy per modality: {v} and {a, v}.
  np.testing.assert_allclose(sample.modality_copies(jnp.asarray([0.8, 0.2]), 1.0, "toolkit"),
                             [0, 0, 0.8, 0.8], atol=1e-6)
  # k = 3, phi = (1, 0.5, 0): gaps (0, 0.5, 1); pairs 0.5 + 1 + 0.5 = 2, / (k-1), alpha 0.5.
  phi3 = jnp.asarray([1.0, 0.5, 0.0])
  np.testing.assert_allclose(sample.modality_copies(phi3, 0.5, "authors"),
                             [0, 0, 0, 0, 1 / 3, 0, 0, 0], atol=1e-6)
  np.testing.assert_allclose(sample.modality_copies(phi3, 0.5, "toolkit"),
                             [0, 0, 0, 0, 2 / 3, 0, 2 / 3, 2 / 3], atol=1e-6)
  # balanced: no copies.
  np.testing.assert_allclose(sample.modality_copies(jnp.asarray([0.6, 0.6]), 1.0, "authors"),
                             np.zeros(4), atol=1e-7)


def test_loss_by_hand():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(4, 3, 5)).astype(np.float32)
  labels = np.array([0, 3, 1])
  w = np.zeros((4, 3), np.float32)
  w[1, 0], w[2, 2], w[3, 1] = 2.0, 1.0, 0.5
  logp = v - np.log(np.exp(v).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, labels[None, :, None], -1)[..., 0]        # (4, 3)
  expected = (ce[-1].sum() + (w * ce).sum()) / (3 + w.sum())
  got = sample.loss(jnp.asarray(v), jnp.asarray(labels), jnp.asarray(w))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  plain = sample.loss(jnp.asarray(v), jnp.asarray(labels), jnp.zeros((4, 3)))
  np.testing.assert_allclose(plain, ce[-1].mean(), rtol=1e-5)


def test_copy_weights_by_hand():
  hp = sample.HParams("sample", "authors", 1.0, 0.2, sample.Window(0, 9))
  phi = jnp.asarray([[-0.5, 1.0], [0.5, 0.0]])
  state = sample.init_state(2)
  np.testing.assert_array_equal(sample.copy_weights(hp, phi, state),
                                [[0, 0], [3, 0], [1, 2], [0, 0]])
  hp = sample.HParams("modality", "authors", 1.0, 0.2, sample.Window(0, 9))
  state = state._replace(contribution=jnp.asarray([0.8, 0.2]), ready=jnp.asarray(True))
  np.testing.assert_allclose(sample.copy_weights(hp, phi, state),
                             [[0, 0], [0, 0], [0.4, 0.4], [0, 0]], atol=1e-6)


def test_epoch_estimate_by_hand():
  state = sample.init_state(2)
  phi = jnp.asarray([[1.0, 0.0, 0.5], [0.0, 1.0, 1.5]])
  state = sample.accumulate(state, phi, jnp.asarray([True, False, True]))
  np.testing.assert_allclose(state.sums, [1.5, 1.5])
  np.testing.assert_allclose(state.count, 2.0)
  np.testing.assert_allclose(sample.estimate(state), [0.75, 0.75])     # running, not ready
  state = sample.epoch_update(state)
  assert bool(state.ready) and float(state.count) == 0.0
  np.testing.assert_allclose(state.contribution, [0.75, 0.75])
  state = sample.accumulate(state, phi, jnp.asarray([False, True, False]))
  np.testing.assert_allclose(sample.estimate(state), [0.75, 0.75])     # last epoch's
  state = sample.epoch_update(state)
  np.testing.assert_allclose(state.contribution, [0.0, 1.0])
  kept = sample.epoch_update(state)                                     # nothing drawn
  np.testing.assert_allclose(kept.contribution, [0.0, 1.0])


def test_four_shards_equal_one_device():
  """Under a mapped axis (vmap standing in for pmap: the same collectives) the mean of the
  shards' loss gradients, the summed contributions and the draw are the one-device ones."""
  rng = np.random.default_rng(1)
  v = jnp.asarray(rng.normal(size=(4, 8, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, 8))
  w = jnp.asarray(rng.integers(0, 3, (4, 8)), jnp.float32)
  phi = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
  key = jax.random.PRNGKey(3)

  def one(v, labels, w, phi):
    grad = jax.grad(sample.loss)(v, labels, w)
    draw = sample.draw_examples(key, 0.5, labels.shape[0])
    return grad, sample.accumulate(sample.init_state(2), phi, draw), draw

  def shard(v, labels, w, phi):
    grad = jax.grad(sample.loss)(v, labels, w, "d")
    draw = sample.draw_examples(key, 0.5, labels.shape[0], "d")
    return grad, sample.accumulate(sample.init_state(2), phi, draw, "d"), draw

  split = lambda x, axis: jnp.stack(jnp.split(x, 4, axis))  # noqa: E731
  grads, states, draws = jax.vmap(shard, axis_name="d")(
      split(v, 1), split(labels, 0), split(w, 1), split(phi, 1))
  want_grad, want_state, want_draw = one(v, labels, w, phi)
  # The trainer averages the shards' gradients: shard d's share of d L / d V is its
  # examples' columns of the one-device gradient.
  np.testing.assert_allclose(jnp.concatenate(list(grads), 1) / 4, want_grad,
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(draws.reshape(-1), want_draw)
  np.testing.assert_allclose(states.sums[0], want_state.sums, rtol=1e-6)
  np.testing.assert_allclose(states.count[0], want_state.count)


def test_errors():
  def make(**kw):
    section = dict(level="modality", variant="authors", alpha=1.0, part_ratio=0.2,
                   start_epoch=1, end_epoch=9)
    return sample.hparams({**section, **kw})
  make()
  with pytest.raises(ValueError, match="level must be one of"):
    make(level="batch")
  with pytest.raises(ValueError, match="variant must be one of"):
    make(variant="paper")
  with pytest.raises(ValueError, match="part_ratio must be in"):
    make(part_ratio=0.0)


# --------------------------------------------------------------------------- runs

LEVELS = ("modality", "sample")


def _config(level):
  return tiny_config(method="sample", num_epochs=2, **{"sample.level": level})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """One 2-epoch run per level: ``level -> (workdir, host state, summary)``."""
  root = tmp_path_factory.mktemp("sample")
  out = {}
  for level in LEVELS:
    workdir = root / level
    _, state, summary = loop.fit(_config(level), str(workdir))
    out[level] = (workdir, state, summary)
  return out


@pytest.mark.parametrize("level", LEVELS)
def test_runs_on_the_default_config(runs, level):
  workdir, state, summary = runs[level]
  assert "sample" in methods.NAMES
  lines = read_lines(workdir)
  assert {x["split"] for x in lines} == {"train", "val", "test"}
  assert summary["steps"] == 16 and 0.0 <= summary["final"]["acc"] <= 1.0
  assert all(np.isfinite(x["loss"]) for x in lines)
  train = [x for x in lines if x["split"] == "train"]
  assert all({"phi/audio", "phi/visual", "contribution/audio", "copies",
              "resampled_loss"} <= set(x) for x in train)
  # epoch 0 is the warm-up (start_epoch 1): no copies.
  assert all(x["copies"] == 0.0 for x in train if x["epoch"] == 0)
  carried = carry_tx.get_carry(state.opt_state, sample.SampleState)
  assert bool(carried.ready) and float(carried.count) == 0.0      # two epochs ended
  assert np.all(np.isfinite(carried.contribution))


@pytest.mark.parametrize("level", LEVELS)
def test_resume_after_a_kill_is_exact(runs, level, tmp_path):
  workdir = runs[level][0]
  work = tmp_path / level
  shutil.copytree(workdir, work)
  kept = sorted(int(x) for x in os.listdir(work / "checkpoints") if x.isdigit())
  assert kept == [10, 15, 16]
  for step in (15, 16):   # as if killed after step 14 (mid epoch 1, inside the window)
    shutil.rmtree(work / "checkpoints" / str(step))
  loop.fit(_config(level), str(work))
  a, b = read_lines(workdir), read_lines(work)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    x.pop("probe_s", None), y.pop("probe_s", None)
    assert x == y


@pytest.mark.parametrize("level", ["modality"])   # the default; "sample" runs in the resume test
def test_three_modalities_jitted_step_equals_the_eager_one(tmp_path, level):
  c = npz_mlp.get_config()
  c.method, c.num_epochs, c.batch_size, c.eval_batch_size = "sample", 1, 32, 32
  c.checkpoint_every_steps, c.competition.enabled = 0, False
  c.data.dir = write_k3_npz(str(tmp_path / "data"))
  c.model.encoder_default = dict(type="mlp", hidden=(8,), features=8)
  c.sample.level = level
  run = loop.Run(c)
  state = run.init_state()
  batch = next(run.train_batches(0))
  assert run.ctx.k == 3

  def step(s, b):
    out = run.method.gradients(run.ctx, s.params, s.batch_stats, b, s.rng, True, s.opt_state)
    return out.updates, out.metrics, out.tx_kwargs

  jitted = jax.jit(step)(state, batch)
  eager = step(state, batch)   # un-jitted: op by op
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
               jitted, eager)
  metrics, new = jitted[1], jitted[2]["carry"]
  assert {"acc/a", "acc/b", "acc/c", "phi/a", "phi/b", "phi/c"} <= set(metrics)
  assert new.sums.shape == (3,) and float(new.count) > 0
  # the efficiency of the authors' benefit: the contributions sum to k times the accuracy.
  np.testing.assert_allclose(sum(float(metrics[f"phi/{m}"]) for m in "abc"),
                             3 * float(metrics["acc"]), atol=1e-5)
