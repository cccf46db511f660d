"""PMR, MMCosine, CML and AMCo (issue 21): each formula against hand-computed values, the
jitted step against the un-jitted one, a one-epoch run of each on the default config (two
modalities) and on a three-modality npz folder."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agm_jax import methods
from agm_jax.methods import amco, cml, mmcosine, pmr
from agm_jax.models import fusion
from agm_jax.train import loop
from agm_jax.transforms import pareto
from configs import npz_mlp
from tests.conftest import tiny_config

NAMES = ("pmr", "mmcosine", "cml", "amco", "mmpareto")


# --------------------------------------------------------------------------- CML


def _logits(probs):
  return jnp.log(jnp.asarray(probs, jnp.float32))


def test_cml_pairs():
  more, fewer = cml.all_pairs(2)
  assert sorted(zip(more.tolist(), fewer.tolist())) == [(3, 1), (3, 2)]
  more, fewer = cml.all_pairs(3)
  assert len(more) == 3 * 4 - 3 and set(fewer) == {1, 2, 3, 4, 5, 6}
  # removing modality 2 (bit 4), then 0 (bit 1): 7 -> 3 -> 2
  more, fewer = cml.chain_pairs(jnp.asarray([2, 0, 1]))
  assert more.tolist() == [7, 3] and fewer.tolist() == [3, 2]
  more, fewer = cml.chain_pairs(jnp.asarray([1, 0]))
  assert more.tolist() == [3] and fewer.tolist() == [1]


def test_cml_penalty_by_hand():
  """k = 2, three examples, label 0, 0, 1; pair (full, audio only) and (full, visual only).
  Rows: 0 none, 1 audio, 2 visual, 3 both."""
  v = jnp.stack([
      _logits([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]),
      _logits([[0.8, 0.2], [0.9, 0.1], [0.3, 0.7]]),    # audio only
      _logits([[0.7, 0.3], [0.4, 0.6], [0.45, 0.55]]),  # visual only
      _logits([[0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]),    # full
  ])
  labels = jnp.asarray([0, 0, 1])
  more, fewer = cml.all_pairs(2)
  # ex 0: full right (0.6), audio right (0.8): 0.2; visual right (0.7): 0.1.
  # ex 1: full wrong, audio right (0.9): sign 0 -> 0; visual wrong (0.6 < 0.7): 0.
  # ex 2: full right (0.8), audio right (0.7 < 0.8): 0; visual right (0.55): 0.
  np.testing.assert_allclose(cml.penalty(v, labels, more, fewer, eps=0.0), 0.3, rtol=1e-6)
  np.testing.assert_allclose(cml.penalty(v, labels, more, fewer, eps=0.15), 0.05, rtol=1e-5)
  # BalanceBenchmark: relu of the batch sums, no sign: audio (0.2+0.2-0.1)=0.3, visual
  # (0.1-0.1-0.25) < 0 -> 0.
  np.testing.assert_allclose(cml.batch_penalty(v, more, fewer), 0.3, rtol=1e-5)
  hp = cml.HParams(lam=0.5, eps=0.0, pairs="all", form="authors",
                   window=methods.Window(0, 10))
  ce = -np.mean(np.log([0.6, 0.3, 0.8]))
  np.testing.assert_allclose(cml.loss(v, labels, more, fewer, True, hp), ce + 0.15, rtol=1e-5)
  np.testing.assert_allclose(cml.loss(v, labels, more, fewer, False, hp), ce, rtol=1e-5)
  bb = cml.HParams(lam=0.5, eps=0.0, pairs="chain", form="balancebenchmark",
                   window=methods.Window(0, 10))
  chain_more, chain_fewer = jnp.asarray([3]), jnp.asarray([1])      # audio left
  audio_ce = -np.mean(np.log([0.8, 0.9, 0.7]))
  np.testing.assert_allclose(cml.loss(v, labels, chain_more, chain_fewer, True, bb),
                             (ce + audio_ce) / 2 + 0.5 * 0.3, rtol=1e-5)
  with pytest.raises(ValueError, match="pairs must be 'chain'"):
    cml.HParams(lam=0.1, eps=0.0, pairs="all", form="balancebenchmark",
                window=methods.Window(0, 1))


# --------------------------------------------------------------------------- PMR


def test_pmr_prototype_rules_by_hand():
  z = jnp.asarray([[0.0, 0.0], [3.0, 4.0]])
  protos = jnp.asarray([[0.0, 0.0], [0.0, 4.0]])
  d = pmr.distances(z, protos)
  np.testing.assert_allclose(d, [[0.0, 4.0], [5.0, 3.0]], atol=1e-5)
  labels = jnp.asarray([0, 1])
  neg = jnp.stack([-d, jnp.zeros_like(d)])   # modality 1: uninformative, score 0.5 + 0.5
  s = pmr.scores(neg, labels)
  want0 = 1 / (1 + np.exp(-4.0)) + 1 / (1 + np.exp(-2.0))
  np.testing.assert_allclose(s, [want0, 1.0], rtol=1e-5)
  np.testing.assert_allclose(pmr.coefficients(s, 0.6), [0.0, 0.6])
  np.testing.assert_allclose(pmr.coefficients(jnp.asarray([1.0, 1.0]), 0.6), [0.0, 0.0])
  np.testing.assert_allclose(pmr.coefficients(jnp.asarray([1.0, 2.0, 0.5]), 1.0), [1, 0, 1])
  np.testing.assert_allclose(pmr.entropy(jnp.zeros((1, 4))), [np.log(4.0)], rtol=1e-6)


def test_pmr_epoch_update_by_hand():
  state = pmr.init_state(3, (2,))
  feats = (jnp.asarray([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),)
  sums, counts = pmr.class_sums(feats, jnp.asarray([0, 0, 1]), 3)
  np.testing.assert_allclose(sums[0], [[4, 6], [5, 6], [0, 0]])
  np.testing.assert_allclose(counts, [2, 1, 0])
  # Before the first epoch ends the steps use the running class means.
  np.testing.assert_allclose(pmr.used_prototypes(state, sums, counts)[0],
                             [[2, 3], [5, 6], [0, 0]])
  state = pmr.epoch_update(state._replace(sums=sums, counts=counts), momentum=0.25)
  np.testing.assert_allclose(state.prototypes[0], [[2, 3], [5, 6], [0, 0]])
  assert bool(state.ready) and int(state.epoch) == 1 and float(state.counts.sum()) == 0
  sums, counts = pmr.class_sums((jnp.asarray([[6.0, 7.0]]),), jnp.asarray([0]), 3)
  state = pmr.epoch_update(state._replace(sums=sums, counts=counts), momentum=0.25)
  # class 0: 0.75 * (6, 7) + 0.25 * (2, 3); classes 1, 2 unseen: kept.
  np.testing.assert_allclose(state.prototypes[0], [[5.0, 6.0], [5, 6], [0, 0]])
  np.testing.assert_allclose(pmr.used_prototypes(state, sums, counts)[0], state.prototypes[0])


# --------------------------------------------------------------------------- MMCosine


@pytest.mark.parametrize("head", ["concat", "sum"])
def test_mmcosine_reads_each_modality_weight_block(head):
  model = (fusion.ConcatFusion(3) if head == "concat" else fusion.SumFusion(3))
  feats = (jnp.ones((1, 2)), jnp.ones((1, 4)))
  params = model.init(jax.random.PRNGKey(0), feats, False)["params"]

  class Holder:   # a model whose unimodal_logits is the head's
    @staticmethod
    def apply(variables, features, method=None):
      del method
      return model.apply(variables, features, method="unimodal_logits")

  weights = mmcosine.class_weights(Holder, params, (2, 4))
  if head == "concat":
    kernel = params["classifier"]["kernel"]
    np.testing.assert_allclose(weights[0], kernel[:2], atol=1e-6)
    np.testing.assert_allclose(weights[1], kernel[2:], atol=1e-6)
  else:
    np.testing.assert_allclose(weights[0], params["classifier_0"]["kernel"], atol=1e-6)
    np.testing.assert_allclose(weights[1], params["classifier_1"]["kernel"], atol=1e-6)


def test_mmcosine_logits_by_hand():
  feats = (jnp.asarray([[3.0, 4.0]]), jnp.asarray([[0.0, 0.0]]))
  weights = (jnp.asarray([[1.0, 0.0], [0.0, 2.0]]), jnp.asarray([[1.0, 1.0], [1.0, -1.0]]))
  per = mmcosine.cosine_logits(feats, weights, 10.0)
  np.testing.assert_allclose(per[0], [[6.0, 8.0]], rtol=1e-6)   # 10 * (0.6, 0.8)
  np.testing.assert_allclose(per[1], [[0.0, 0.0]])               # zero feature: cosine 0


# --------------------------------------------------------------------------- AMCo


def test_amco_rules_by_hand():
  np.testing.assert_allclose(amco.mask_rate(5, 0, 0.3), 0.0)          # epoch 0: l_t = 0
  np.testing.assert_allclose(amco.mask_rate(1, 1, 0.3), 0.5, atol=1e-6)   # sin(pi/6)
  np.testing.assert_allclose(amco.mask_rate(3, 1, 0.3), 1.0, atol=1e-6)
  np.testing.assert_allclose(amco.mask_rate(30, 2, 0.3), 1.0, atol=1e-6)
  mask = amco.unit_mask(jax.random.PRNGKey(0), 10, 0.35)
  assert float(mask.sum()) == 7.0 and set(np.asarray(mask).tolist()) <= {0.0, 1.0}
  # shares: example 0 all mass on modality 0; example 1 uniform over the 2 x 2 entries.
  uni = jnp.stack([jnp.asarray([[10.0, 10.0], [0.0, 0.0]]),
                   jnp.asarray([[-10.0, -10.0], [0.0, 0.0]])])
  s = amco.shares(uni)
  np.testing.assert_allclose(s, [0.75, 0.25], atol=1e-6)
  np.testing.assert_allclose(s.sum(), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------- runs


def _run_config(name):
  c = tiny_config(method=name, num_epochs=1, checkpoint_every_steps=0)
  c.model.fusion = "concat"
  c.data.synthetic_options = dict(c.data.synthetic_options, num_train=128, num_dep=64,
                                  num_test=64)
  return c


def _write_k3(folder):
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  for split, n in (("train", 64), ("dep", 32), ("test", 32)):
    label = rng.integers(0, 3, n)
    arrays = {m: (rng.normal(size=(n, 4)) + scale * np.eye(3, 4)[label]).astype(np.float32)
              for m, scale in (("a", 2.0), ("b", 1.0), ("c", 0.5))}
    np.savez(os.path.join(folder, f"{split}.npz"), label=label, **arrays)
  return folder


@pytest.mark.parametrize("name", NAMES)
def test_jitted_step_equals_the_eager_one(name):
  run = loop.Run(_run_config(name))
  state = run.init_state()
  batch = next(run.train_batches(0))

  def step(s, b):
    out = run.method.gradients(run.ctx, s.params, s.batch_stats, b, s.rng, True, s.opt_state)
    return out.updates, out.metrics, out.tx_kwargs

  jitted = jax.jit(step)(state, batch)
  with jax.disable_jit():
    eager = step(state, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
               jitted, eager)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_one_epoch_on_the_default_config_and_on_three_modalities(tmp_path, name):
  summary = loop.train_and_evaluate(_run_config(name), str(tmp_path / "k2"))
  final = summary["final"]
  assert 0.0 <= final["acc"] <= 1.0 and np.isfinite(final["loss"])
  assert {"acc/audio", "acc/visual"} <= set(final)
  logged = {"pmr": "coeff", "amco": "dependent"}.get(name)
  if logged:
    with open(tmp_path / "k2" / "metrics.jsonl") as f:
      train = [json.loads(x) for x in f if '"train"' in x]
    assert train and all(f"{logged}/audio" in line for line in train)
  c = npz_mlp.get_config()
  c.method, c.num_epochs, c.batch_size, c.eval_batch_size = name, 1, 32, 32
  c.checkpoint_every_steps, c.competition.enabled = 0, False
  c.data.dir = _write_k3(str(tmp_path / "data"))
  c.model.encoder_default = dict(type="mlp", hidden=(8,), features=8)
  summary = loop.train_and_evaluate(c, str(tmp_path / "k3"))
  assert {"acc/a", "acc/b", "acc/c"} <= set(summary["final"])
  assert np.isfinite(summary["final"]["loss"])


@pytest.mark.parametrize("name", ["mmcosine", "amco", "mmpareto"])
def test_late_head_methods_reject_early_fusion(name):
  with pytest.raises(ValueError, match="supported fusions: sum, concat"):
    loop.Run(tiny_config(method=name, **{"model.fusion": "maxout"}))


def test_bad_settings_name_the_key():
  with pytest.raises(ValueError, match="pmr.momentum must be in"):
    methods.hparams(methods.get("pmr"), tiny_config(**{"pmr.momentum": 1.0}))
  with pytest.raises(ValueError, match="amco.target must be one of"):
    methods.hparams(methods.get("amco"), tiny_config(**{"amco.target": "both"}))
  with pytest.raises(ValueError, match="cml.pairs must be one of"):
    methods.hparams(methods.get("cml"), tiny_config(**{"cml.pairs": "some"}))


# --------------------------------------------------------------------------- MMPareto


def _pareto_tree(g_enc, g_head):
  return {"encoders_0": {"w": jnp.asarray(g_enc, jnp.float32)},
          "fusion": {"b": jnp.asarray(g_head, jnp.float32)}}


def test_mmpareto_direction_by_hand():
  tx = pareto.mmpareto(num_modalities=1, gamma=1.5)
  # Conflicting: g_mm (1, 0), g_u (-1, 1): c = (2 + 1) / (1 + 2 + 2) = 0.6,
  # d = 2 (0.6 g_mm + 0.4 g_u) = (0.4, 0.8), shorter than the plain sum (0, 1): rescaled to 1.
  grads = _pareto_tree([[1.0, 0.0], [-1.0, 1.0]], [[1.0, 2.0], [3.0, 4.0]])
  out, state = jax.jit(tx.update)(grads, tx.init(None))
  np.testing.assert_allclose(out["encoders_0"]["w"], 1.5 * np.asarray([0.4, 0.8]) / np.sqrt(0.8),
                             rtol=1e-5)
  np.testing.assert_allclose(out["fusion"]["b"], [4.0, 6.0])      # the plain sum
  np.testing.assert_allclose(state.weight, [0.6], rtol=1e-6)
  np.testing.assert_allclose(state.cosine, [-1 / np.sqrt(2)], rtol=1e-6)
  # The Pareto direction has the same inner product with both gradients.
  d = np.asarray([0.4, 0.8])
  assert np.isclose(d @ [1.0, 0.0], d @ [-1.0, 1.0])
  # Agreeing: (1/2, 1/2): d = g_mm + g_u = (2, 1), as long as the plain sum: gamma d.
  grads = _pareto_tree([[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]])
  out, state = tx.update(grads, tx.init(None))
  np.testing.assert_allclose(out["encoders_0"]["w"], [3.0, 1.5], rtol=1e-6)
  np.testing.assert_allclose(state.weight, [0.5])
  # Outside a window (active False): the plain sum everywhere, the state kept.
  out, kept = tx.update(grads, state, active=False)
  np.testing.assert_allclose(out["encoders_0"]["w"], [2.0, 1.0])
  np.testing.assert_allclose(kept.weight, state.weight)
  np.testing.assert_allclose(pareto.min_norm_weights(1.0, 2.0, 5.0), [0.999, 0.001], rtol=1e-4)
  with pytest.raises(ValueError, match="leading axis of 2"):
    tx.update({"encoders_0": {"w": jnp.ones((3, 2))}}, tx.init(None))
