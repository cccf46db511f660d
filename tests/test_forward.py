"""The subset forward: fast path == generic path, BatchNorm semantics, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agm_jax import shapley, subsets

K = 3


class Enc(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Dense(6)(x.reshape(x.shape[0], -1))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.relu(x)


class Head(nn.Module):
  @nn.compact
  def __call__(self, feats, train):
    z = nn.BatchNorm(use_running_average=not train, momentum=0.9)(jnp.concatenate(feats, -1))
    z = nn.tanh(nn.Dense(8)(z))
    return nn.Dense(K)(z), z


class Toy(nn.Module):
  modalities: tuple
  separable = True

  def setup(self):
    self.encoders = [Enc() for _ in self.modalities]
    self.fusion = Head()

  def encode(self, inputs, train):
    return tuple(e(inputs[m], train) for e, m in zip(self.encoders, self.modalities))

  def fuse(self, feats, train):
    return self.fusion(feats, train)

  def __call__(self, inputs, train):
    return self.fuse(self.encode(inputs, train), train)


def setup(k, seed=0):
  mods = tuple(f"m{i}" for i in range(k))
  model = Toy(mods)
  rng = np.random.default_rng(seed)
  x = {m: jnp.asarray(rng.normal(size=(5, 4)) + i, jnp.float32) for i, m in enumerate(mods)}
  # jitted: one compile instead of one per op (the same program for every seed)
  variables = jax.jit(lambda key, x: model.init(key, x, False))(jax.random.key(seed), x)
  # non-trivial running statistics
  _, upd = jax.jit(lambda v, x: model.apply(v, jax.tree.map(lambda a: a * 2 + 1, x), True,
                                            mutable=["batch_stats"]))(variables, x)
  return model, variables["params"], upd["batch_stats"], x, mods


@pytest.fixture(scope="module")
def paths():
  """``(k, bn, fast) -> (fn, args)``: ``fn`` returns the subset forward and, in the same
  program, its Shapley VJP's forward and backward (one compile per path)."""
  out = {}
  labels = jnp.arange(5) % K
  for k in (2, 3):
    model, params, stats, x, mods = setup(k)
    for bn in ("eval", "batch"):
      for fast in (True, False):
        def fn(p, s, x, bn=bn, fast=fast, model=model, mods=mods, k=k):
          f = lambda p: subsets.subset_forward(model, p, s, x, mods, subset_bn=bn,  # noqa: E731
                                               fast=fast)
          fwd, backward = shapley.shapley_vjp(f, p, labels, has_aux=True)
          return f(p), fwd, backward(jnp.linspace(0.5, 1.5, k))
        out[k, bn, fast] = jax.jit(fn), (params, stats, x)
  return out


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("bn", ["eval", "batch"])
def test_fast_equals_generic(paths, k, bn):
  (f_fast, args), (f_gen, _) = paths[k, bn, True], paths[k, bn, False]
  (v1, a1), fwd1, g1 = f_fast(*args)
  (v2, a2), fwd2, g2 = f_gen(*args)
  np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(a1.z, a2.z, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), a1.batch_stats,
               a2.batch_stats)
  for fwd in (fwd1, fwd2):
    np.testing.assert_allclose(fwd.mono_logits.sum(0), fwd.logits, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g1, g2)


def test_eval_semantics_match_definition():
  """subset_bn="eval": masked passes == the model in eval mode on masked inputs."""
  model, params, stats, x, mods = setup(2, seed=1)
  v, aux = subsets.subset_forward(model, params, stats, x, mods, subset_bn="eval")
  full, upd = model.apply({"params": params, "batch_stats": stats}, x, True,
                          mutable=["batch_stats"])
  np.testing.assert_allclose(v[-1], full[0], rtol=1e-5)
  only_m0 = {"m0": x["m0"], "m1": jnp.zeros_like(x["m1"])}
  want = model.apply({"params": params, "batch_stats": upd["batch_stats"]}, only_m0, False)[0]
  np.testing.assert_allclose(v[1], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
def test_eval_masked_gradient_treats_running_stats_as_constants(fast):
  """subset_bn="eval": the masked passes read the running statistics the full pass updated,
  as constants. PyTorch updates its BatchNorm buffers outside autograd, so the released code's
  gradient has no path through them; the reference here is the definition with the updated
  statistics computed first and passed in as data."""
  model, params, stats, x, mods = setup(2, seed=4)
  weights = jnp.linspace(-1.0, 2.0, 3)[:, None, None]   # one weight per masked row

  def ours(p):
    v, _ = subsets.subset_forward(model, p, stats, x, mods, subset_bn="eval", fast=fast)
    return jnp.sum(weights * jnp.sin(v[:-1]))

  _, upd = model.apply({"params": params, "batch_stats": stats}, x, True,
                       mutable=["batch_stats"])
  updated = upd["batch_stats"]   # data, not a function of p

  def definition(p):
    rows = []
    for mask in shapley.subset_masks(2)[:-1]:
      masked = {m: jnp.where(mask[i], x[m], 0.0) for i, m in enumerate(mods)}
      rows.append(model.apply({"params": p, "batch_stats": updated}, masked, False)[0])
    return jnp.sum(weights * jnp.sin(jnp.stack(rows)))

  got, want = jax.jit(jax.grad(ours))(params), jax.jit(jax.grad(definition))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


@pytest.mark.parametrize("bn", ["eval", "batch"])
def test_only_full_pass_updates_running_stats(bn):
  model, params, stats, x, mods = setup(2, seed=2)
  _, aux = subsets.subset_forward(model, params, stats, x, mods, subset_bn=bn)
  _, upd = model.apply({"params": params, "batch_stats": stats}, x, True,
                       mutable=["batch_stats"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), aux.batch_stats,
               upd["batch_stats"])


def test_eval_mode_changes_no_stats_and_stop_gradient():
  model, params, stats, x, mods = setup(2, seed=3)
  labels = jnp.array([0, 1, 2, 0, 1])

  @jax.jit   # one compile for the three computations
  def run(params):
    _, aux = subsets.subset_forward(model, params, stats, x, mods, train=False)
    fwd, backward = shapley.shapley_vjp(
        lambda p: subsets.subset_forward(model, p, stats, x, mods, grad_masked=False), params,
        labels, has_aux=True)
    joint = jax.grad(lambda p: shapley.cross_entropy(model.apply(
        {"params": p, "batch_stats": stats}, x, True, mutable=["batch_stats"])[0][0],
        labels).mean())(params)
    return aux.batch_stats, backward(jnp.ones(2)), joint

  eval_stats, shapley_grads, joint = run(params)
  jax.tree.map(np.testing.assert_array_equal, eval_stats, stats)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               shapley_grads, joint)


def test_bad_subset_bn():
  model, params, stats, x, mods = setup(2)
  with pytest.raises(ValueError, match="valid"):
    subsets.subset_forward(model, params, stats, x, mods, subset_bn="train")
