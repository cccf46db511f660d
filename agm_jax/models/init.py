"""Parameter initialisation schemes (config ``model.init``): a Flax tree re-drawn as PyTorch
would have drawn the released models' weights, with no change to any module.

``reinit(params, key, scheme)`` walks the tree by path and shape:

* ``"flax"``: the tree unchanged (Flax's initialisers: lecun-normal kernels, zero biases,
  LayerNorm/BatchNorm scale 1 and bias 0; our ResNet's convs are already He-normal fan-out).
* ``"pytorch"``: what the released models start from at construction.

  - Dense kernel ``(in, out)`` and its bias: ``nn.Linear``'s default, kaiming-uniform with
    ``a=sqrt(5)``, i.e. ``U(±1/sqrt(in))`` for both.
  - Conv kernel ``(…, in, out)`` and its bias: ``nn.Conv*``'s default, ``U(±1/sqrt(fan_in))``
    with ``fan_in = in * prod(window)``.
  - Inside a ResNet (a subtree holding ``stem_conv``), the released ``model/utils/resnet.py``
    ``ResNet.__init__`` overrides: convs He-normal ``N(0, 2/fan_out)``, ``fan_out = out *
    prod(window)``; BatchNorm scale ``N(1, 0.02²)``, bias 0. Its ``zero_init_residual`` is
    False in every released model, so no BatchNorm starts at zero.
  - Other norms (the Transformer's LayerNorms): scale 1, bias 0.
  - Attention (a Flax ``MultiHeadDotProductAttention``: ``query``/``key``/``value``/``out``):
    ``nn.MultiheadAttention``'s ``_reset_parameters``: the ``(3·H·D, in)`` in-projection
    xavier-uniform, ``U(±sqrt(6 / (in + 3·H·D)))`` for each of query/key/value, in-projection
    bias 0; the out-projection keeps ``nn.Linear``'s default kernel ``U(±1/sqrt(H·D))`` and
    bias 0.
  - A Transformer's layers (``TransformerLayer_<i>``) all start from the SAME draw:
    ``nn.TransformerEncoder`` deep-copies one ``nn.TransformerEncoderLayer`` ``num_layers``
    times.
  - No counterpart, left as Flax drew them: the Transformer's ``pos_embedding`` (the released
    encoder has no positions: ``positions="none"``). Its ``embed`` bias and ``final_norm``
    have none either (``input_bias=False``, ``final_norm=False``); if present, they get the
    Dense / norm rules above.
* ``"released"``: ``"pytorch"``, then the released ``utils/function_tools.py``
  ``weight_init`` applied to every module (``model.apply(weight_init)``: its CREMA-D main
  only; OGM-GE's main applies a twin whose convs are He-normal, of the same variance): every
  ``nn.Linear`` (attention's out-projection included) xavier-normal ``N(0, 2/(in+out))`` with
  bias 0; every ``nn.Conv2d`` (4-D kernel) kaiming-uniform fan-out ``U(±sqrt(6/fan_out))``,
  bias untouched; every ``nn.BatchNorm2d`` (the norms inside a ResNet) scale 1, bias 0. It
  does not touch 1-D convs (the Transformer's ``embed``, a ``Conv1d`` in the released code),
  LayerNorms or the attention's in-projection.

Each pass makes two draws seeded by ``key``, a flat uniform and a flat normal vector
(NumPy's, on the host), and cuts every parameter from them in the tree's order (``_Draws``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

SCHEMES = ("flax", "pytorch", "released")

_LAYER = re.compile(r"TransformerLayer_\d+")
_ATTENTION = ("query", "key", "value", "out")


def check_scheme(scheme) -> str:
  """``scheme`` if it is one of ``SCHEMES``, else a ValueError naming ``model.init``."""
  if scheme not in SCHEMES:
    raise ValueError(f"unknown model.init {scheme!r}; valid: {', '.join(SCHEMES)}")
  return scheme


class _Lazy(NamedTuple):
  """A parameter to be cut from a pass's flat draw: ``mean + scale * flat[offset:…]``."""
  kind: str
  offset: int
  shape: tuple
  dtype: Any
  scale: float
  mean: float


class _Draws:
  """One pass's draws: a flat uniform ``U(-1, 1)`` and a flat standard-normal vector, each
  parameter a slice of one (allocated in walk order; a draw path seen before, a cloned
  Transformer layer, gets the same slice)."""

  def __init__(self):
    self.slots = {"uniform": {}, "normal": {}}
    self.sizes = {"uniform": 0, "normal": 0}

  def take(self, kind: str, path: str, like, scale: float, mean: float = 0.0) -> _Lazy:
    slots = self.slots[kind]
    if path not in slots:
      slots[path] = self.sizes[kind]
      self.sizes[kind] += math.prod(like.shape)
    return _Lazy(kind, slots[path], tuple(like.shape), like.dtype, scale, mean)

  def materialise(self, tree, seed: np.random.SeedSequence):
    uniform, normal = (np.random.default_rng(s) for s in seed.spawn(2))
    flat = {"uniform": 2 * uniform.random(self.sizes["uniform"], np.float32) - 1,
            "normal": normal.standard_normal(self.sizes["normal"], np.float32)}

    def fill(node):
      if isinstance(node, Mapping):
        return {name: fill(value) for name, value in node.items()}
      if isinstance(node, _Lazy):
        values = flat[node.kind][node.offset:node.offset + math.prod(node.shape)]
        node = (node.mean + node.scale * values).reshape(node.shape).astype(node.dtype)
      return jnp.asarray(node) if isinstance(node, np.ndarray) else node
    return fill(tree)


def _uniform(draws: _Draws, path: str, like, bound: float) -> _Lazy:
  return draws.take("uniform", path, like, bound)


def _normal(draws: _Draws, path: str, like, std: float, mean: float = 0.0) -> _Lazy:
  return draws.take("normal", path, like, std, mean)


def _fill(like, value: float):
  return np.full(like.shape, value, like.dtype)


def _is_array(x) -> bool:
  return hasattr(x, "shape") and not isinstance(x, Mapping)


def _fans(kernel) -> tuple[int, int]:
  """PyTorch's (fan_in, fan_out) of a Flax Dense ``(in, out)`` or conv ``(…, in, out)``."""
  window = math.prod(kernel.shape[:-2])
  return kernel.shape[-2] * window, kernel.shape[-1] * window


def _pytorch_attention(node, draws, path: str) -> dict:
  out = {}
  for name in _ATTENTION:
    kernel, p = node[name]["kernel"], f"{path}/{name}"
    if name == "out":                                   # (H, D, E): nn.Linear(H*D, E)
      fan_in = math.prod(kernel.shape[:-1])
      new = {"kernel": _uniform(draws, f"{p}/kernel", kernel, 1 / math.sqrt(fan_in))}
    else:                                               # (E, H, D): rows of in_proj (3HD, E)
      fan_in, fan_out = kernel.shape[0], 3 * math.prod(kernel.shape[1:])
      new = {"kernel": _uniform(draws, f"{p}/kernel", kernel,
                                math.sqrt(6 / (fan_in + fan_out)))}
    if "bias" in node[name]:
      new["bias"] = _fill(node[name]["bias"], 0.0)
    out[name] = new
  return {**node, **out}


def _pytorch_layer(node, draws, path: str, resnet: bool) -> dict:
  """A Dense / conv (``kernel`` [+ ``bias``]) or a norm (``scale`` + ``bias``)."""
  out = dict(node)
  if "kernel" in node:
    kernel = node["kernel"]
    fan_in, fan_out = _fans(kernel)
    bound = 1 / math.sqrt(fan_in)
    if kernel.ndim > 2 and resnet:
      out["kernel"] = _normal(draws, f"{path}/kernel", kernel, math.sqrt(2 / fan_out))
    else:
      out["kernel"] = _uniform(draws, f"{path}/kernel", kernel, bound)
    if "bias" in node:
      out["bias"] = _uniform(draws, f"{path}/bias", node["bias"], bound)
    return out
  out["scale"] = (_normal(draws, f"{path}/scale", node["scale"], 0.02, mean=1.0) if resnet
                  else _fill(node["scale"], 1.0))
  out["bias"] = _fill(node["bias"], 0.0)
  return out


def _released_layer(node, draws, path: str, resnet: bool, conv1d: bool) -> dict:
  """``weight_init`` on one Dense / conv / norm (see the module docstring)."""
  out = dict(node)
  if "kernel" in node:
    kernel = node["kernel"]
    fan_in, fan_out = _fans(kernel)
    if kernel.ndim == 2 and not conv1d:                  # nn.Linear
      out["kernel"] = _normal(draws, f"{path}/kernel", kernel, math.sqrt(2 / (fan_in + fan_out)))
      if "bias" in node:
        out["bias"] = _fill(node["bias"], 0.0)
    elif kernel.ndim == 4:                               # nn.Conv2d
      out["kernel"] = _uniform(draws, f"{path}/kernel", kernel, math.sqrt(6 / fan_out))
    return out
  if resnet:                                             # nn.BatchNorm2d
    out["scale"], out["bias"] = _fill(node["scale"], 1.0), _fill(node["bias"], 0.0)
  return out


def _released_attention(node, draws, path: str) -> dict:
  """``weight_init`` reaches the out-projection (an ``nn.Linear``) only."""
  out = node["out"]
  kernel = out["kernel"]
  fan_in, fan_out = math.prod(kernel.shape[:-1]), kernel.shape[-1]
  new = {"kernel": _normal(draws, f"{path}/out/kernel", kernel,
                           math.sqrt(2 / (fan_in + fan_out)))}
  if "bias" in out:
    new["bias"] = _fill(out["bias"], 0.0)
  return {**node, "out": {**out, **new}}


def _walk(node, draws, path: str, scheme: str, resnet: bool = False, transformer: bool = False,
          draw_path: str = ""):
  """Re-draw one subtree. ``draw_path`` names a parameter's slice of the draws (every
  Transformer layer is layer 0 under "pytorch": the same slice); ``path`` the real one."""
  if all(name in node and isinstance(node[name], Mapping) for name in _ATTENTION):
    if scheme == "pytorch":
      return _pytorch_attention(node, draws, draw_path)
    return _released_attention(node, draws, path)
  leaves = {name for name, value in node.items() if _is_array(value)}
  if "kernel" in leaves or {"scale", "bias"} <= leaves:
    if scheme == "pytorch":
      return _pytorch_layer(node, draws, draw_path, resnet)
    conv1d = transformer and path.rsplit("/", 1)[-1] == "embed"
    return _released_layer(node, draws, path, resnet, conv1d)
  resnet = resnet or "stem_conv" in node
  transformer = transformer or any(_LAYER.fullmatch(name) for name in node)
  out = {}
  for name, value in node.items():
    if not isinstance(value, Mapping):
      out[name] = value                                  # no counterpart: kept
      continue
    draw_name = _LAYER.sub("TransformerLayer_0", name) if transformer else name
    out[name] = _walk(value, draws, f"{path}/{name}", scheme, resnet, transformer,
                      f"{draw_path}/{draw_name}")
  return out


def _plain(tree):
  if isinstance(tree, Mapping):
    return {name: _plain(value) for name, value in tree.items()}
  return tree


def _seed(key) -> np.random.SeedSequence:
  """A NumPy seed from a JAX PRNG key (raw ``uint32`` or typed)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.random.SeedSequence(np.asarray(key, np.uint32).ravel().tolist())


def reinit(params, key, scheme: str = "flax"):
  """``params`` re-drawn with ``scheme`` (one of ``SCHEMES``; see the module docstring), the
  draws seeded by the PRNG key ``key``; same tree structure, shapes and dtypes. ``"flax"``
  returns ``params`` itself. Pure (the same arguments give the same values) but not
  jittable: the draws are NumPy's, on the host, outside jit; a fraction of a second for a
  ResNet-18, where XLA:CPU would compile for seconds (a fusion per parameter)."""
  check_scheme(scheme)
  if scheme == "flax":
    return params
  frozen = isinstance(params, flax.core.FrozenDict)
  seed_pytorch, seed_released = _seed(key).spawn(2)
  draws = _Draws()
  out = draws.materialise(_walk(_plain(params), draws, "", "pytorch"), seed_pytorch)
  if scheme == "released":
    draws = _Draws()
    out = draws.materialise(_walk(out, draws, "", "released"), seed_released)
  return flax.core.freeze(out) if frozen else out
