"""The field's loss- and gradient-level balancing methods (issue 21: PMR, MMCosine, CML, AMCo,
MMPareto, LFM, MBSD, InfoReg): each formula against hand-computed values and jitted against
un-jitted, each method's jitted train step on three modalities, a one-epoch run of each on the
default config."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agm_jax import methods
from agm_jax.methods import amco, cml, inforeg, lfm, mbsd, mmcosine, pmr
from agm_jax.models import encoders, fusion
from agm_jax.train import loop
from agm_jax.train import state as train_state
from agm_jax.transforms import carry as carry_tx
from agm_jax.transforms import inforeg as inforeg_tx
from agm_jax.transforms import pareto
from configs import npz_mlp
from tests.conftest import tiny_config, write_k3_npz

NAMES = ("pmr", "mmcosine", "cml", "amco", "mmpareto", "lfm", "mbsd", "inforeg")


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

  # one order per example: (k - 1, B)
  more, fewer = cml.chain_pairs(jnp.asarray([[2, 0, 1], [0, 1, 2]]))
  assert more.tolist() == [[7, 7], [3, 6]] and fewer.tolist() == [[3, 6], [2, 4]]


def test_cml_removal_orders():
  """The authors' (miwae/train.py:67-75): one order per example; BalanceBenchmark's
  (CML_trainer.py:62-67): one per epoch, drawn at its first step, renewed by epoch_end."""

  @jax.jit
  def draws(key):
    k1, k2 = jax.random.split(key)
    first, state = cml.epoch_order(cml.CMLState(jnp.arange(3), jnp.ones(())), k1)
    again, state = cml.epoch_order(state, k2)
    return cml.example_orders(key, 16, 3), first, again, state.fresh

  orders, first, again, fresh = jax.device_get(draws(jax.random.PRNGKey(0)))
  assert (np.sort(orders, axis=1) == [0, 1, 2]).all() and len({tuple(o) for o in orders}) > 1
  assert sorted(first.tolist()) == [0, 1, 2] and again.tolist() == first.tolist()
  assert fresh == 0.0
  for form in ("balancebenchmark", "authors"):
    hp = cml.HParams(lam=0.1, eps=0.0, pairs="chain", form=form, window=methods.Window(0, 1))
    ctx = methods.Context(model=None, modalities=("a", "b", "c"), hp=hp)
    opt_state = cml.make_tx(ctx, optax.sgd(0.1)).init({"w": jnp.zeros(2)})
    state = train_state.TrainState(jnp.zeros((), jnp.int32), {"w": jnp.zeros(2)}, {},
                                   opt_state, jnp.zeros(2, jnp.uint32))
    if form == "authors":                       # no state, nothing to renew
      assert cml.epoch_end(ctx, state, 0, None) is state
      continue
    used = carry_tx.replace_carry(opt_state, cml.CMLState, lambda c: c._replace(fresh=c.fresh * 0))
    renewed = cml.epoch_end(ctx, state.replace(opt_state=used), 0, None)
    assert float(carry_tx.get_carry(renewed.opt_state, cml.CMLState).fresh) == 1.0


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
  # the authors' chain, one order per example: ex 0 and 2 keep audio (1), ex 1 visual (2)
  ex_more, ex_fewer = jnp.asarray([[3, 3, 3]]), jnp.asarray([[1, 2, 1]])
  bb_more, bb_fewer = jnp.asarray([3]), jnp.asarray([1])            # audio left
  window = methods.Window(0, 10)
  hp = {form: cml.HParams(lam=0.5, eps=0.0, pairs=pairs, form=form, window=window)
        for form, pairs in (("authors", "all"), ("authors_miwae", "chain"),
                            ("balancebenchmark", "chain"))}

  @jax.jit
  def values(x):
    return dict(
        penalty=cml.penalty(x, labels, more, fewer, eps=0.0),
        penalty_eps=cml.penalty(x, labels, more, fewer, eps=0.15),
        batch=cml.batch_penalty(x, more, fewer),
        all=cml.loss(x, labels, more, fewer, True, hp["authors"]),
        inactive=cml.loss(x, labels, more, fewer, False, hp["authors"]),
        chain=cml.loss(x, labels, ex_more, ex_fewer, True, hp["authors_miwae"]),
        bb=cml.loss(x, labels, bb_more, bb_fewer, True, hp["balancebenchmark"]))

  out = jax.device_get(values(v))
  # ex 0: full right (0.6), audio right (0.8): 0.2; visual right (0.7): 0.1.
  # ex 1: full wrong, audio right (0.9): sign 0 -> 0; visual wrong (0.6 < 0.7): 0.
  # ex 2: full right (0.8), audio right (0.7 < 0.8): 0; visual right (0.55): 0.
  np.testing.assert_allclose(out["penalty"], 0.3, rtol=1e-6)
  np.testing.assert_allclose(out["penalty_eps"], 0.05, rtol=1e-5)
  # BalanceBenchmark: relu of the batch sums, no sign: audio (0.2+0.2-0.1)=0.3, visual
  # (0.1-0.1-0.25) < 0 -> 0.
  np.testing.assert_allclose(out["batch"], 0.3, rtol=1e-5)
  ce = -np.mean(np.log([0.6, 0.3, 0.8]))
  audio_ce = -np.mean(np.log([0.8, 0.9, 0.7]))
  visual_ce = -np.mean(np.log([0.7, 0.4, 0.55]))
  # "all": the mean CE of every non-empty subset's input
  np.testing.assert_allclose(out["all"], (ce + audio_ce + visual_ce) / 3 + 0.15, rtol=1e-5)
  np.testing.assert_allclose(out["inactive"], ce, rtol=1e-5)
  # chain: inputs full and the kept modality, CE averaged over both (cpm/CPM_Nets.py:162-168,
  # miwae/train.py:280-292); penalty: ex 0 0.2, ex 1 (both wrong, 0.6 < 0.7) 0, ex 2 0.
  kept_ce = -np.mean(np.log([0.8, 0.4, 0.7]))
  np.testing.assert_allclose(out["chain"], (ce + kept_ce) / 2 + 0.5 * 0.2, rtol=1e-5)
  np.testing.assert_allclose(out["bb"], (ce + audio_ce) / 2 + 0.5 * 0.3, rtol=1e-5)
  with pytest.raises(ValueError, match="pairs must be 'chain'"):
    cml.HParams(lam=0.1, eps=0.0, pairs="all", form="balancebenchmark",
                window=methods.Window(0, 1))


def test_cml_miwae_tricks_by_hand():
  """miwae/train.py:294-302 against cpm/CPM_Nets.py:122-123 on one example, label 0, pair
  (full, audio only): the same value; where both predictions are wrong no gradient reaches
  the full input's confidence."""
  labels, more, fewer = jnp.asarray([0, 0]), jnp.asarray([3]), jnp.asarray([1])
  # example 0: both wrong (full 0.6, audio 0.8 on class 1); example 1: full right (0.7)
  v = _logits([[[0.5, 0.5], [0.5, 0.5]], [[0.2, 0.8], [0.1, 0.9]], [[0.5, 0.5], [0.5, 0.5]],
               [[0.4, 0.6], [0.7, 0.3]]])

  @jax.jit
  def both(x):
    return [jax.value_and_grad(lambda y, f=f: f(y, labels, more, fewer, eps=0.0))(x)
            for f in (cml.penalty, cml.miwae_penalty)]

  (cpm_value, cpm_grad), (miwae_value, miwae_grad) = jax.device_get(both(v))
  np.testing.assert_allclose([cpm_value, miwae_value], [0.4, 0.4], rtol=1e-5)
  assert np.abs(cpm_grad[3, 0]).sum() > 0 and np.abs(miwae_grad[3, 0]).sum() == 0
  np.testing.assert_allclose(cpm_grad[1], miwae_grad[1], rtol=1e-6)
  np.testing.assert_allclose(cpm_grad[:, 1], miwae_grad[:, 1], rtol=1e-6)


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


def test_amco_co_loss_reads_the_masked_logits_under_target_logits():
  """BalanceBenchmark (AMCo_trainer.py:143-145) trains each modality on the uni-modal logits
  the fused loss saw: at mask rate 1 the dependent modality's is all zeros, its loss log K
  with no gradient; target "features" trains it on the unmasked ones."""
  uni = jnp.asarray([[[2.0, 0.0, 0.0, 0.0]], [[0.0, 3.0, 0.0, 0.0]]])   # (k=2, B=1, K=4)
  labels = jnp.asarray([1])
  mask = amco.unit_mask(jax.random.PRNGKey(0), 4, 1.0)
  assert float(mask.sum()) == 0.0

  def own(u, target):
    seen = jnp.stack([u[0], u[1] * mask])                              # modality 1 dependent
    return amco.co_loss(seen if target == "logits" else u, labels)

  ce0 = np.log(np.exp(2.0) + 3.0)             # label 1 of (2, 0, 0, 0): 0 - log sum exp
  ce1 = -3.0 + np.log(np.exp(3.0) + 3.0)
  out = jax.device_get(jax.jit(lambda u: [jax.value_and_grad(own)(u, t)
                                          for t in ("logits", "features")])(uni))
  (masked, masked_grad), (clean, clean_grad) = out
  np.testing.assert_allclose([masked, clean], [ce0 + np.log(4), ce0 + ce1], rtol=1e-6)
  assert np.abs(masked_grad[1]).sum() == 0.0 and np.abs(clean_grad[1]).sum() > 0.0
  np.testing.assert_allclose(masked_grad[0], clean_grad[0], rtol=1e-6)


# --------------------------------------------------------------------------- runs


def _run_config(name):
  c = tiny_config(method=name, num_epochs=1, checkpoint_every_steps=0)
  c.model.fusion = "concat"
  c.data.synthetic_options = dict(c.data.synthetic_options, num_train=128, num_dep=64,
                                  num_test=64)
  return c


def _k3_config(name, folder):
  c = npz_mlp.get_config()
  c.method, c.num_epochs, c.batch_size, c.eval_batch_size = name, 1, 32, 32
  c.checkpoint_every_steps, c.competition.enabled = 0, False
  c.data.dir = write_k3_npz(folder)
  c.model.encoder_default = dict(type="mlp", hidden=(8,), features=8)
  if name == "inforeg":
    c.inforeg.strength = (0.95, 0.1, 0.1)
  return c


@pytest.mark.parametrize("name", NAMES)
def test_three_modalities_step(tmp_path, name):
  """The jitted train step of each method on three modalities: every metric finite."""
  run = loop.Run(_k3_config(name, str(tmp_path / "data")))
  state = run.init_state()
  batch = next(run.train_batches(0))
  assert run.ctx.k == 3
  out = jax.jit(lambda s, b: run.method.gradients(run.ctx, s.params, s.batch_stats, b, s.rng,
                                                  True, s.opt_state))(state, batch)
  assert {"acc/a", "acc/b", "acc/c"} <= set(out.metrics)
  assert all(np.isfinite(float(v)) for v in out.metrics.values())
  updates = out.updates(jnp.ones(3)) if callable(out.updates) else out.updates
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(updates))


def _formulas():
  """Each method's own formula on random inputs (three modalities): ``name -> (fn, args)``."""
  rng = np.random.default_rng(0)
  v = jnp.asarray(rng.normal(size=(8, 6, 4)), jnp.float32)             # 2**3 subsets
  uni = v[jnp.asarray([1, 2, 4])]                                       # (3, B, K)
  labels = jnp.asarray(rng.integers(0, 4, 6))
  feats = tuple(jnp.asarray(rng.normal(size=(6, d)), jnp.float32) for d in (3, 5, 2))
  more, fewer = cml.all_pairs(3)
  hp = cml.HParams(lam=0.1, eps=0.0, pairs="all", form="authors", window=methods.Window(0, 9))
  protos = tuple(jnp.asarray(rng.normal(size=(4, f.shape[1])), jnp.float32) for f in feats)
  weights = tuple(jnp.asarray(rng.normal(size=(f.shape[1], 4)), jnp.float32) for f in feats)
  grads = {"encoders_0": {"w": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)},
           "encoders_1": {"w": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)},
           "fusion": {"b": jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)}}
  pareto_tx = pareto.mmpareto(num_modalities=2)
  params = jax.tree.map(lambda g: g[0], grads)
  info_tx = inforeg_tx.inforeg(optax.sgd(0.1), num_modalities=2)
  return {
      "cml": (lambda x: jax.value_and_grad(lambda y: cml.loss(y, labels, more, fewer, True,
                                                              hp))(x), (v,)),
      "pmr": (lambda f: pmr.scores(jnp.stack([-pmr.distances(a, c) for a, c in
                                              zip(f, protos)]), labels), (feats,)),
      "mmcosine": (lambda f: mmcosine.cosine_logits(f, weights, 10.0), (feats,)),
      "amco": (lambda u: (amco.shares(u), amco.unit_mask(jax.random.PRNGKey(1), 8, 0.4)),
               (uni,)),
      "mmpareto": (lambda g: pareto_tx.update(g, pareto_tx.init(None))[0], (grads,)),
      "lfm": (lambda u: jax.grad(lambda w: lfm.loss(w[-1] + w[0], w, labels, 0.3, 0.7,
                                                    "released"))(u), (uni,)),
      "mbsd": (lambda u: jax.value_and_grad(lambda w: mbsd.distillation(w, labels,
                                                                        "toolkit"))(u), (uni,)),
      "inforeg": (lambda g: info_tx.update(jax.tree.map(lambda x: x[0], g),
                                           info_tx.init(params), params,
                                           strength=jnp.asarray([0.5, 0.1]))[0], (grads,)),
  }


@pytest.mark.parametrize("name", NAMES)
def test_formula_jitted_equals_un_jitted(name):
  fn, args = _formulas()[name]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               jax.jit(fn)(*args), fn(*args))


LOGGED = {"pmr": "coeff", "amco": "dependent", "mmpareto": "weight", "inforeg": "strength"}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_one_epoch_on_the_default_config(tmp_path, name):
  summary = loop.train_and_evaluate(_run_config(name), str(tmp_path))
  final = summary["final"]
  assert 0.0 <= final["acc"] <= 1.0 and np.isfinite(final["loss"])
  assert {"acc/audio", "acc/visual"} <= set(final)
  with open(tmp_path / "metrics.jsonl") as f:
    train = [json.loads(x) for x in f if '"train"' in x]
  assert train and all(np.isfinite(line["loss"]) for line in train)
  if name in LOGGED:
    assert all(f"{LOGGED[name]}/audio" in line for line in train)


@pytest.mark.parametrize("name", ["mmcosine", "amco", "mmpareto", "lfm", "mbsd", "inforeg"])
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


# --------------------------------------------------------------------------- LFM, MBSD, InfoReg


def test_lfm_rules_by_hand():
  np.testing.assert_allclose(lfm.fitted_cls_weight(0), 0.204623704, rtol=1e-6)
  np.testing.assert_allclose(lfm.fitted_cls_weight(10), 0.2477589, rtol=1e-5)
  p, q = _logits([[0.5, 0.5]]), _logits([[0.9, 0.1]])
  m = np.asarray([0.7, 0.3])
  kl = lambda a, b: np.sum(a * np.log(a / b))  # noqa: E731
  pn, qn = np.asarray([0.5, 0.5]), np.asarray([0.9, 0.1])
  released = (kl(m, pn) + kl(m, qn)) / 2          # F.kl_div(p.log(), m) is KL(m || p)
  js = (kl(pn, m) + kl(qn, m)) / 2
  np.testing.assert_allclose([released, js], [0.11797, 0.10175], rtol=1e-3)
  for kind, value in (("released", released), ("js", js)):
    np.testing.assert_allclose(lfm.pair_alignment(p, q, kind), value, rtol=1e-5)
    np.testing.assert_allclose(lfm.alignment(jnp.stack([p, q]), kind), value, rtol=1e-5)
    np.testing.assert_allclose(lfm.alignment(jnp.stack([p, p, p]), kind), 0.0, atol=1e-7)
  state = lfm.LFMState(jnp.asarray(1), jnp.asarray(0.5), jnp.asarray(1e-4))
  # h = 0.5 * 10 + 0.5 * (-20) = -5: a_align 0.5 + 1e-4 * 5
  np.testing.assert_allclose(lfm.learned_update(state, 10.0, -20.0, 1).align_weight, 0.5005,
                             rtol=1e-6)
  halved = lfm.learned_update(state, 10.0, -20.0, 20)       # lr_alpha halves at epoch 20
  np.testing.assert_allclose(halved.align_weight, 0.50025, rtol=1e-6)
  np.testing.assert_allclose(halved.lr_alpha, 5e-5, rtol=1e-6)
  top = lfm.learned_update(state._replace(align_weight=jnp.asarray(0.95)), 10.0, -20.0, 1)
  np.testing.assert_allclose(top.align_weight, 0.95, rtol=1e-6)   # clipped


def test_mbsd_terms_by_hand():
  u_i = _logits([[0.7, 0.3], [0.2, 0.8]])
  u_j = _logits([[0.4, 0.6], [0.3, 0.7]])
  labels = jnp.asarray([0, 0])
  w, rs, kl = mbsd.pair_terms(u_i, u_j, labels, rs_on_probs=False)
  # example 0: i right (0.7), j wrong (0.4): w 0.3; example 1: both wrong: w 0.
  np.testing.assert_allclose(w, [0.3, 0.0], atol=1e-6)
  rs0 = np.mean([np.log(0.7 / 0.4) ** 2, np.log(0.3 / 0.6) ** 2])
  np.testing.assert_allclose(rs[0], rs0, rtol=1e-5)
  np.testing.assert_allclose(kl[0], 0.4 * (np.log(0.4) - 0.7), rtol=1e-5)
  pair = 0.3 * (rs0 + 0.4 * (np.log(0.4) - 0.7)) / 2
  for form in mbsd.FORMS:                       # k = 2: the two forms agree
    np.testing.assert_allclose(mbsd.distillation(jnp.stack([u_i, u_j]), labels, form), pair,
                               rtol=1e-5)
  # k = 3 (MBSD_trainer.py:197-222): the toolkit's RS on probabilities, mean over the pairs
  _, rs_p, _ = mbsd.pair_terms(u_i, u_j, labels, rs_on_probs=True)
  np.testing.assert_allclose(rs_p[0], np.mean([0.3**2, 0.3**2]), rtol=1e-5)
  three = jnp.stack([u_i, u_j, u_i])            # pairs (i, j), (i, i): w 0, (j, i)
  probs = 0.3 * (0.09 + 0.4 * (np.log(0.4) - 0.7)) / 2
  np.testing.assert_allclose(mbsd.distillation(three, labels, "toolkit"), 2 * probs / 3,
                             rtol=1e-5)
  np.testing.assert_allclose(mbsd.distillation(three, labels, "logits"), 2 * pair, rtol=1e-5)


def test_mbsd_loss_outside_the_window_is_the_fused_ce():
  """MBSD_trainer.py:226-228: outside the window only the fused cross-entropy."""
  uni = jnp.stack([_logits([[0.7, 0.3]]), _logits([[0.4, 0.6]])])
  fused, labels = _logits([[0.6, 0.4]]), jnp.asarray([0])
  ce, own = -np.log(0.6), -np.log(0.7) - np.log(0.4)
  np.testing.assert_allclose(mbsd.loss(fused, uni, labels, False, "toolkit"), ce, rtol=1e-5)
  inside = ce + own + float(mbsd.distillation(uni, labels, "toolkit"))
  np.testing.assert_allclose(mbsd.loss(fused, uni, labels, True, "toolkit"), inside, rtol=1e-5)


class _NamedAfter(nn.Module):
  """Its first layer's name sorts after its second's."""

  @nn.compact
  def __call__(self, x, train):
    del train
    return nn.Dense(2, name="a_second")(nn.Dense(3, name="z_first")(x))


def test_lfm_first_param_is_the_first_created():
  """PyTorch's model.parameters()[0] (Crema_epoch_learnable.py:87): the first created, not
  the first in sorted order; on a ResNet the stem kernel."""
  x = jnp.zeros((1, 4))
  assert lfm.first_param_path(_NamedAfter(), x) == ("z_first", "kernel")
  sorted_first = jax.tree_util.tree_flatten_with_path(_NamedAfter().init(jax.random.PRNGKey(0),
                                                                         x, False))[0][0][0]
  assert sorted_first[1].key == "a_second"
  resnet = encoders.ResNet18(width=2, stage_sizes=(1,))
  assert lfm.first_param_path(resnet, jnp.zeros((1, 8, 8, 1))) == ("stem_conv", "kernel")


def test_inforeg_rules_by_hand():
  strength = jnp.asarray([0.95, 0.1])
  beta = inforeg.regulation(jnp.asarray([3.0, 2.5]), strength)
  np.testing.assert_allclose(beta, [0.95 * np.exp(np.tanh(0.5)), 0.0], rtol=1e-6)
  beta = inforeg.regulation(jnp.asarray([1.0, 2.0, 1.5]), jnp.asarray([1.0, 0.1, 2.0]))
  np.testing.assert_allclose(beta, [0.0, 0.1 * np.exp(np.tanh(0.5)), 0.0], rtol=1e-6)
  np.testing.assert_allclose(inforeg.regulation(jnp.asarray([1.0, 1.0]), strength), [0, 0])
  # The window: traces 1, 2, 4 (one encoder): tr1 = 7/10, tr2 = 3/10, k = 4/7 > 0.05.
  history = np.zeros((inforeg_tx.HISTORY, 1))
  history[-3:, 0] = [1.0, 2.0, 4.0]
  assert inforeg_tx.window_open(history, 3, 0)
  history[-3:, 0] = [4.0, 4.0, 4.0]     # tr1 = 12/10, tr2 = 8/10: k = 1/3
  assert inforeg_tx.window_open(history, 3, 0)
  history[:, 0] = 4.0                   # flat for 11 epochs: k = 0
  assert not inforeg_tx.window_open(history, 11, 0) and inforeg_tx.window_open(history, 0, 0)
  # The transform: encoder 0 pulled back by 0.5 (theta - anchor); Fisher traces of the result.
  params = {"encoders_0": {"w": jnp.asarray([[2.0, 3.0]])}, "encoders_1": {"w": jnp.ones((1, 2))},
            "fusion": {"b": jnp.ones((2,))}}
  tx = inforeg_tx.inforeg(optax.identity(), num_modalities=2)
  state = tx.init(jax.tree.map(jnp.zeros_like, params))      # anchor: zeros
  grads = jax.tree.map(jnp.ones_like, params)
  out, state = tx.update(grads, state, params, strength=jnp.asarray([0.5, 0.0]))
  np.testing.assert_allclose(out["encoders_0"]["w"], [[2.0, 2.5]])
  np.testing.assert_allclose(out["encoders_1"]["w"], [[1.0, 1.0]])
  np.testing.assert_allclose(out["fusion"]["b"], [1.0, 1.0])
  np.testing.assert_allclose(state.fim, [(4.0 + 6.25) / 2, 1.0])
  closed = inforeg_tx.epoch_update(state, params, modality=None)
  assert int(closed.epochs) == 1 and float(closed.fim.sum()) == 0.0
  np.testing.assert_allclose(closed.history[-1], [5.125, 1.0])
  np.testing.assert_allclose(closed.anchor["encoders_0"]["w"], [[2.0, 3.0]])
