"""Precomputed prefixes: per-task key/value prompts read from a file.

After training, a prefix-producing conditioner (HyperPrompt, prefix tuning)
is only a table: for each task, each prompted attention's key and value
prompts. `hyperprompt.export` writes that table; this conditioner serves it
with no hypernetwork, giving the same logits as the model it came from.

File format (NumPy .npz, float32), one pair of arrays per prompted group:
  '{stack}_{kind}_key', '{stack}_{kind}_value'
      [num_tasks, num_layers_of_stack, l, heads, head_dim]
with (stack, kind) in ('encoder', 'self'), ('decoder', 'self'),
('decoder', 'cross'); a group that is not prompted is absent. 'task_names'
[num_tasks] (strings) names the task of each row, in the order of the
trained run's task vocabulary; serving checks it against the mixture, since
a different task order would silently give each task another's prompts.

The prefixes are *parameters initialised from the file*, not constants:
they then live in the params tree, so they are sharded, checkpointed and
restored like every other weight (a constant would be baked, replicated,
into every compiled program: 200 MB at T5-XXL), and a collapsed prefix-tuning
model is the same params tree. Keep them fixed while tuning the backbone with
`freezing.freeze(..., train='backbone')`. The file is read only at
initialisation; afterwards the params (e.g. from a checkpoint) are the truth.
"""
import io
from typing import Dict, List, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hyperprompt import atomic_files
from hyperprompt.conditioning import placement as placement_lib
from hyperprompt.conditioning.interface import Conditioner, Conditioning
from hyperprompt.config import T5Config
from hyperprompt.layers import param_with_axes

NAMES = tuple(f'{stack}_{kind}_{part}'
              for stack, kind in placement_lib.SITE_KINDS
              for part in ('key', 'value'))
AXES = ('tasks', 'prompt_sites', 'prompt_length', 'heads', 'kv')
TASK_NAMES = 'task_names'


def stack_prefixes(conditioning: Conditioning) -> Dict[str, np.ndarray]:
  """Conditioning of the tasks 0..T-1 (batch = T) -> the file's arrays.

  Raises if the conditioning is not made of key/value prefixes only, or if
  only some layers of a stack are prompted (the file cannot say which).
  """
  if conditioning.input_prompts is not None or any(
      layer.adapter is not None
      for layer in conditioning.encoder + conditioning.decoder):
    raise ValueError(
        'This conditioner produces input prompts or adapters, which are not '
        'key/value prefixes; only prefix-producing conditioners (HyperPrompt, '
        'PrefixTuning, Precomputed) can be exported.')
  arrays = {}
  for stack, kind in placement_lib.SITE_KINDS:
    layers = getattr(conditioning, stack)
    prefixes = [getattr(layer, f'{kind}_prefix') for layer in layers]
    present = [p is not None for p in prefixes]
    if not any(present):
      continue
    if not all(present):
      raise ValueError(f'Only some {stack} layers have {kind}-attention '
                       'prefixes; the prefix file stores whole stacks.')
    for i, part in enumerate(('key', 'value')):
      # L x [T, l, h, d_h] -> [T, L, l, h, d_h]
      arrays[f'{stack}_{kind}_{part}'] = np.stack(
          [np.asarray(p[i], np.float32) for p in prefixes], axis=1)
  return arrays


def save_prefixes(path: str, prefixes: Dict[str, np.ndarray],
                  task_names: Optional[Sequence[str]] = None) -> None:
  """Writes the prefix file atomically; refuses an empty one.

  Args:
    path: the .npz to write (replaced only once the new one is complete).
    prefixes: {name in NAMES: [T, L, l, h, d_h]}.
    task_names: the T task names, in task-id order.
  """
  unknown = set(prefixes) - set(NAMES)
  if unknown:
    raise ValueError(f'Unknown prefix arrays {sorted(unknown)}; expected '
                     f'names among {NAMES}.')
  if not prefixes:
    raise ValueError(f'No prefixes to write to {path}: the conditioner '
                     'produces no key/value prefixes (export a run of a '
                     'prefix-producing conditioner: HyperPrompt, prefix '
                     'tuning).')
  extra = {}
  if task_names is not None:
    num_tasks = next(iter(prefixes.values())).shape[0]
    if len(task_names) != num_tasks:
      raise ValueError(f'{len(task_names)} task names for {num_tasks} tasks '
                       'of prefixes.')
    extra[TASK_NAMES] = np.array(list(task_names), dtype=str)
  # zipfile seeks and reads back what it wrote; a GFile cannot.
  buffer = io.BytesIO()
  np.savez(buffer, **prefixes, **extra)
  with atomic_files.open_for_write(path, 'wb') as f:
    f.write(buffer.getvalue())


def load_task_names(path: str) -> Optional[List[str]]:
  """The task names a prefix file records (None for files without them)."""
  with np.load(path, allow_pickle=False) as data:
    if TASK_NAMES not in data.files:
      return None
    return [str(name) for name in data[TASK_NAMES]]


def check_task_names(path: str, task_names: Sequence[str]) -> None:
  """Raises ValueError if the file's tasks are not `task_names`, in order."""
  recorded = load_task_names(path)
  if recorded is not None and list(recorded) != list(task_names):
    raise ValueError(
        f'{path} holds the prefixes of the tasks {recorded}, but this run\'s '
        f'mixture has {list(task_names)}; serve it with the mixture it was '
        'trained on (same tasks, same order).')


def load_prefixes(path: str) -> Dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as data:
    prefixes = {name: data[name] for name in data.files
                if name != TASK_NAMES}
  unknown = set(prefixes) - set(NAMES)
  # Every group needs both its keys and its values.
  unpaired = ({n[:-len('_key')] for n in prefixes if n.endswith('_key')} ^
              {n[:-len('_value')] for n in prefixes if n.endswith('_value')})
  if unknown or unpaired or not prefixes:
    raise ValueError(f'{path} is not a prefix file: arrays {sorted(prefixes)}'
                     f', expected names among {NAMES} (written by '
                     '`python -m hyperprompt.export`).')
  return prefixes


def _check_shapes(shapes: Dict[str, tuple], config: T5Config, num_tasks: int,
                  source: str) -> None:
  for name, shape in shapes.items():
    stack = name.split('_')[0]
    layers = (config.num_encoder_layers if stack == 'encoder' else
              config.num_decoder_layers)
    expected = (num_tasks, layers, shape[2], config.num_heads,
                config.head_dim)
    if tuple(shape) != expected:
      raise ValueError(
          f'{source}: {name} has shape {tuple(shape)}, but this model needs '
          f'{expected} [tasks, layers, l, heads, head_dim]. Export the '
          'prefixes from a model of the same size and task vocabulary.')


class Precomputed(Conditioner):
  """Per-task prefixes, initialised from a prefix file.

  Attributes:
    path: the .npz written by `hyperprompt.export`; needed to initialise,
      not when the params are given (restored or collapsed).
  """
  path: Optional[str] = None

  @nn.compact
  def __call__(self, task_ids: jax.Array, config: T5Config,
               deterministic: bool = True) -> Conditioning:
    del deterministic
    if self.is_initializing():
      if self.path is None:
        raise ValueError('Precomputed needs `path`, a prefix file written by '
                         '`python -m hyperprompt.export`, to initialise.')
      initial = load_prefixes(self.path)
      source = self.path
    else:
      # Flax checks a stored param's shape against its init function, so
      # the init function must return an array of that shape.
      initial = dict(self.variables.get('params', {}))
      source = 'the params'
    prefixes = {
        name: param_with_axes(name, lambda _, v=initial[name]: jnp.asarray(v),
                              axes=AXES)
        for name in NAMES if name in initial
    }
    if not prefixes:
      raise ValueError(f'No prefixes in {source}: initialise Precomputed '
                       'from a prefix file, or pass params that have them.')
    _check_shapes({n: p.shape for n, p in prefixes.items()}, config,
                  self.num_tasks, source)
    sites, keys, values = [], [], []
    for stack, kind in placement_lib.SITE_KINDS:
      if f'{stack}_{kind}_key' not in prefixes:
        continue
      for part, out in (('key', keys), ('value', values)):
        # [T, L, l, h, d_h] -> [batch, L, l, h, d_h]
        out.append(jnp.take(prefixes[f'{stack}_{kind}_{part}'], task_ids,
                            axis=0).astype(config.activation_dtype))
      sites += [placement_lib.Site(stack, kind, i)
                for i in range(keys[-1].shape[1])]
    return placement_lib.prefix_conditioning(
        config, tuple(sites), jnp.concatenate(keys, axis=1),
        jnp.concatenate(values, axis=1))
