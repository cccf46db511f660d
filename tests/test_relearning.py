"""Diagnosing & Re-learning (issue 22, agm_jax/methods/relearning.py): the purity estimate on
hand-made clusters, the re-initialisation weights and mix by hand, a run that re-learns twice,
and exact resume after a kill."""

import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from agm_jax.methods import relearning
from agm_jax.train import loop
from tests.conftest import read_lines, tiny_config


def test_purity_by_hand():
  labels = np.asarray([0, 0, 1, 1, 2, 2])
  # clusters {0,1,2}: labels 0,0,1 -> 2 agree; {3,4,5}: 1,2,2 -> 2 agree: 4/6
  assert relearning.purity(labels, np.asarray([5, 5, 5, 7, 7, 7])) == pytest.approx(4 / 6)
  assert relearning.purity(labels, np.asarray([0, 0, 1, 1, 2, 2])) == 1.0
  assert relearning.purity(labels, np.zeros(6, int)) == pytest.approx(2 / 6)


def test_cluster_purity_on_hand_made_clusters():
  rng = np.random.default_rng(0)
  centres = np.asarray([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  labels = np.repeat(np.arange(3), 20)
  separated = centres[labels] + 0.1 * rng.normal(size=(60, 2))
  assert relearning.cluster_purity(separated, labels, 3) == 1.0
  mixed = rng.normal(size=(60, 2))          # the labels carry no structure
  assert relearning.cluster_purity(mixed, labels, 3) < 0.7


def test_reinit_weights_and_mix_by_hand():
  w = relearning.reinit_weights([0.9, 0.6], [0.5, 0.55], move_lambda=3.0)
  np.testing.assert_allclose(w, [np.tanh(1.2), np.tanh(0.15)], rtol=1e-6)
  params = {"encoders_0": {"w": np.asarray([2.0, 4.0])}, "encoders_1": {"w": np.asarray([1.0])},
            "fusion": {"b": np.asarray([3.0])}}
  init = {"encoders_0": {"w": jnp.asarray([0.0, 0.0])}, "encoders_1": {"w": jnp.asarray([5.0])}}
  out = relearning.soft_reinit(params, init, np.asarray([0.25, 0.5]))
  np.testing.assert_allclose(out["encoders_0"]["w"], [1.5, 3.0])     # 0.75 * theta
  np.testing.assert_allclose(out["encoders_1"]["w"], [3.0])          # (1 + 5) / 2
  np.testing.assert_allclose(out["fusion"]["b"], [3.0])


def _config():
  c = tiny_config(method="relearning", num_epochs=3, checkpoint_every_steps=5)
  c.relearning.reinit_epoch = 1
  c.relearning.reinit_num = 1
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("relearning") / "run"
  _, state, summary = loop.fit(_config(), str(workdir))
  return workdir, state, summary


def test_relearns_at_most_reinit_num_times(run):
  workdir, state, summary = run
  train = [x for x in read_lines(workdir) if x["split"] == "train"]
  weights = {x["epoch"]: (x["reinit_weight/audio"], x["reinit_weight/visual"]) for x in train}
  assert weights[0] == (0.0, 0.0) and weights[1] == (0.0, 0.0)   # before the first diagnosis
  assert all(0.0 < w < 1.0 for w in weights[2])                  # after epoch 1
  assert 0.0 <= summary["final"]["acc"] <= 1.0
  assert int(relearning.carry_tx.get_carry(state.opt_state, relearning.RelearnState).count) == 1


def test_resume_after_a_kill_is_exact(run, tmp_path):
  workdir, _, _ = run
  work = tmp_path / "resumed"
  shutil.copytree(workdir, work)
  kept = sorted(int(x) for x in os.listdir(work / "checkpoints") if x.isdigit())
  for step in kept:
    if step > 16:   # as if killed in epoch 2, right after the re-initialisation at epoch 1's end
      shutil.rmtree(work / "checkpoints" / str(step))
  assert 16 in kept or 15 in kept
  loop.fit(_config(), str(work))
  a, b = read_lines(workdir), read_lines(work)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    x.pop("probe_s", None), y.pop("probe_s", None)
    assert x == y
