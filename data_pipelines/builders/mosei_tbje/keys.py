r"""The CMU-MOSEI key lists the released AGM code trains and evaluates on, read from the user's
copy of that code.

The released ``dataloader/tokenizer.py`` (lihong2303/AGM_ICCV2023) holds the split keys as
Python list literals ``TRAIN_SET`` (16,327 keys), ``VALID_SET`` (1,871) and ``TEST_SET`` (4,662):
the counts of supplement A.1. This module reads them without importing that file (it imports
spaCy vectors at the top) and writes ``key_lists.json`` into the raw folder, where the
``mosei_tbje`` builder restricts each split to its list:

  python -m data_pipelines.builders.mosei_tbje.keys \
      --tokenizer=/path/to/AGM_ICCV2023/dataloader/tokenizer.py --out=RAW/key_lists.json

agm-jax ships no copy of the lists: the file comes from the user's clone.
"""

from __future__ import annotations

import ast
import json
import os
import sys

from absl import app, flags

KEY_LISTS_FILE = "key_lists.json"
# split -> the list's name in tokenizer.py
RELEASED_NAMES = {"train": "TRAIN_SET", "val": "VALID_SET", "test": "TEST_SET"}


def released_key_lists(source: str) -> dict[str, list[str]]:
  """``{"train": [...], "val": [...], "test": [...]}`` from the text of the released
  ``tokenizer.py`` (its top-level list literals; ValueError naming a missing one)."""
  found = {}
  for node in ast.parse(source).body:
    if isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.Tuple)):
      for target in node.targets:
        if isinstance(target, ast.Name):
          found[target.id] = node.value
  out = {}
  for split, name in RELEASED_NAMES.items():
    if name not in found:
      raise ValueError(f"{name} (the {split} keys) is not a list literal in this file; "
                       "expected the released dataloader/tokenizer.py")
    out[split] = [str(ast.literal_eval(e)) for e in found[name].elts]
  return out


def read_key_lists(path: str) -> dict[str, list[str]] | None:
  """The key lists in ``path`` (``KEY_LISTS_FILE``), or None when there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    lists = json.load(f)
  if not isinstance(lists, dict) or set(lists) != set(RELEASED_NAMES) or not all(
      isinstance(v, list) for v in lists.values()):
    raise ValueError(f"{path}: expected {{\"train\": [...], \"val\": [...], \"test\": [...]}} "
                     f"(write it with python -m data_pipelines.builders.mosei_tbje.keys)")
  return {split: [str(k) for k in keys] for split, keys in lists.items()}


_TOKENIZER = flags.DEFINE_string("tokenizer", None, "The released dataloader/tokenizer.py.")
_OUT = flags.DEFINE_string("out", None, f"Where to write the lists (RAW/{KEY_LISTS_FILE}).")


def main(argv):
  del argv
  if not _TOKENIZER.value or not _OUT.value:
    print("error: --tokenizer and --out are required", file=sys.stderr)
    sys.exit(2)
  with open(_TOKENIZER.value) as f:
    lists = released_key_lists(f.read())
  with open(_OUT.value, "w") as f:
    json.dump(lists, f)
  print(f"wrote {_OUT.value}: " + ", ".join(f"{s} {len(v)}" for s, v in lists.items()))


if __name__ == "__main__":
  app.run(main)
