"""Adding tasks to a trained conditioned model, training only their rows.

HyperPrompt-Global's cost grows with the number of tasks only through the
task embedding `k_tau` and the global prompt `P_tau` (METHOD.md 3), so a new
task is two new rows: everything else (backbone, layer embeddings, `h_t`, the
global hypernetworks, the old tasks' rows) can stay frozen, and the old
tasks' outputs stay exactly what they were.

    conditioner, params, per_task = new_task.add_tasks(
        config, model.conditioner, params, num_new_tasks=1, rng=rng)
    model = network.Transformer(config, conditioner)
    optimizer = new_task.only_new_rows(optax.adam(1e-2), params, per_task,
                                       num_old_tasks)

The per-task parameters are found, not listed: they are the conditioner's
parameters whose leading axis grows when the conditioner is built for more
tasks, so this works for any conditioner (for Sep the per-task local
hypernetworks are new rows too; for Share, prefix and prompt tuning the
per-task prompts).
"""
from typing import Any, FrozenSet, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperprompt.conditioning.interface import Conditioner
from hyperprompt.config import T5Config
from hyperprompt.freezing import CONDITIONER

Path = Tuple[str, ...]


def add_tasks(config: T5Config, conditioner: Conditioner, params: Any,
              num_new_tasks: int, rng: jax.Array
              ) -> Tuple[Conditioner, Any, FrozenSet[Path]]:
  """The conditioner and params for `num_new_tasks` more tasks.

  The new tasks get ids `num_tasks .. num_tasks + num_new_tasks - 1` and
  freshly initialised rows (as the conditioner initialises any task); every
  other value is copied from `params`.

  Args:
    config: the backbone's config.
    conditioner: the trained model's conditioner (`model.conditioner`).
    params: the trained model's params (with a 'conditioner' subtree).
    num_new_tasks: how many tasks to add.
    rng: PRNG key of the new rows' initialisation.

  Returns:
    (the conditioner for the larger task vocabulary, the extended params,
    the paths inside params['conditioner'] of the per-task parameters).
  """
  if num_new_tasks < 1:
    raise ValueError(f'num_new_tasks must be >= 1, got {num_new_tasks}.')
  if CONDITIONER not in params:
    raise ValueError(f"The params have no '{CONDITIONER}' subtree: a model "
                     'without conditioning parameters cannot learn new tasks '
                     'this way.')
  old_tasks = conditioner.num_tasks
  larger = conditioner.clone(num_tasks=old_tasks + num_new_tasks)
  init = jax.jit(lambda key: larger.init(key, jnp.zeros((1,), jnp.int32),
                                         config)['params'])
  fresh = flax.traverse_util.flatten_dict(flax.core.unfreeze(init(rng)))
  old = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(params[CONDITIONER]))
  if set(fresh) != set(old):
    raise ValueError(
        'The conditioner built for more tasks has different parameters: '
        f'{sorted(set(fresh) ^ set(old))}. Is `conditioner` the one the '
        'params were trained with?')
  merged, per_task = {}, set()
  for path, new_value in fresh.items():
    value = np.asarray(old[path])
    if value.shape == new_value.shape:
      merged[path] = value
    elif (value.shape[1:] == new_value.shape[1:] and
          new_value.shape[0] == value.shape[0] + num_new_tasks and
          value.shape[0] == old_tasks):
      merged[path] = np.concatenate(
          [value, np.asarray(new_value)[old_tasks:]]).astype(value.dtype)
      per_task.add(path)
    else:
      raise ValueError(
          f'{"/".join(path)}: shape {value.shape} becomes {new_value.shape} '
          f'with {num_new_tasks} more tasks; only a leading task axis may '
          'grow. Check the conditioner configuration.')
  new_params = dict(params)
  new_params[CONDITIONER] = flax.traverse_util.unflatten_dict(merged)
  return larger, new_params, frozenset(per_task)


def row_mask(params: Any, per_task: FrozenSet[Path],
             num_old_tasks: int) -> Any:
  """A tree like `params` of 0/1 float32 masks, 1 exactly on the new tasks'
  rows of the per-task parameters (broadcastable: scalar 0 elsewhere)."""
  def mask(path, value):
    keys = tuple(k.key for k in path)
    if keys[0] != CONDITIONER or keys[1:] not in per_task:
      return jnp.zeros((), jnp.float32)
    rows = (jnp.arange(value.shape[0]) >= num_old_tasks).astype(jnp.float32)
    return rows.reshape((-1,) + (1,) * (value.ndim - 1))
  return jax.tree_util.tree_map_with_path(mask, params)


def only_new_rows(optimizer: optax.GradientTransformation, params: Any,
                  per_task: FrozenSet[Path],
                  num_old_tasks: int) -> optax.GradientTransformation:
  """`optimizer` on the new tasks' rows only; every other value gets a zero
  update (also under weight decay).

  The per-task leaves go through `optimizer` and their updates are then
  multiplied by `row_mask`; all other leaves get `optax.set_to_zero` and no
  optimizer state.
  """
  if not per_task:
    raise ValueError('No per-task parameters to train (see add_tasks).')
  def labels(tree):
    def label(path, _):
      keys = tuple(k.key for k in path)
      return ('new_rows' if keys[0] == CONDITIONER and keys[1:] in per_task
              else 'frozen')
    return jax.tree_util.tree_map_with_path(label, tree)
  masks = row_mask(params, per_task, num_old_tasks)

  def apply_mask(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates,
                        masks), state

  return optax.chain(
      optax.multi_transform({'new_rows': optimizer,
                             'frozen': optax.set_to_zero()}, labels),
      optax.GradientTransformation(lambda _: optax.EmptyState(), apply_mask))
