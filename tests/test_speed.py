"""Speed work: the fast subset path equals the generic one on the real models, one compilation
per run, bf16 compute."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from agm_jax import shapley, subsets
from agm_jax.models import build_model
from agm_jax.train import loop
from tests.conftest import tiny_config

B, K = 4, 3
RESNET = dict(type="resnet18", width=4, stage_sizes=(1, 1))   # BatchNorm, residuals; small compile
MLP = dict(type="mlp", hidden=(8,), features=8)


_MADE = {}


def make(fusion, k, encoder, dtype="float32"):
  """Model, params, running statistics, inputs and modalities (built once per arguments; the
  init and the statistics update are jitted: one compile instead of one per op)."""
  made = (fusion, k, encoder is RESNET, dtype)
  if made not in _MADE:
    _MADE[made] = _make(fusion, k, encoder, dtype)
  return _MADE[made]


def _make(fusion, k, encoder, dtype):
  mods = ("audio", "visual", "text")[:k]
  shapes = {"audio": (16, 12), "visual": (1, 16, 16, 3), "text": (16, 12)} if encoder is RESNET \
      else {m: (6,) for m in mods}
  cfg = ml_collections.ConfigDict(dict(
      fusion=fusion, encoders={}, encoder_default=encoder, dtype=dtype,
      fusion_options=dict(maxout_hidden=8, maxout_pieces=2, film_condition="")))
  spec = {m: (shapes[m], np.float32) for m in mods}
  model = build_model(cfg, mods, K, spec)
  rng = np.random.default_rng(k)
  x = {m: jnp.asarray(rng.normal(size=(B, *shapes[m])), jnp.float32) for m in mods}
  variables = jax.jit(lambda key, x: model.init(key, x, False))(
      jax.random.key(0, impl="unsafe_rbg"), x)
  stats = variables.get("batch_stats", {})
  if stats:  # non-trivial running statistics
    _, upd = jax.jit(lambda v, x: model.apply(v, jax.tree.map(lambda a: 2 * a + 1, x), True,
                                              mutable=["batch_stats"]))(variables, x)
    stats = upd["batch_stats"]
  return model, variables["params"], stats, x, mods


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def both_paths(model, mods, bn, params, stats, x, labels):
  out = []
  for fast in (True, False):
    fwd, backward = shapley.shapley_vjp(
        lambda p: subsets.subset_forward(model, p, stats, x, mods, subset_bn=bn, fast=fast),
        params, labels, has_aux=True)
    out.append((fwd.mono_logits, fwd.logits, backward(jnp.linspace(0.5, 1.5, len(mods))),
                fwd.aux.batch_stats))
  return out


# One ResNet case (BatchNorm in the encoders, reference BN semantics); BN in batch mode with
# BatchNorm'd toy encoders is covered in test_forward.py.
CASES = [("concat", 2, RESNET, "eval")] + [
             (f, 3, MLP, bn) for f in ("sum", "concat", "maxout", "film")
             for bn in ("eval", "batch")]


@pytest.mark.parametrize("fusion,k,encoder,bn", CASES,
                         ids=[f"{c[0]}-k{c[1]}-{'resnet' if c[2] is RESNET else 'mlp'}-{c[3]}"
                              for c in CASES])
def test_fast_path_equals_generic(fusion, k, encoder, bn):
  model, params, stats, x, mods = make(fusion, k, encoder)
  labels = jnp.arange(B) % K
  (phi1, lg1, g1, s1), (phi2, lg2, g2, s2) = both_paths(model, mods, bn, params, stats, x,
                                                        labels)
  np.testing.assert_allclose(lg1, lg2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(phi1, phi2, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g1, g2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s1, s2)


def test_one_compilation_per_run(tmp_path):
  """No retrace after the first step: across log lines, checkpoints, an epoch boundary and
  evaluations with a padded last batch."""
  c = tiny_config(method="agm", num_epochs=2, eval_batch_size=48)
  run, _, _ = loop.fit(c, str(tmp_path))
  assert run.train_step._cache_size() == 1
  assert run.eval_step._cache_size() == 1


def test_bf16_compute_keeps_float32_params():
  model32, params, stats, x, mods = make("concat", 2, RESNET)
  model16 = make("concat", 2, RESNET, dtype="bfloat16")[0]
  labels = jnp.arange(B) % K

  @jax.jit
  def run(params):
    variables = {"params": params, "batch_stats": stats}
    lg32 = model32.apply(variables, x, False)[0]
    lg16 = model16.apply(variables, x, False)[0]
    fwd, backward = shapley.shapley_vjp(
        lambda p: subsets.subset_forward(model16, p, stats, x, mods), params, labels,
        has_aux=True)
    return lg32, lg16, fwd.loss, backward(jnp.ones(2))

  lg32, lg16, loss, grads = run(params)
  np.testing.assert_allclose(np.asarray(lg16, np.float32), lg32, rtol=0.05, atol=0.05)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert np.isfinite(float(loss))
