"""Parameter init schemes (``model.init``: agm_jax/models/init.py) and the Transformer
options that reproduce the released UR-Funny encoder (agm_jax/models/encoders.py).

The schemes are checked on hand-built parameter trees (the names and shapes our modules
produce; nothing to compile) against the PyTorch formulas, and on a real model's tree through
``train.state.create``."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agm_jax.models import build_model, encoders
from agm_jax.models import init as init_lib
from agm_jax.train import state as state_lib
from agm_jax.train import validate
from configs import default as default_config

KEY = jax.random.PRNGKey(0)


def zeros(*shape):
  return jnp.zeros(shape, jnp.float32)


def layer(kernel_shape, bias=True):
  return {"kernel": zeros(*kernel_shape), **({"bias": zeros(kernel_shape[-1])} if bias else {})}


def norm(n):
  return {"scale": zeros(n), "bias": zeros(n)}


# Big enough kernels for the moments: 16k-37k entries.
TREE = {
    "fusion": {"classifier": layer((256, 64))},                        # nn.Linear(256, 64)
    "conv": {"Conv_0": layer((3, 3, 32, 64)), "BatchNorm_0": norm(64)},  # outside a ResNet
    "encoders_0": {                                                    # a ResNet
        "stem_conv": layer((7, 7, 1, 16), bias=False), "stem_bn": norm(16),
        "BasicBlock_0": {"Conv_0": layer((3, 3, 64, 64), bias=False),
                         "BatchNorm_0": norm(64)}},
}


@functools.cache
def drawn(scheme):
  return init_lib.reinit(TREE, KEY, scheme)


def check_uniform(x, bound):
  x = np.asarray(x)
  assert np.abs(x).max() <= bound
  assert np.abs(x).max() > 0.97 * bound
  np.testing.assert_allclose(x.std(), bound / math.sqrt(3), rtol=0.05)


def check_normal(x, std, mean=0.0):
  x = np.asarray(x)
  np.testing.assert_allclose(x.mean(), mean, atol=0.05 * std)
  np.testing.assert_allclose(x.std(), std, rtol=0.05)


def test_flax_is_unchanged_and_a_bad_scheme_names_the_key():
  assert init_lib.reinit(TREE, KEY, "flax") is TREE
  with pytest.raises(ValueError, match=r"unknown model.init 'torch'; valid: flax, pytorch"):
    init_lib.reinit(TREE, KEY, "torch")
  c = default_config.get_config()
  assert c.model.init == "flax"
  c.model.init = "torch"
  with pytest.raises(validate.ConfigError, match="model.init"):
    validate.validate_config(c)


def test_pytorch_defaults_and_the_released_resnet_overrides():
  p = drawn("pytorch")
  assert jax.tree.structure(p) == jax.tree.structure(TREE)
  dense = p["fusion"]["classifier"]
  check_uniform(dense["kernel"], 1 / math.sqrt(256))
  assert np.abs(dense["bias"]).max() <= 1 / math.sqrt(256) and np.ptp(dense["bias"]) > 0
  conv = p["conv"]
  check_uniform(conv["Conv_0"]["kernel"], 1 / math.sqrt(3 * 3 * 32))
  assert np.abs(conv["Conv_0"]["bias"]).max() <= 1 / math.sqrt(3 * 3 * 32)
  np.testing.assert_array_equal(conv["BatchNorm_0"]["scale"], 1.0)
  np.testing.assert_array_equal(conv["BatchNorm_0"]["bias"], 0.0)
  # ResNet: He-normal fan-out convs, BatchNorm scale N(1, 0.02), bias 0 (resnet.py __init__).
  resnet = p["encoders_0"]
  check_normal(resnet["stem_conv"]["kernel"], math.sqrt(2 / (7 * 7 * 16)))
  check_normal(resnet["BasicBlock_0"]["Conv_0"]["kernel"], math.sqrt(2 / (3 * 3 * 64)))
  for bn in (resnet["stem_bn"], resnet["BasicBlock_0"]["BatchNorm_0"]):
    scale = np.asarray(bn["scale"])
    assert abs(scale.mean() - 1) < 0.02 and 0.01 < scale.std() < 0.03
    np.testing.assert_array_equal(bn["bias"], 0.0)


def test_released_weight_init_on_top():
  p, r = drawn("pytorch"), drawn("released")
  dense = r["fusion"]["classifier"]
  check_normal(dense["kernel"], math.sqrt(2 / (256 + 64)))                # xavier-normal
  np.testing.assert_array_equal(dense["bias"], 0.0)
  check_uniform(r["conv"]["Conv_0"]["kernel"], math.sqrt(6 / (3 * 3 * 64)))  # fan-out
  np.testing.assert_array_equal(r["conv"]["Conv_0"]["bias"], p["conv"]["Conv_0"]["bias"])
  resnet = r["encoders_0"]
  check_uniform(resnet["BasicBlock_0"]["Conv_0"]["kernel"], math.sqrt(6 / (3 * 3 * 64)))
  for bn in (resnet["stem_bn"], resnet["BasicBlock_0"]["BatchNorm_0"]):
    np.testing.assert_array_equal(bn["scale"], 1.0)
    np.testing.assert_array_equal(bn["bias"], 0.0)


def transformer_tree(layers=2, e=32, heads=4):
  d = e // heads
  attention = {n: {"kernel": zeros(e, heads, d), "bias": zeros(heads, d)}
               for n in ("query", "key", "value")}
  attention["out"] = {"kernel": zeros(heads, d, e), "bias": zeros(e)}
  one = {"MultiHeadDotProductAttention_0": attention, "Dense_0": layer((64, e)),
         "Dense_1": layer((e, 64)), "LayerNorm_0": norm(e), "LayerNorm_1": norm(e)}
  return {"embed": layer((300, e)), "pos_embedding": jnp.ones((8, e)), "final_norm": norm(e),
          **{f"TransformerLayer_{i}": one for i in range(layers)}}


def test_transformer_attention_and_cloned_layers():
  tree = transformer_tree()
  p = init_lib.reinit(tree, KEY, "pytorch")
  r = init_lib.reinit(tree, KEY, "released")
  l0, l1 = p["TransformerLayer_0"], p["TransformerLayer_1"]
  # nn.TransformerEncoder deep-copies one layer: every layer starts the same.
  jax.tree.map(np.testing.assert_array_equal, l0, l1)
  attention = l0["MultiHeadDotProductAttention_0"]
  for name in ("query", "key", "value"):      # xavier-uniform on in_proj (3E, E), bias 0
    assert np.abs(attention[name]["kernel"]).max() <= math.sqrt(6 / (32 + 96))
    np.testing.assert_array_equal(attention[name]["bias"], 0.0)
  assert np.abs(attention["out"]["kernel"]).max() <= 1 / math.sqrt(32)
  np.testing.assert_array_equal(attention["out"]["bias"], 0.0)
  check_uniform(p["embed"]["kernel"], 1 / math.sqrt(300))                 # Conv1d default
  np.testing.assert_array_equal(p["pos_embedding"], 1.0)                  # no counterpart
  np.testing.assert_array_equal(p["final_norm"]["scale"], 1.0)
  # weight_init re-draws every Linear (layers differ now), not in_proj, Conv1d, LayerNorm.
  r0, r1 = r["TransformerLayer_0"], r["TransformerLayer_1"]
  assert not np.array_equal(r0["Dense_0"]["kernel"], r1["Dense_0"]["kernel"])
  np.testing.assert_array_equal(r0["Dense_0"]["bias"], 0.0)
  ra = r0["MultiHeadDotProductAttention_0"]
  np.testing.assert_array_equal(ra["query"]["kernel"], attention["query"]["kernel"])
  assert not np.array_equal(ra["out"]["kernel"], attention["out"]["kernel"])
  np.testing.assert_array_equal(r["embed"]["kernel"], p["embed"]["kernel"])


def test_create_applies_the_scheme_and_leaves_flax_bitwise():
  spec = {"audio": ((6,), np.float32), "visual": ((5,), np.float32)}
  mods = ("audio", "visual")
  model = build_model(default_config.get_config().model, mods, 3, spec)
  tx = state_lib.base_optimizer(default_config.get_config().optimizer, 10, 2)
  flax_state = state_lib.create(model, tx, spec, mods, seed=3)
  torch_state = state_lib.create(model, tx, spec, mods, seed=3, init="pytorch")
  init_rng, rng = jax.random.split(jax.random.PRNGKey(3))
  expected = jax.jit(lambda r, x: model.init(r, x, False))(
      init_rng, state_lib.example_inputs(spec, mods))
  jax.tree.map(np.testing.assert_array_equal, flax_state.params, expected["params"])
  np.testing.assert_array_equal(flax_state.rng, rng)
  np.testing.assert_array_equal(torch_state.rng, rng)
  assert jax.tree.structure(torch_state.params) == jax.tree.structure(flax_state.params)
  first = torch_state.params["encoders_0"]["Dense_0"]                   # nn.Linear(6, 64)
  assert np.abs(first["bias"]).max() <= 1 / math.sqrt(6) and np.ptp(first["bias"]) > 0
  assert np.abs(first["kernel"]).max() <= 1 / math.sqrt(6)


def test_a_real_resnet_tree_maps():
  config = default_config.get_config().model
  config.encoders = dict(audio=dict(type="resnet18", width=2, stage_sizes=(1, 1)))
  spec = {"audio": ((6, 6), np.float32), "visual": ((5,), np.float32)}
  model = build_model(config, ("audio", "visual"), 3, spec)
  shapes = jax.eval_shape(lambda r, x: model.init(r, x, False), KEY,
                          state_lib.example_inputs(spec, ("audio", "visual")))["params"]
  tree = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  p = init_lib.reinit(tree, KEY, "pytorch")
  resnet = p["encoders_0"]
  for bn in ("stem_bn", "BatchNorm_0", "BatchNorm_2"):
    module = resnet[bn] if bn == "stem_bn" else resnet["BasicBlock_1"][bn]
    assert 0 < np.abs(np.asarray(module["scale"]) - 1).max() < 0.2, bn
  proj = resnet["BasicBlock_1"]["proj_conv"]["kernel"]                  # (1, 1, 2, 4)
  assert np.abs(np.asarray(proj)).max() > 0
  assert set(p["fusion"]["classifier"]) == {"kernel", "bias"}
  assert np.ptp(p["fusion"]["classifier"]["bias"]) > 0


# --------------------------------------------------------------------------- Transformer


TINY = dict(num_layers=1, num_heads=2, width=8, mlp_dim=16, max_len=6)
X = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 4))
LENGTHS = jnp.array([5, 2, 1])


def last_layer_output(model, variables, x, lengths):
  _, state = model.apply(variables, x, False, lengths, capture_intermediates=True,
                         mutable=["intermediates"])
  return state["intermediates"][f"TransformerLayer_{TINY['num_layers'] - 1}"]["__call__"][0]


def test_transformer_norm_and_pool_options():
  pre = encoders.TransformerEncoder(**TINY, final_norm=False)
  variables = pre.init(KEY, X, False)
  post = encoders.TransformerEncoder(**TINY, final_norm=False, norm="post")
  assert jax.tree.structure(post.init(KEY, X, False)) == jax.tree.structure(variables)
  a, b = pre.apply(variables, X, False, LENGTHS), post.apply(variables, X, False, LENGTHS)
  assert np.abs(np.asarray(a - b)).max() > 1e-3                   # same weights, other net
  first = encoders.TransformerEncoder(**TINY, final_norm=False, norm="post", pool="first")
  sequence = last_layer_output(first, variables, X, LENGTHS)
  np.testing.assert_allclose(first.apply(variables, X, False, LENGTHS), sequence[:, 0],
                             rtol=1e-6, atol=1e-6)
  valid = (jnp.arange(5)[None] < LENGTHS[:, None])[..., None]
  mean = (sequence * valid).sum(1) / valid.sum(1)
  np.testing.assert_allclose(b, mean, rtol=1e-5, atol=1e-6)
  # use_lengths=False: every token attended to and pooled, as with lengths=None.
  ignore = encoders.TransformerEncoder(**TINY, final_norm=False, norm="post", use_lengths=False)
  np.testing.assert_array_equal(ignore.apply(variables, X, False, LENGTHS),
                                post.apply(variables, X, False))


def test_transformer_dropout_and_the_released_layout():
  released = dict(TINY, norm="post", pool="first", input_bias=False, positions="none",
                  activation="relu", norm_eps=1e-5, use_lengths=False, final_norm=False)
  model = encoders.TransformerEncoder(**released)
  params = model.init(KEY, X, False)["params"]
  assert "pos_embedding" not in params and "final_norm" not in params
  assert set(params["embed"]) == {"kernel"}
  np.testing.assert_array_equal(model.apply({"params": params}, X, True),   # no rng needed
                                model.apply({"params": params}, X, False))
  dropped = encoders.TransformerEncoder(**released | dict(dropout=0.5))
  run = jax.jit(lambda k: dropped.apply({"params": params}, X, True, rngs={"dropout": k}))
  one, two = run(jax.random.PRNGKey(5)), run(jax.random.PRNGKey(6))
  assert np.abs(np.asarray(one - two)).max() > 1e-3
  np.testing.assert_array_equal(one, run(jax.random.PRNGKey(5)))
  np.testing.assert_array_equal(dropped.apply({"params": params}, X, False),
                                model.apply({"params": params}, X, False))
  with pytest.raises(ValueError, match="unknown transformer pool 'last'"):
    encoders.TransformerEncoder(**TINY, pool="last").init(KEY, X, False)


def test_transformer_options_through_the_config():
  config = default_config.get_config().model
  config.encoder_default = dict(type="transformer", **TINY, norm="post", pool="first",
                                dropout=0.1, input_bias=False)
  model = build_model(config, ("text",), 2, {"text": ((5, 4), np.float32)})
  encoder = model.encoders[0]
  assert isinstance(encoder, nn.Module)
  assert (encoder.norm, encoder.pool, encoder.dropout, encoder.input_bias) == (
      "post", "first", 0.1, False)
