"""Encoders, fusion heads, classifiers and build_model on tiny shapes (CPU, well under 60 s).

Compiles are shared: one program initialises the 3-modality model (video ResNet, sequence
Transformer, MLP) and one returns everything the encoder tests compare; one more initialises
and runs every fusion head on those features. Keys use the ``unsafe_rbg`` PRNG: XLA:CPU
compiles threefry draws of multi-dimensional shapes slowly, and the initial values do not
matter here.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from agm_jax import models
from agm_jax.models import classifier, encoders, fusion

B, K, T = 3, 5, 2
MODS = ("visual", "text", "sensor")
LENGTHS = np.array([0, 2, 5], np.int32)
RESNET = dict(type="resnet18", width=4, stage_sizes=(1, 1, 1, 1))
TRANSFORMER = dict(type="transformer", num_layers=1, num_heads=2, width=8, max_len=8)
MLP = dict(type="mlp", hidden=(6,), features=7)
ENC_CONFIGS = {"audio": RESNET, "visual": RESNET, "text": TRANSFORMER, "sensor": MLP}
FEATURE_DIMS = (32, 8, 7)           # 8 * width, width, features
MAXOUT = dict(maxout_hidden=6, maxout_pieces=3)
LATE_FUSIONS = ("sum", "concat")
HEAD_FUSIONS = ("sum", "concat", "maxout", "film")
Z_DIMS = {"sum": sum(FEATURE_DIMS), "concat": sum(FEATURE_DIMS), "maxout": 6,
          "film": FEATURE_DIMS[0]}


def key(seed=0):
  return jax.random.key(seed, impl="unsafe_rbg")


def make_inputs(seed=0):
  rng = np.random.default_rng(seed)
  x = {
      "audio": rng.normal(size=(B, 16, 16)),             # spectrogram (build tests only)
      "visual": rng.normal(size=(B, T, 16, 16, 3)),      # video frames
      "text": rng.normal(size=(B, 5, 6)),                # sequence (L=5, F=6)
      "sensor": rng.normal(size=(B, 4, 2)),              # flattened by the MLP
  }
  x = {k: jnp.asarray(v, jnp.float32) for k, v in x.items()}
  x["text"] = x["text"].at[1].set(0.0)                  # an all-zero (masked) row
  x["text_lengths"] = jnp.asarray(LENGTHS)
  return x


def spec_of(inputs):
  return {k: (v.shape[1:], v.dtype) for k, v in inputs.items()}


def model_config(fusion="concat", dtype="float32", encoders=None, default=None, **opts):
  return ml_collections.ConfigDict(dict(
      fusion=fusion,
      encoders=dict(ENC_CONFIGS if encoders is None else encoders),
      encoder_default=dict(MLP if default is None else default),
      fusion_options={**MAXOUT, "film_condition": "", **opts},
      dtype=dtype))


def build(fusion="concat", dtype="float32", inputs=None, mods=MODS, **kw):
  inputs = make_inputs() if inputs is None else inputs
  return models.build_model(model_config(fusion, dtype, **kw), mods, K, spec_of(inputs))


def assert_finite(x):
  assert bool(jnp.all(jnp.isfinite(x))), x


def assert_close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


class Base(NamedTuple):
  model: Any
  variables: Any
  logits: jax.Array       # __call__
  z: jax.Array
  feats: tuple            # encode
  ones: tuple             # encode_one(index) for every index
  frames: jax.Array       # the video encoder on every frame alone, (B, T, D)


@pytest.fixture(scope="module")
def inputs():
  return make_inputs()


@pytest.fixture(scope="module")
def base(inputs):
  model = build("concat", inputs=inputs)
  variables = jax.jit(lambda k, x: model.init(k, x, False))(key(), inputs)

  def run(v, x):
    logits, z = model.apply(v, x, False)
    feats = model.apply(v, x, False, method="encode")
    ones = tuple(model.apply(v, x[m], False, i, x.get(f"{m}_lengths"),
                             method=models.MultimodalClassifier.encode_one)
                 for i, m in enumerate(MODS))
    video = x["visual"]
    frames = model.apply(v, video.reshape(-1, *video.shape[2:]), False, 0, method="encode_one")
    return logits, z, feats, ones, frames.reshape(B, T, -1)

  return Base(model, variables, *jax.jit(run)(variables, inputs))


@pytest.fixture(scope="module")
def heads(base):
  """``{fusion: (model, head_variables, logits, z, unimodal_logits or None)}``, one program."""
  built = {name: build(name) for name in HEAD_FUSIONS}

  def run(k, feats):
    out = {}
    for name, model in built.items():
      (logits, z), head = model.init_with_output(k, feats, False, method="fuse")
      uni = None
      if name in LATE_FUSIONS:
        uni = model.apply(head, feats, method="unimodal_logits")
      out[name] = {"params": head["params"]["fusion"]}, logits, z, uni
    return out

  out = jax.jit(run)(key(1), base.feats)
  return {name: (built[name], *out[name]) for name in HEAD_FUSIONS}


# ----------------------------------------------------------------------------- encoders


def test_feature_shapes_and_dtypes(base):
  assert [f.shape for f in base.feats] == [(B, d) for d in FEATURE_DIMS]
  for f in base.feats:
    assert f.dtype == jnp.float32
    assert_finite(f)


def test_params_tree_keys(base):
  assert set(base.variables["params"]) == {"encoders_0", "encoders_1", "encoders_2", "fusion"}
  assert set(base.variables["batch_stats"]) == {"encoders_0"}


@pytest.mark.parametrize("index", range(len(MODS)))
def test_encode_one_equals_encode(base, index):
  assert_close(base.ones[index], base.feats[index], 1e-6)


def test_call_equals_fuse_of_encode(base):
  fuse = jax.jit(lambda v, f: base.model.apply(v, f, False, method="fuse"))
  logits, z = fuse(base.variables, base.feats)
  assert base.logits.shape == (B, K) and base.z.shape == (B, sum(FEATURE_DIMS))
  assert_close(base.logits, logits)
  assert_close(base.z, z, 1e-6)


def test_resnet_video_is_mean_over_frames(base):
  assert_close(base.feats[0], base.frames.mean(1))


def test_resnet_input_ranks():
  img = jnp.zeros((2, 8, 8, 3))
  assert encoders.fold_time(jnp.zeros((2, 8, 8)))[0].shape == (2, 8, 8, 1)
  assert encoders.fold_time(img) == (img, None)
  folded, t = encoders.fold_time(jnp.zeros((2, 4, 8, 8, 3)))
  assert folded.shape == (8, 8, 8, 3) and t == 4
  with pytest.raises(ValueError, match=r"\(B,T,H,W,C\)"):
    encoders.fold_time(jnp.zeros((2, 8)))


def test_resnet_batchnorm_train_updates_stats_eval_needs_no_mutable(base, inputs):
  train = jax.jit(lambda v, x: base.model.apply(v, x, True, 0, method="encode_one",
                                                mutable=["batch_stats"]))
  out, upd = train(base.variables, inputs["visual"])
  assert out.shape == (B, FEATURE_DIMS[0])
  assert_finite(out)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         base.variables["batch_stats"], upd["batch_stats"])
  assert all(jax.tree.leaves(changed))
  # Eval mode: `base` applied every encoder without any mutable collection.
  assert base.ones[0].shape == (B, FEATURE_DIMS[0])


def test_transformer_empty_and_padded_rows(base, inputs):
  """lengths == 0 and all-zero rows: finite features and gradients; the padding is ignored."""
  model, variables = base.model, base.variables
  text, lengths = inputs["text"], inputs["text_lengths"]
  index = MODS.index("text")

  def encode(params, x):
    return model.apply({"params": params}, x, False, index, lengths, method="encode_one")

  garbage = jnp.where(jnp.arange(5)[None, :, None] < lengths[:, None, None], text, 100.0)
  grads, noisy = jax.jit(lambda p: (jax.grad(lambda p: jnp.sum(encode(p, text)**2))(p),
                                    encode(p, garbage)))(variables["params"])
  feats = base.feats[index]
  assert_finite(feats)
  for g in jax.tree.leaves(grads[f"encoders_{index}"]):
    assert_finite(g)
  # No valid token: the masked mean is zero, so the feature is the final LayerNorm's bias.
  assert_close(feats[0], variables["params"][f"encoders_{index}"]["final_norm"]["bias"], 1e-6)
  assert_close(noisy, feats)


def test_mlp_flattens(base):
  kernel = base.variables["params"]["encoders_2"]["Dense_0"]["kernel"]
  assert kernel.shape == (8, 6)     # (4, 2) inputs flattened


# ----------------------------------------------------------------------------- fusions


@pytest.mark.parametrize("name", HEAD_FUSIONS)
def test_fusion_logits_and_z(heads, name):
  _, _, logits, z, _ = heads[name]
  assert logits.shape == (B, K)
  assert z.shape == (B, Z_DIMS[name])
  assert_finite(logits)
  assert_finite(z)


@pytest.mark.parametrize("name", LATE_FUSIONS)
def test_unimodal_logits_sum_to_fused_logits(heads, name):
  _, _, logits, _, uni = heads[name]
  assert uni.shape == (len(MODS), B, K)
  assert_close(uni.sum(0), logits)


def test_concat_unimodal_is_kernel_block_plus_bias_share(heads, base):
  _, variables, _, _, uni = heads["concat"]
  p = variables["params"]["classifier"]
  rows = np.cumsum((0,) + FEATURE_DIMS)
  for m, f in enumerate(base.feats):
    assert_close(uni[m], f @ p["kernel"][rows[m]:rows[m + 1]] + p["bias"] / len(MODS))


def test_sum_unimodal_is_each_dense(heads, base):
  _, variables, _, _, uni = heads["sum"]
  for m, f in enumerate(base.feats):
    p = variables["params"][f"classifier_{m}"]
    assert_close(uni[m], f @ p["kernel"] + p["bias"])


@pytest.mark.parametrize("name", ("maxout", "film"))
def test_other_fusions_have_no_unimodal_logits(heads, base, name):
  model, head = heads[name][:2]
  assert not hasattr(model.fusion, "unimodal_logits")
  variables = {"params": {**base.variables["params"], "fusion": head["params"]},
               "batch_stats": base.variables["batch_stats"]}
  with pytest.raises(ValueError, match="late"):
    jax.eval_shape(lambda v: model.apply(v, base.feats, method="unimodal_logits"), variables)


def dense(p, x):
  return x @ p["kernel"] + p["bias"]


def test_maxout_formula(heads, base):
  _, variables, logits, z, _ = heads["maxout"]
  p = variables["params"]
  h = jnp.concatenate(base.feats, -1)
  for i in range(2):
    h = dense(p[f"maxout_{i}"], h).reshape(B, MAXOUT["maxout_hidden"], -1).max(-1)
  assert_close(z, h)
  assert_close(logits, dense(p["classifier"], h))


def test_film_formula(heads, base):
  _, variables, logits, z, _ = heads["film"]
  p = variables["params"]
  cond, rest = base.feats[0], jnp.concatenate(base.feats[1:], -1)
  want = nn.relu(dense(p["gamma"], cond) * dense(p["project"], rest) + dense(p["beta"], cond))
  assert_close(z, want)
  assert_close(logits, dense(p["classifier"], want))


def test_film_condition_index_and_needs_two_modalities():
  feats = tuple(jnp.zeros((B, d)) for d in (3, 4, 5))
  shapes = jax.eval_shape(lambda k: fusion.FiLMFusion(K, condition_index=1).init(
      k, feats, False), key())["params"]
  assert shapes["gamma"]["kernel"].shape == (4, 4)
  assert shapes["project"]["kernel"].shape == (8, 4)
  with pytest.raises(ValueError, match="at least 2"):
    jax.eval_shape(lambda k: fusion.FiLMFusion(K).init(k, feats[:1], False), key())


# ----------------------------------------------------------------------------- bfloat16


def test_bfloat16_close_to_float32_params_stay_float32(base, inputs):
  model16 = build("concat", dtype="bfloat16", inputs=inputs)
  shapes = jax.eval_shape(lambda k, x: model16.init(k, x, False), key(), inputs)
  assert {a.dtype for a in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  assert jax.tree.structure(shapes) == jax.tree.structure(base.variables)
  logits, z = jax.jit(lambda v, x: model16.apply(v, x, False))(base.variables, inputs)
  for got, want in ((logits, base.logits), (z, base.z)):
    assert got.dtype == jnp.float32
    assert_finite(got)
    scale = float(jnp.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0.1, atol=0.05 * scale + 1e-3)


# ----------------------------------------------------------------------------- input_early


@pytest.mark.parametrize("enc_cfg,first_layer,in_dim,z_dim",
                         [(MLP, "Dense_0", 30, 7), (TRANSFORMER, "embed", 6, 8)])
def test_input_early_forward(enc_cfg, first_layer, in_dim, z_dim):
  rng = np.random.default_rng(0)
  x = {"a": jnp.asarray(rng.normal(size=(B, 5, 3)), jnp.float32),
       "b": jnp.asarray(rng.normal(size=(B, 5, 3)), jnp.float32),
       "a_lengths": jnp.asarray(LENGTHS)}
  model = models.build_model(model_config("input_early", encoders={}, default=enc_cfg),
                             ("a", "b"), K, spec_of(x))
  assert isinstance(model, models.InputEarlyClassifier) and not model.separable
  (logits, z), variables = jax.jit(lambda k, x: model.init_with_output(k, x, False))(key(), x)
  assert variables["params"]["encoder"][first_layer]["kernel"].shape[0] == in_dim
  assert logits.shape == (B, K) and z.shape == (B, z_dim)
  assert_finite(logits)


def test_input_early_resnet_stacks_spectrograms_on_new_channel_axis():
  x = {"a": jnp.zeros((B, 16, 16)), "b": jnp.ones((B, 16, 16))}
  model = models.build_model(model_config("input_early", encoders={}, default=RESNET),
                             ("a", "b"), K, spec_of(x))
  (logits, z), variables = jax.eval_shape(
      lambda k, x: model.init_with_output(k, x, False), key(), x)
  assert logits.shape == (B, K) and z.shape == (B, 32)
  assert variables["params"]["encoder"]["stem_conv"]["kernel"].shape == (7, 7, 2, 4)
  assert classifier.stack_inputs([x["a"], x["b"]], 3).shape == (B, 16, 16, 2)
  video = jnp.zeros((B, T, 16, 16, 3))
  assert classifier.stack_inputs([video, video], 3).shape == (B, T, 16, 16, 6)


def test_input_early_mismatched_shapes_error(inputs):
  with pytest.raises(ValueError, match="identical input shapes"):
    build("input_early", inputs=inputs, mods=("audio", "text"))
  with pytest.raises(ValueError, match="identical input shapes"):
    classifier.stack_inputs([jnp.zeros((2, 3)), jnp.zeros((2, 4))])


# ----------------------------------------------------------------------------- build_model


@pytest.mark.parametrize("name", [f for f in models.FUSIONS if f not in classifier.ARCHITECTURES])
def test_build_model_every_fusion(name, inputs):
  """Every fusion builds from a config, with a spectrogram ResNet where shapes allow (the
  whole published architectures, PSP and TBJE: tests/test_table4_models.py)."""
  # input_early stacks identical shapes; mmtm needs a ResNet stream per modality
  whole = name in ("input_early", "mmtm")
  mods = ("audio", "sensor") if not whole else ("audio", "audio2")
  x = dict(inputs, audio2=inputs["audio"])
  model = build(name, inputs=x, mods=mods, encoders={"audio": RESNET, "audio2": RESNET})
  (logits, z), _ = jax.eval_shape(lambda k, x: model.init_with_output(k, x, False), key(), x)
  assert logits.shape == (B, K) and z.ndim == 2
  assert model.separable == (not whole)


def test_build_model_options(inputs):
  from configs import default as default_config  # noqa: PLC0415
  model = models.build_model(default_config.get_config().model, ("audio", "sensor"), K,
                             spec_of(inputs))
  assert all(isinstance(e, encoders.MLP) for e in model.encoders)
  assert isinstance(model.fusion, fusion.ConcatFusion)
  mods = ("audio", "sensor")
  assert build("film", inputs=inputs, mods=mods, film_condition="sensor"
               ).fusion.condition_index == 1
  assert build("film", inputs=inputs, mods=mods).fusion.condition_index == 0
  maxout = build("maxout", inputs=inputs, mods=mods).fusion
  assert (maxout.hidden, maxout.pieces) == (6, 3)
  assert build(default=dict(MLP, hidden=5), encoders={}, inputs=inputs,
               mods=mods).encoders[1].hidden == (5,)
  model = build("concat", inputs=inputs, mods=("audio",))
  assert model.encoders[0].dtype == jnp.float32 and model.encoders[0].bn_axis_name is None
  model = models.build_model(model_config("concat"), ("audio",), K, spec_of(inputs),
                             bn_axis_name="batch")
  assert model.encoders[0].bn_axis_name == "batch"
  assert build("concat", dtype="bfloat16", inputs=inputs).encoders[1].dtype == jnp.bfloat16
  assert hash(build("maxout", inputs=inputs)) == hash(build("maxout", inputs=inputs))


def one_line_error(fn, *needles):
  with pytest.raises(ValueError) as err:
    fn()
  msg = str(err.value)
  assert "\n" not in msg
  for needle in needles:
    assert needle in msg, msg


def test_build_model_errors(inputs):
  mods = ("audio", "sensor")
  one_line_error(lambda: build("nope", inputs=inputs, mods=mods), "nope", *models.FUSIONS)
  one_line_error(lambda: build(encoders={"audio": dict(type="vit")}, inputs=inputs,
                               mods=mods), "vit", *models.ENCODERS)
  one_line_error(lambda: build(encoders={"audio": dict(RESNET, depth=3)}, inputs=inputs,
                               mods=mods), "depth", "width", "stage_sizes")
  one_line_error(lambda: build(default=dict(MLP, num_heads=2), encoders={}, inputs=inputs,
                               mods=mods), "num_heads", "hidden", "features")
  one_line_error(lambda: build(dtype="float16", inputs=inputs, mods=mods), "float16",
                 "bfloat16")
  one_line_error(lambda: build("film", inputs=inputs, mods=mods, film_condition="video"),
                 "video", "audio", "sensor")
  one_line_error(lambda: models.build_model(model_config(), ("audio", "depth"), K,
                                            spec_of(inputs)), "depth")
  one_line_error(lambda: build(encoders={"visual": TRANSFORMER}, inputs=inputs,
                               mods=("visual",)), "(L,F)")
  one_line_error(lambda: build(encoders={"text": dict(TRANSFORMER, max_len=4)},
                               inputs=inputs, mods=("text",)), "max_len")
  one_line_error(lambda: build(encoders={"text": dict(TRANSFORMER, num_heads=3)},
                               inputs=inputs, mods=("text",)), "num_heads")
  one_line_error(lambda: build("maxout", inputs=inputs, mods=mods, maxout_hiden=3),
                 "maxout_hiden", "maxout_hidden", "film_condition")
  vec = dict(inputs, vec=jnp.zeros((B, 7)))
  one_line_error(lambda: build(encoders={"vec": RESNET}, inputs=vec, mods=("vec",)),
                 "resnet18", "(H,W)")
  x = dict(inputs, sensor2=inputs["sensor"])
  one_line_error(lambda: build("input_early", encoders={"sensor": RESNET, "sensor2": MLP},
                               inputs=x, mods=("sensor", "sensor2")), "ONE encoder")
