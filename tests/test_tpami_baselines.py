"""T-PAMI 2024 baselines and heads (issue 16 item 5): ModDrop's masks, the neuron-dropout
schedules by hand, the MLP head's zero-out uni-modal logits, the bias split of Table 14, and
one epoch of each new method on the tiny config."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agm_jax.methods import moddrop
from agm_jax.models import build_model
from agm_jax.models import fusion as fus
from agm_jax.train import loop
from agm_jax.transforms import dropout_schedules as ds
from tests.conftest import read_lines, tiny_config

# --------------------------------------------------------------------------- ModDrop


def test_moddrop_never_drops_every_modality_and_its_rates():
  keep = np.asarray(moddrop.keep_patterns(0.5, jax.random.PRNGKey(0), 2, 30000))
  assert keep.shape == (2, 30000) and keep.any(0).all()
  # Bernoulli(1/2) pairs conditioned on one kept: (both, only 0, only 1) each 1/3, so a
  # modality is dropped with probability (p - p^2) / (1 - p^2) = 1/3.
  both, only0 = (keep[0] & keep[1]).mean(), (keep[0] & ~keep[1]).mean()
  np.testing.assert_allclose([both, only0, 1 - keep.mean(1)[0], 1 - keep.mean(1)[1]],
                             [1 / 3] * 4, atol=0.015)
  # Three modalities at p = 0.5: P(drop m | not all) = (0.5 - 0.125) / 0.875 = 3/7.
  keep3 = np.asarray(moddrop.keep_patterns(0.5, jax.random.PRNGKey(1), 3, 30000))
  assert keep3.any(0).all()
  np.testing.assert_allclose(1 - keep3.mean(1), [3 / 7] * 3, atol=0.015)
  assert np.asarray(moddrop.keep_patterns(0.0, jax.random.PRNGKey(2), 2, 100)).all()


def test_moddrop_zeroes_and_rescales_as_the_released_opm():
  feats = (jnp.ones((3, 2)), jnp.full((3, 4), 2.0))
  keep = jnp.array([[True, False, True], [True, True, False]])
  a, v = moddrop.drop_modalities(feats, keep, 0.5)    # theta = p = 0.5: kept times 2
  np.testing.assert_allclose(a[:, 0], [2.0, 0.0, 2.0])
  np.testing.assert_allclose(v[:, 0], [4.0, 4.0, 0.0])
  with pytest.raises(ValueError, match="p must be in"):
    moddrop.hparams(dict(p=1.0, start_epoch=0, end_epoch=1))


# --------------------------------------------------------------------------- schedules


def test_dropout_schedules_by_hand():
  assert float(ds.constant_rate(1234, p=0.5)) == 0.5
  np.testing.assert_allclose([float(ds.annealed_rate(t, p=0.5, anneal_steps=100))
                              for t in (0, 50, 100, 200)], [0.5, 0.25, 0.0, 0.0])
  # theta(t) = (1 - 0.5) exp(-0.1 t) + 0.5; rate = 1 - theta = 0.5 (1 - e^{-0.1 t}).
  np.testing.assert_allclose([float(ds.curriculum_rate(t, p=0.5, gamma=0.1))
                              for t in (0, 10, 1000)], [0.0, 0.5 * (1 - math.exp(-1)), 0.5],
                             rtol=1e-6)
  np.testing.assert_allclose(float(ds.drop_rate("annealed", 25, p=0.4, anneal_steps=100,
                                                gamma=0.0)), 0.3, rtol=1e-6)
  with pytest.raises(ValueError, match="schedule 'linear' is unknown"):
    ds.drop_rate("linear", 0, p=0.5, anneal_steps=1, gamma=0.0)


def test_evolutional_dropout_probabilities_and_mask():
  x = jnp.array([[3.0, 0.0], [4.0, 1.0]])          # column norms 5 and 1
  np.testing.assert_allclose(ds.evolutional_probabilities(x), [5 / 6, 1 / 6], rtol=1e-6)
  np.testing.assert_allclose(ds.evolutional_probabilities(jnp.zeros((2, 4))), [0.25] * 4)
  xs = jnp.tile(x, (4000, 1))
  mask = ds.evolutional_mask(xs, jax.random.PRNGKey(0), draws=3)
  q = np.array([5 / 6, 1 / 6])
  np.testing.assert_allclose((np.asarray(mask) * q * 3).sum(1), 3.0, rtol=1e-5)  # 3 draws
  np.testing.assert_allclose(np.asarray(mask).mean(0), [1.0, 1.0], atol=0.05)   # unbiased


def test_drop_state_counts_steps_and_keeps_rates():
  tx = ds.with_drop_state(optax.sgd(0.1), num_modalities=2)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  for _ in range(2):
    _, state = tx.update({"w": jnp.ones(3)}, state, params, drop_rate=jnp.array([0.1, 0.2]))
  assert int(state.count) == 2
  np.testing.assert_allclose(optax.tree_utils.tree_get(state, "drop_rate"), [0.1, 0.2])
  with pytest.raises(TypeError, match="drop_rate"):
    tx.update({"w": jnp.ones(3)}, state, params)


# --------------------------------------------------------------------------- heads


def test_mlp_head_unimodal_logits_zero_out_by_hand():
  head = fus.MLPFusion(2, hidden=(2,))
  f = (jnp.array([[1.0, 2.0]]), jnp.array([[3.0]]))
  params = {"hidden_0": {"kernel": jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                         "bias": jnp.array([0.0, -1.0])},
            "classifier": {"kernel": jnp.eye(2), "bias": jnp.array([0.5, 0.0])}}
  assert jax.tree.structure(head.init(jax.random.PRNGKey(0), f, False)["params"]) == \
      jax.tree.structure(params)
  uni = head.apply({"params": params}, f, method="unimodal_logits")
  # (1, 2, 0) -> relu(1, 1) -> (1.5, 1); (0, 0, 3) -> relu(3, 2) -> (3.5, 2).
  np.testing.assert_allclose(uni[:, 0], [[1.5, 1.0], [3.5, 2.0]])
  logits, z = head.apply({"params": params}, f, False)
  np.testing.assert_allclose(logits[0], [4.5, 4.0])     # (1, 2, 3) -> relu(4, 4)
  np.testing.assert_allclose(z[0], [4.0, 4.0])


@pytest.mark.parametrize("split, want", [("equal", [2.5, 3.5]), ("none", [1.0, 2.0]),
                                         ("full", [4.0, 5.0]), ("1/3,2/3", [2.0, 4.0])])
def test_concat_bias_split(split, want):
  f = (jnp.array([[1.0]]), jnp.array([[2.0]]))
  params = {"classifier": {"kernel": jnp.array([[1.0], [1.0]]), "bias": jnp.array([3.0])}}
  uni = fus.ConcatFusion(1, bias_split=split).apply({"params": params}, f,
                                                     method="unimodal_logits")
  np.testing.assert_allclose(uni[:, 0, 0], want)


def test_bias_split_options_are_checked():
  assert fus.bias_fractions("equal", 3) == (1 / 3,) * 3
  with pytest.raises(ValueError, match="bias_split '1/2' is not one of"):
    fus.bias_fractions("1/2", 2)
  spec = {"audio": ((4,), jnp.float32), "visual": ((4,), jnp.float32)}
  c = tiny_config(**{"model.fusion": "sum"})
  c.model.fusion_options.bias_split = "none"
  with pytest.raises(ValueError, match="applies to concat fusion only"):
    build_model(c.model, ("audio", "visual"), 3, spec)
  c.model.fusion = "concat"
  c.model.fusion_options.bias_split = "2"
  with pytest.raises(ValueError, match="fusion_options.bias_split '2'"):
    build_model(c.model, ("audio", "visual"), 3, spec)


# --------------------------------------------------------------------------- one epoch


@pytest.mark.parametrize("name, overrides", [
    ("moddrop", {}),
    ("feature_dropout", {"feature_dropout.schedule": "curriculum"}),
    ("feature_dropout", {"feature_dropout.schedule": "evolutional"}),
    ("opm", {"model.fusion": "mlp_head", "model.fusion_options.mlp_hidden": (8,),
             "opm.start_epoch": 0}),
    ("ogm", {"model.fusion_options.bias_split": "none", "ogm.start_epoch": 0}),
])
def test_one_epoch(tmp_path, name, overrides):
  c = tiny_config(method=name, num_epochs=1, checkpoint_every_steps=0, **overrides)
  c.data.synthetic_options = dict(c.data.synthetic_options, num_train=64, num_dep=32,
                                  num_test=32)
  final = loop.train_and_evaluate(c, str(tmp_path))["final"]
  assert 0.0 <= final["acc"] <= 1.0 and np.isfinite(final["loss"])
  if name in ("moddrop", "feature_dropout"):
    train = [line for line in read_lines(tmp_path) if "drop_rate/audio" in line]
    assert train and all(0.0 <= line["drop_rate/visual"] < 1.0 for line in train)
