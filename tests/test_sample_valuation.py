"""Sample-level modality valuation (issue 22, agm_jax/methods/sample.py): per-example Shapley
values against a brute-force computation, the copy rules by hand, the re-sampled loss by hand,
a run on three modalities, and exact resume after a kill."""

import itertools
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agm_jax.methods import sample
from agm_jax.train import loop
from tests.conftest import read_lines, tiny_config
from tests.test_balance_methods_c import _k3_config


def _brute_force(correct, k):
  """phi_i^m by the Shapley formula over explicit coalitions (v of the empty set 0)."""
  def v(subset, i):
    if not subset:
      return 0.0
    return float(correct[sum(1 << m for m in subset)][i])
  out = np.zeros((k, correct.shape[1]))
  for i in range(correct.shape[1]):
    for m in range(k):
      others = [j for j in range(k) if j != m]
      for size in range(k):
        for coalition in itertools.combinations(others, size):
          w = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
          out[m, i] += w * (v((*coalition, m), i) - v(coalition, i))
  return out


@pytest.mark.parametrize("k", [2, 3])
def test_sample_contributions_match_brute_force(k):
  rng = np.random.default_rng(k)
  labels = rng.integers(0, 3, 6)
  v = jnp.asarray(rng.normal(size=(2**k, 6, 3)), jnp.float32)
  correct = np.asarray(np.argmax(v, -1) == labels[None])
  np.testing.assert_allclose(sample.sample_contributions(v, jnp.asarray(labels)),
                             _brute_force(correct, k), atol=1e-6)


def test_copy_rules_by_hand():
  phi = jnp.asarray([[-0.5, 0.0, 0.5, 1.0, -0.1]])
  np.testing.assert_allclose(sample.sample_copies(phi), [[3, 2, 1, 0, 0]])
  # modality level: contributions 0.9 and 0.3 everywhere: gaps 0.1, 0.7; d = (2/3) * 1.2 / 1
  phi = jnp.asarray([[0.9] * 4, [0.3] * 4])
  copies, mean = sample.modality_resampling(phi, jax.random.PRNGKey(0), 0.5)
  np.testing.assert_allclose(copies, [0.0, 0.8], rtol=1e-6)
  np.testing.assert_allclose(mean, [0.9, 0.3], rtol=1e-6)


def test_resampled_loss_by_hand():
  logp = np.log([[0.5, 0.5], [0.8, 0.2]])
  # rows: none, only 0, only 1, both; two examples, label 0
  v = jnp.asarray(np.stack([logp, logp[::-1], logp, logp]), jnp.float32)
  labels = jnp.asarray([0, 0])
  copies = jnp.asarray([[2.0, 0.0], [0.0, 1.0]])
  ce = -np.log([0.5, 0.8])                 # full = only-1 rows; only-0 row: [0.8, 0.5] reversed
  ce_only0 = -np.log([0.8, 0.5])
  want = (ce.sum() + 2 * ce_only0[0] + 1 * ce[1]) / (2 + 3)
  np.testing.assert_allclose(sample.loss(v, labels, copies), want, rtol=1e-6)


def test_three_modalities_step(tmp_path):
  run = loop.Run(_k3_config("sample", str(tmp_path / "data")))
  state = run.init_state()
  batch = next(run.train_batches(0))
  out = jax.jit(lambda s, b: run.method.gradients(run.ctx, s.params, s.batch_stats, b, s.rng,
                                                  True, s.opt_state).metrics)(state, batch)
  assert {"phi/a", "phi/b", "phi/c", "copies"} <= set(out)
  assert all(np.isfinite(float(x)) for x in out.values())


def _config(level):
  return tiny_config(method="sample", num_epochs=2, checkpoint_every_steps=5,
                     **{"sample.level": level, "sample.start_epoch": 0})


@pytest.mark.parametrize("level", ["sample", "modality"])
def test_resume_after_a_kill_is_exact(tmp_path, level):
  workdir = tmp_path / "run"
  _, _, summary = loop.fit(_config(level), str(workdir))
  assert 0.0 <= summary["final"]["acc"] <= 1.0
  train = [x for x in read_lines(workdir) if x["split"] == "train"]
  assert any(x["copies"] > 0 for x in train)
  work = tmp_path / "resumed"
  shutil.copytree(workdir, work)
  for step in (15, 16):   # as if killed after step 14 (mid epoch 1)
    shutil.rmtree(work / "checkpoints" / str(step))
  loop.fit(_config(level), str(work))
  a, b = read_lines(workdir), read_lines(work)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    x.pop("probe_s", None), y.pop("probe_s", None)
    assert x == y
  assert os.path.exists(work / "summary.json")
