"""The AGM paper's training rules as the released code runs them: the conditional
gradient-norm clip, kappa held after the modulation window, the unbounded exponent, and the
trainer wiring (hand-computed values)."""

import ast
import io
import math
import os
import re
import tokenize

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agm_jax.models.classifier import OUTPUT_LAYER
from agm_jax.train import loop, state, validate
from agm_jax.transforms import clip
from agm_jax.transforms.agm import agm, agm_coefficients
from tests.conftest import CONFIG_MODULES, ROOT, experiment_configs, read_lines, tiny_config

WHERE = OUTPUT_LAYER


def grads(out_kernel, enc_kernel):
  return {"fusion": {"classifier": {"kernel": jnp.asarray(out_kernel, jnp.float32),
                                    "bias": jnp.zeros((2,), jnp.float32)}},
          "encoders_0": {"Dense_0": {"kernel": jnp.asarray(enc_kernel, jnp.float32)}}}


def run_clip(g, threshold=1.0, max_norm=1.0):
  tx = clip.clip_by_global_norm_if(threshold, max_norm, where=WHERE)
  return jax.jit(tx.update)(g, tx.init(g))


def test_clip_fires_when_an_output_entry_leaves_the_interval():
  # watched max 2.0 > 1: norm = sqrt(0.5^2 + 2^2 + 2^2) = sqrt(8.25) = 2.8722813
  out, st = run_clip(grads([[0.5, 2.0]], [[2.0]]))
  scale = 1.0 / (math.sqrt(8.25) + 1e-6)          # 0.34815524
  np.testing.assert_allclose(out["fusion"]["classifier"]["kernel"], [[0.5 * scale, 2 * scale]],
                             rtol=1e-6)
  np.testing.assert_allclose(out["encoders_0"]["Dense_0"]["kernel"], [[2 * scale]], rtol=1e-6)
  assert float(st.clipped) == 1.0 and int(st.count) == 1
  np.testing.assert_allclose(float(optax.tree.norm(out)), 1.0, rtol=1e-5)


def test_clip_fires_below_minus_threshold_and_not_at_the_threshold():
  # an encoder entry of 3 does not count: only the output layer is watched
  out, st = run_clip(grads([[1.0, -1.0]], [[3.0]]))
  assert float(st.clipped) == 0.0
  np.testing.assert_array_equal(out["encoders_0"]["Dense_0"]["kernel"], [[3.0]])
  out, st = run_clip(grads([[0.1, -1.001]], [[3.0]]))
  assert float(st.clipped) == 1.0
  # UR-Funny: threshold and norm 5
  out, st = run_clip(grads([[4.9, -5.0]], [[30.0]]), threshold=5.0, max_norm=5.0)
  assert float(st.clipped) == 0.0
  out, st = run_clip(grads([[5.01, 0.0]], [[30.0]]), threshold=5.0, max_norm=5.0)
  np.testing.assert_allclose(float(optax.tree.norm(out)), 5.0, rtol=1e-5)


def test_clip_never_raises_the_norm_and_needs_a_watched_leaf():
  # fires (2 > 1) but the norm 2.0 < max_norm 3: scale min(1, 3/2) = 1
  out, _ = run_clip(grads([[2.0, 0.0]], [[0.0]]), max_norm=3.0)
  np.testing.assert_array_equal(out["fusion"]["classifier"]["kernel"], [[2.0, 0.0]])
  with pytest.raises(ValueError, match="no gradient leaf matches"):
    tx = clip.clip_by_global_norm_if(1.0, 1.0, where="nothing/here")
    tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
  with pytest.raises(ValueError, match="threshold must be > 0"):
    clip.clip_by_global_norm_if(0.0, 1.0, where=WHERE)


def test_output_layer_pattern_matches_every_head():
  match = clip._matcher(OUTPUT_LAYER)
  for name in ("fusion/classifier/kernel", "fusion/classifier_1/kernel", "classifier/kernel"):
    assert match(name), name
  for name in ("fusion/classifier/bias", "encoders_0/classifier/kernel", "fusion/gamma/kernel"):
    assert not match(name), name


def agm_steps(outside, active, mono_ce):
  tx = agm(1.0, 10.0, num_modalities=2, outside=outside)
  g = jnp.ones((2, 3))   # per-modality gradients: the update is kappa_a + kappa_v
  st = tx.init(None)
  kappas = []
  for a, ce in zip(active, mono_ce):
    _, st = tx.update(g, st, mono_ce=jnp.asarray(ce), active=a)
    kappas.append(np.asarray(st.kappa))
  return np.stack(kappas), st


def test_kappa_is_held_after_the_window():
  # step 1 (before the window): kappa 1; running mean becomes (1, 2).
  # step 2: ce (1.5, 1.0): r = (e^-0.5, e^0.5); tau from (1, 2) = (e^1, e^-1);
  # kappa = exp(tau - r) = (exp(e - e^-0.5), exp(e^-1 - e^0.5)) = (8.26306, 0.277800).
  mono_ce = [(1.0, 2.0), (1.5, 1.0), (1.0, 1.0), (3.0, 0.5)]
  active = [False, True, False, False]
  expected = np.array([math.exp(math.e - math.exp(-0.5)), math.exp(math.exp(-1) - math.exp(0.5))])
  hold, st = agm_steps("hold", active, mono_ce)
  np.testing.assert_allclose(hold[0], [1.0, 1.0])
  np.testing.assert_allclose(hold[1], expected, rtol=1e-5)
  np.testing.assert_allclose(hold[2], expected, rtol=1e-5)
  np.testing.assert_allclose(hold[3], expected, rtol=1e-5)
  one, st_one = agm_steps("one", active, mono_ce)
  np.testing.assert_allclose(one[1], expected, rtol=1e-5)
  np.testing.assert_allclose(one[2:], 1.0)
  # the running mean moves every step either way: mean of the four steps
  np.testing.assert_allclose(st.running_ce, [1.625, 1.125], rtol=1e-6)
  np.testing.assert_allclose(st_one.running_ce, st.running_ce)
  with pytest.raises(ValueError, match="outside 'last' is unknown"):
    agm(1.0, num_modalities=2, outside="last")


def test_an_infinite_exponent_clip_is_no_clip():
  ce, running = jnp.array([3.0, 0.1]), jnp.array([0.1, 3.0])
  # tau - r = e^2.9 - e^-2.9 for the first modality: 18.12, above 10
  unbounded = agm_coefficients(ce, running, alpha=0.1, clip=float("inf"))
  bounded = agm_coefficients(ce, running, alpha=0.1, clip=10.0)
  np.testing.assert_allclose(unbounded[0], math.exp(0.1 * (math.exp(2.9) - math.exp(-2.9))),
                             rtol=1e-5)
  np.testing.assert_allclose(bounded[0], math.exp(1.0), rtol=1e-6)


@pytest.mark.parametrize("methods,method,on", [
    ("*", "joint", True), ("*", "unimodal", False), ("agm,agm_1", "agm_1", True),
    ("agm", "ogm_ge", False)])
def test_which_methods_clip(methods, method, on):
  c = tiny_config()
  c.optimizer.conditional_clip.threshold = 1.0
  c.optimizer.conditional_clip.methods = methods
  assert state.conditional_clip_applies(c.optimizer, method) is on
  c.optimizer.conditional_clip.threshold = 0.0
  assert not state.conditional_clip_applies(c.optimizer, method)


def test_conditional_clip_settings_are_validated():
  c = tiny_config()
  c.optimizer.conditional_clip.methods = "agm,agmm"
  with pytest.raises(validate.ConfigError, match="methods entry 'agmm'"):
    validate.validate_config(c)
  c = tiny_config()
  c.optimizer.conditional_clip.max_norm = 0.0
  with pytest.raises(validate.ConfigError, match="max_norm must be > 0"):
    validate.validate_config(c)


def test_trainer_clips_and_holds_kappa(tmp_path):
  """AGM modulating in epoch 0 only, kappa held in epoch 1; a threshold so small that the
  clip fires every step: every train line logs clipped 1 and a gradient norm <= 1."""
  c = tiny_config(method="agm", num_epochs=2)
  c.agm.start_epoch, c.agm.end_epoch, c.agm.outside = 0, 0, "hold"
  c.optimizer.conditional_clip.threshold = 1e-9
  c.optimizer.weight_decay = 0.0
  c.optimizer.momentum = 0.0
  loop.train_and_evaluate(c, str(tmp_path))
  train = [line for line in read_lines(tmp_path) if line["split"] == "train"]
  assert all(line["clipped"] == 1.0 for line in train)
  # updates = lr * clipped gradient: norm <= lr (plain SGD)
  assert all(line["grad_norm"] <= c.optimizer.learning_rate * (1 + 1e-4) for line in train)
  epoch1 = [line for line in train if line["epoch"] == 1]
  assert epoch1 and all(line["kappa/audio"] != 1.0 for line in epoch1)
  # held: every epoch-1 step applies the kappa of epoch 0's last step
  assert len({line["kappa/audio"] for line in epoch1}) == 1


PAPER_CONFIGS = {
    # config: (late?, conditional-clip threshold, exponent clip, MSLR init)
    "cremad_agm": (True, 1.0, 10.0, (0.9, 1.1)),
    "cremad_early": (False, 1.0, 10.0, (0.9, 1.1)),
    "avmnist_agm": (True, 1.0, float("inf"), (1.3, 0.7)),
    "avmnist_early": (False, 1.0, float("inf"), (1.3, 0.7)),
    "urfunny_agm": (True, 5.0, 7.0, (0.9, 1.4, 0.7)),
    "urfunny_early": (False, 5.0, 7.0, (0.9, 1.4, 0.7)),
    "ks_agm": (True, 1.0, 10.0, (1.3, 0.7)),
    "ks_film": (False, 1.0, 10.0, (1.3, 0.7)),
}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_configs_carry_the_released_rules(name):
  import importlib  # noqa: PLC0415

  from agm_jax.train import per_method  # noqa: PLC0415
  late, threshold, exponent_clip, mslr_init = PAPER_CONFIGS[name]
  c = importlib.import_module(f"configs.{name}").get_config()
  assert c.seed == 999
  assert (c.agm.start_epoch, c.agm.end_epoch, c.agm.outside) == (0, 19, "hold")
  assert c.agm.clip == exponent_clip
  assert c.optimizer.conditional_clip.threshold == threshold
  assert c.optimizer.conditional_clip.max_norm == threshold
  assert c.competition.whitened and c.subsets.bn == "eval"
  assert tuple(c.mslr.init) == mslr_init
  # MSLR and MSES read the split the released main evaluates, the one it reports
  assert c.paper_statistic == f"max_{c.mslr.split}_acc" == f"max_{c.mses.split}_acc"
  for method in ("agm", "joint", "agm_1", "ogm_ge", "mslr", "mses"):
    c.method = method
    validate.validate_config(c)
    resolved = per_method.resolve(c)
    agm_row = method in ("agm", "agm_1")
    if late:   # the released late-fusion models: concat for AGM, sum for every other method
      assert resolved.model.fusion == ("concat" if agm_row else "sum"), method
      assert state.conditional_clip_applies(resolved.optimizer, method) is agm_row
    else:      # early / hybrid fusion: one head, the clip for every method
      assert resolved.model.fusion == c.model.fusion
      assert state.conditional_clip_applies(resolved.optimizer, method)
    assert not resolved.per_method
  # one mono-modal concept per modality for every row of a table (sum and concat heads alike)
  from agm_jax.train import competition  # noqa: PLC0415
  keys = set()
  for method in ("agm", "joint", "mslr"):
    c.method = method
    keys.add(competition.concept_key(per_method.resolve(c), "audio"))
  assert len(keys) == 1, keys


def test_the_released_probability_floor_is_in_every_paper_config():
  """ce^m floors p at 1e-8 in the released CREMA-D, AVE, AV-MNIST and MOSEI mains (Kinetics-
  Sounds runs AV-MNIST's settings), not in UR-Funny's; every other config keeps eq. 4."""
  configs = experiment_configs()
  released = {name for name, c in configs.items() if c.agm.outside == "hold"}
  assert {"cremad_agm", "avmnist_agm", "ks_agm", "mosei_agm", "ave_psp",
          "urfunny_agm"} <= released
  for name, c in configs.items():
    want = 1e-8 if name in released and not name.startswith("urfunny") else 0.0
    for method in ("agm", "agm_1", "agm_ge"):
      assert c[method].p_floor == want, (name, method)


def test_per_method_overrides_are_checked():
  from agm_jax.train import per_method  # noqa: PLC0415
  c = tiny_config(method="joint")
  c.per_method = {"joint": {"model": {"fusion": "sum"}}, "agm": {"optimizer": {"momentum": 0.5}}}
  resolved = per_method.resolve(c)
  assert resolved.model.fusion == "sum" and resolved.optimizer.momentum == 0.9
  assert c.model.fusion == "concat"   # the input config is not changed
  c.per_method = {"jiont": {"model": {"fusion": "sum"}}}
  with pytest.raises(validate.ConfigError, match="per_method entry 'jiont' is not a method"):
    validate.validate_config(c)
  c.per_method = {"joint": {"model": {"fushion": "sum"}}}
  with pytest.raises(validate.ConfigError, match="the config has no 'model.fushion'"):
    validate.validate_config(c)


def test_reproduce_guide_shows_the_reference_numbers():
  """Every table of docs/REPRODUCE.md equals the rows of agm_jax/reference/paper_results.csv
  it names (one source for the paper's numbers)."""
  import csv  # noqa: PLC0415
  import os  # noqa: PLC0415
  import re  # noqa: PLC0415

  from tests.conftest import ROOT  # noqa: PLC0415
  with open(os.path.join(ROOT, "agm_jax", "reference", "paper_results.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
  with open(os.path.join(ROOT, "docs", "REPRODUCE.md")) as f:
    text = f.read()
  blocks = re.findall(r"<!-- paper: (\S+) (\S+) (\S+) -->\n((?:\|.*\n)+)", text)
  assert len(blocks) >= 17
  for source, dataset, fusion, table in blocks:
    expected = [r for r in rows if (r["source"], r["dataset"], r["fusion"]) ==
                (source, dataset, fusion)]
    assert expected, (source, dataset, fusion)
    header, _, *body = [[c.strip() for c in line.strip("|").split("|")]
                        for line in table.strip().splitlines()]
    assert [cells[0] for cells in body] == [r["method"] for r in expected]
    for cells, row in zip(body, expected):
      for column, cell in zip(header[1:], cells[1:]):
        assert cell == (row[column] or "–"), (source, row["method"], column)


# Settings that change no reported number, so no source is asked of them: how often to log and
# checkpoint, the evaluation batch (evaluation is per example, BatchNorm in eval mode), the
# sizes of the random stand-in data (data.synthetic=True only), and the "no window" sentinel.
NO_SOURCE = {"checkpoint_every_steps", "log_every_steps", "eval_batch_size",
             "synthetic_examples", "vocab_size", ("end_epoch", 1_000_000)}


def _number_forms(value):
  """How a number may be written in prose: 0.001 as 1e-3, 1e-08 as 1e-8, 2.0 as 2, 16327 as
  16,327."""
  forms = {repr(value), str(value)}
  if isinstance(value, float):
    forms |= {f"{value:g}", f"{value:.0e}"} | ({str(int(value))} if value.is_integer() else set())
  if isinstance(value, int) and value >= 1000:
    forms.add(f"{value:,}")
  return {re.sub(r"e([+-])0(\d)", r"e\1\2", f) for f in forms}


def _setting_name(parents, node):
  """The keyword, assigned attribute or argument a literal is the value of (None if none)."""
  while (node := parents.get(node)) is not None:
    if isinstance(node, ast.keyword):
      return node.arg
    if isinstance(node, ast.Assign):
      target = node.targets[0]
      return getattr(target, "attr", getattr(target, "id", None))
    if isinstance(node, ast.arguments):
      return None
  return None


CONFIG_FILES = [f"{n}.py" for n in CONFIG_MODULES if n not in ("default", "npz_mlp")]


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_number_in_a_config_is_named_in_its_sources(name):
  """Each experiment config says where its numbers come from (its docstring's "Every number and
  its source", a function's docstring, a comment): every numeric literal other than 0 and 1 is
  written somewhere in that text, so a number added without a source fails here. (default.py
  holds the library's defaults and npz_mlp.py is a template for the user's data: not
  experiments.)"""
  with open(os.path.join(ROOT, "configs", name)) as f:
    source = f.read()
  tree = ast.parse(source)
  text = " ".join([ast.get_docstring(n) or "" for n in ast.walk(tree)
                   if isinstance(n, (ast.Module, ast.FunctionDef))] +
                  [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline)
                   if t.type == tokenize.COMMENT])
  parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
  unnamed = []
  for node in ast.walk(tree):
    if (not isinstance(node, ast.Constant) or type(node.value) not in (int, float)
        or node.value in (0, 1)):
      continue
    setting = _setting_name(parents, node)
    if setting in NO_SOURCE or (setting, node.value) in NO_SOURCE:
      continue
    if not any(re.search(rf"(?<![\d.]){re.escape(f)}(?!\d)", text)
               for f in _number_forms(node.value)):
      unnamed.append(f"line {node.lineno}: {setting} = {node.value}")
  assert not unnamed, f"configs/{name}: numbers without a source in its text: {unnamed}"
