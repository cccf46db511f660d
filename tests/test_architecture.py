"""The layers of docs/ARCHITECTURE.md, checked on the source: imports run one way
(core <- models <- methods <- train <- tools/launch), ``data_pipelines`` uses nothing of
agm_jax beyond the core, there is no import cycle, and a function-local import says why."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("agm_jax", "data_pipelines", "configs")

# Layer ranks: a module may import modules of its own rank or lower.
CORE, MODELS, METHODS, TRAIN, TOOLS = range(5)
CORE_MODULES = ("agm_jax", "agm_jax.shapley", "agm_jax.subsets", "agm_jax.probe",
                "agm_jax.modalities", "agm_jax.modulation", "agm_jax.transforms",
                "agm_jax.compat", "agm_jax.metrics", "agm_jax.xla_flags")


def layer(module: str) -> int | None:
  """The rank of an agm_jax module (None for modules outside agm_jax)."""
  if module == "launch" or module.startswith("agm_jax.tools"):
    return TOOLS
  for prefix, rank in (("agm_jax.train", TRAIN), ("agm_jax.methods", METHODS),
                       ("agm_jax.models", MODELS)):
    if module == prefix or module.startswith(prefix + "."):
      return rank
  if any(module == m or module.startswith(m + ".") for m in CORE_MODULES):
    return CORE
  if module.startswith("agm_jax"):
    raise AssertionError(f"{module} is in no layer: add it to tests/test_architecture.py")
  return None


def module_files():
  """``{module name: path}`` of every project module."""
  out = {"launch": os.path.join(ROOT, "launch.py")}
  for package in PACKAGES:
    for directory, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(directory, name)
          rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
          out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
  return out


MODULES = module_files()


def resolve(name: str) -> str | None:
  """The project module an import statement names (``a.b.c`` -> the longest known prefix)."""
  parts = name.split(".")
  for n in range(len(parts), 0, -1):
    candidate = ".".join(parts[:n])
    if candidate in MODULES:
      return candidate
  return None


def imports_of(module: str):
  """``[(imported module, lineno, top_level, source line)]`` of one module."""
  path = MODULES[module]
  with open(path) as f:
    source = f.read()
  lines = source.splitlines()
  tree = ast.parse(source)
  top = {id(node) for node in tree.body}
  for node in ast.iter_child_nodes(tree):   # imports inside top-level if/try count as top
    if isinstance(node, (ast.If, ast.Try)):
      top.update(id(n) for n in ast.walk(node))
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      names = [f"{base}.{alias.name}" for alias in node.names] or [base]
    for name in names:
      target = resolve(name)
      if target is not None and target != module:
        out.append((target, node.lineno, id(node) in top, lines[node.lineno - 1]))
  return out


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_agm_jax_module_has_a_layer():
  for module in MODULES:
    layer(module)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("agm_jax")
                                          or m == "launch"))
def test_agm_jax_imports_run_one_way(module):
  rank = layer(module)
  for target, lineno, _, _ in GRAPH[module]:
    if target.startswith("configs"):
      raise AssertionError(f"{module}:{lineno} imports {target}: configs are files the "
                           "trainer loads, not modules the library imports")
    if target.startswith("data_pipelines"):
      assert rank >= TRAIN, f"{module}:{lineno} imports {target}; only train and tools read data"
      continue
    assert layer(target) <= rank, (f"{module}:{lineno} imports {target}, a higher layer "
                                   "(core <- models <- methods <- train <- tools)")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("data_pipelines")))
def test_data_pipelines_use_only_the_core(module):
  for target, lineno, _, _ in GRAPH[module]:
    if target.startswith("agm_jax"):
      assert layer(target) == CORE, f"{module}:{lineno} imports {target} (beyond the core)"
    assert not target.startswith("configs"), f"{module}:{lineno} imports {target}"


def test_no_import_cycle():
  """Tarjan's strongly connected components over every import (top-level or not)."""
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w, _, _, _ in GRAPH[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in sorted(GRAPH):
    if v not in index:
      visit(v)
  assert not cycles, f"import cycles: {cycles}"


def test_function_local_imports_say_why():
  """A function-local import is allowed where import cost is the reason, said in a comment
  (``# noqa: PLC0415 - <reason>``)."""
  bad = []
  for module, edges in GRAPH.items():
    for _, lineno, top, line in edges:
      if not top and "PLC0415 -" not in line:
        bad.append(f"{MODULES[module]}:{lineno}: {line.strip()}")
  assert not bad, "function-local imports without a reason:\n" + "\n".join(bad)


def test_the_layering_test_catches_a_violation(tmp_path):
  """The checker itself: an upward import is found."""
  rank = layer("agm_jax.methods.agm")
  assert layer("agm_jax.train.loop") > rank
  assert layer("agm_jax.transforms.agm") == CORE <= rank
