"""The method protocol's once-per-run hook: ``Method.prepare`` runs before the first step of a
fresh run, its state is checkpointed at step 0, and a resumed run never runs it again."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import methods
from agm_jax.train import loop
from agm_jax.train.checkpoint import Checkpointer
from tests.conftest import tiny_config


def test_prepare_runs_once_and_is_checkpointed(tmp_path, monkeypatch):
  calls = []

  def prepare(ctx, state, *, copies):
    calls.append(ctx.seed)
    assert copies.num_epochs == 1
    # a visible mark: every bias set to 0.5 (what a teacher or a re-draw would put in the state)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full_like(x, 0.5) if path[-1].key == "bias" else x, state.params)
    return state.replace(params=params)

  joint = methods.get("joint")
  marked = dataclasses.replace(joint, name="joint", prepare=prepare)
  monkeypatch.setitem(methods.REGISTRY, "joint", marked)
  c = tiny_config(method="joint", num_epochs=1, num_seeds=2)
  _, state, _ = loop.fit(c, str(tmp_path))
  assert calls == [0, 1]   # once per seed, with that seed's context
  # The prepared state is checkpointed at step 0; a resumed run does not prepare again.
  assert Checkpointer(os.path.join(tmp_path, "checkpoints")).all_steps()[0] == 0
  c.num_epochs = 2
  _, state, _ = loop.fit(c, str(tmp_path))
  assert calls == [0, 1]
  first = tiny_config(method="joint", num_epochs=2, num_seeds=2)
  monkeypatch.setitem(methods.REGISTRY, "joint", joint)
  _, unprepared, _ = loop.fit(first, str(tmp_path / "plain"))
  differ = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                  jax.tree.leaves(unprepared.params))]
  assert any(differ)   # the prepared start changed the run
