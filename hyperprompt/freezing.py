"""Which parameters train: everything, only the conditioning, or only the
backbone.

The paper's main setting tunes the whole network (backbone included); it
also compares with tuning the task-conditioning parameters alone (METHOD.md
4). Keeping exported prefixes fixed while tuning the backbone is the third
case. The conditioning parameters are the `params['conditioner']` subtree.

Frozen means not differentiated: `trainer.train_step` takes the gradient
with respect to the trainable subtree only (`split`), with the frozen
parameters closed over as constants, so XLA computes no weight gradient for
them (and no backward pass at all for layers that no trainable parameter
feeds). The optimizer and its state cover the trainable subtree only.

Select it in gin, e.g. `trainer.make_optimizer.train = 'conditioning'`.
"""
from typing import Any, NamedTuple, Tuple

import flax
import jax
import optax

CONDITIONER = 'conditioner'
TRAIN_CHOICES = ('all', 'conditioning', 'backbone')


def trainable_labels(params: Any, train: str = 'all') -> Any:
  """A tree like `params` of 'trainable' / 'frozen' labels.

  Args:
    params: the model's params (arrays or shapes); a mapping with the
      conditioner's parameters under 'conditioner'.
    train: 'all', 'conditioning' or 'backbone'.
  """
  if train not in TRAIN_CHOICES:
    raise ValueError(f'train must be one of {TRAIN_CHOICES}, got {train!r}.')
  if train != 'all' and not params.get(CONDITIONER):
    raise ValueError(
        f'train={train!r} needs conditioning parameters, but the params have '
        f"no '{CONDITIONER}' subtree (is the model conditioned? the none "
        "conditioner has no parameters). Use train='all'.")
  def label(in_conditioner):
    trains = {'all': True, 'conditioning': in_conditioner,
              'backbone': not in_conditioner}[train]
    return 'trainable' if trains else 'frozen'
  return {
      name: jax.tree.map(lambda _, c=(name == CONDITIONER): label(c), subtree)
      for name, subtree in params.items()
  }


def split(params: Any, train: str) -> Tuple[dict, dict]:
  """(trainable, frozen): two nested dicts that together hold `params`.

  Both keep the full paths from the root (e.g. trainable =
  {'conditioner': {...}}), so optimizer state built on the trainable part
  matches the parameters' shardings by path like a full tree's would.
  """
  labels = flax.traverse_util.flatten_dict(
      trainable_labels(params, train), is_leaf=lambda _, x: isinstance(x, str))
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  parts = {'trainable': {}, 'frozen': {}}
  for path, value in flat.items():
    parts[labels[path]][path] = value
  return (flax.traverse_util.unflatten_dict(parts['trainable']),
          flax.traverse_util.unflatten_dict(parts['frozen']))


def merge(trainable: Any, frozen: Any) -> dict:
  """The inverse of `split`: one params tree from its two parts."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(frozen))
  flat.update(flax.traverse_util.flatten_dict(flax.core.unfreeze(trainable)))
  return flax.traverse_util.unflatten_dict(flat)


class Partial(NamedTuple):
  """`optimizer` applied to the trainable part of the params only.

  `init` takes the whole params tree (as every optax optimizer does) and
  returns state for the trainable part only; `trainer.train_step` hands
  `optimizer.update` the gradients and values of that part.
  """
  optimizer: optax.GradientTransformation
  train: str

  def init(self, params: Any) -> optax.OptState:
    return self.optimizer.init(split(params, self.train)[0])


def freeze(optimizer: optax.GradientTransformation, params: Any,
           train: str = 'all'):
  """`optimizer` restricted to the parameters that `train` selects.

  Args:
    optimizer: any optax optimizer.
    params: the model's params or their shapes (e.g. from jax.eval_shape),
      checked now so that a wrong `train` fails before training starts.
    train: 'all' (the optimizer unchanged), 'conditioning' or 'backbone'.

  Returns:
    `optimizer` itself for 'all', else a `Partial`: frozen parameters get
    no gradient, no update and no optimizer state.
  """
  trainable_labels(params, train)  # Fails fast on a wrong setting.
  if train == 'all':
    return optimizer
  return Partial(optimizer, train)
