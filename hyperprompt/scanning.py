"""Parameter trees of scanned and unscanned layer stacks, converted both ways.

Unscanned (`T5Config.scan_layers = False`, and every public t5x and Hugging
Face checkpoint): `encoder/layers_0/...`, `encoder/layers_1/...`.
Scanned: `encoder/layers/...`, each array with a leading [num_layers] axis
(logical name 'layers'). The decoder is the same. Everything outside the
stacks (embeddings, final norms, relative position biases, the conditioner)
is the same in both.
"""
import re
from typing import Any, Dict, Mapping

import numpy as np

STACKS = ('encoder', 'decoder')
SCANNED = 'layers'
_LAYER = re.compile(r'layers_(\d+)')


def is_scanned(params: Mapping[str, Any]) -> bool:
  """Whether `params` (a model's params tree) has scanned layer stacks."""
  return any(SCANNED in params.get(stack, {}) for stack in STACKS)


def _map_leaves(fn, *trees):
  """`fn` over the leaves of equally nested dicts (a small tree_map that keeps
  numpy arrays numpy and never touches device buffers)."""
  if isinstance(trees[0], Mapping):
    return {k: _map_leaves(fn, *(t[k] for t in trees)) for k in trees[0]}
  return fn(*trees)


def scan_params(params: Mapping[str, Any]) -> Dict[str, Any]:
  """Unscanned params -> scanned: `layers_i` subtrees stacked on axis 0."""
  out = dict(params)
  for stack in STACKS:
    if stack not in params:
      continue
    tree = dict(params[stack])
    indices = sorted(int(m.group(1)) for m in map(_LAYER.fullmatch, tree)
                     if m)
    if not indices:
      continue
    if indices != list(range(len(indices))):
      raise ValueError(f'{stack} has layers {indices}; expected layers_0 to '
                       f'layers_{len(indices) - 1}.')
    layers = [tree.pop(f'layers_{i}') for i in indices]
    tree[SCANNED] = _map_leaves(lambda *xs: np.stack(xs), *layers)
    out[stack] = tree
  return out


def unscan_params(params: Mapping[str, Any]) -> Dict[str, Any]:
  """Scanned params -> unscanned: axis 0 of `layers` split into `layers_i`."""
  out = dict(params)
  for stack in STACKS:
    if SCANNED not in params.get(stack, {}):
      continue
    tree = dict(params[stack])
    stacked = tree.pop(SCANNED)
    sizes = set()
    _map_leaves(lambda x: sizes.add(np.shape(x)[0]), stacked)
    if len(sizes) != 1:
      raise ValueError(f'{stack}/{SCANNED} arrays disagree on the number of '
                       f'layers (leading dims {sorted(sizes)}).')
    for i in range(sizes.pop()):
      tree[f'layers_{i}'] = _map_leaves(lambda x, i=i: np.asarray(x)[i],
                                        stacked)
    out[stack] = tree
  return out
