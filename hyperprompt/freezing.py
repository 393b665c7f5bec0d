"""Which parameters train: everything, only the conditioning, or only the
backbone.

The paper's main setting tunes the whole network (backbone included); it
also compares with tuning the task-conditioning parameters alone (METHOD.md
4). Keeping exported prefixes fixed while tuning the backbone is the third
case. The conditioning parameters are the `params['conditioner']` subtree.

Select it in gin, e.g. `freezing.freeze.train = 'conditioning'`.
"""
from typing import Any

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
        f"train={train!r} needs conditioning parameters, but the params have "
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


def freeze(optimizer: optax.GradientTransformation, params: Any,
           train: str = 'all') -> optax.GradientTransformation:
  """Wraps `optimizer` so that frozen parameters get zero updates.

  Args:
    optimizer: any optax optimizer.
    params: the model's params or their shapes (e.g. from jax.eval_shape),
      checked now so that a wrong `train` fails before training starts.
    train: 'all' (the optimizer unchanged), 'conditioning' or 'backbone'.

  Returns:
    An optimizer whose updates are zero on frozen parameters, which also get
    no optimizer state (`optax.set_to_zero`).
  """
  trainable_labels(params, train)  # Fails fast on a wrong setting.
  if train == 'all':
    return optimizer
  return optax.multi_transform(
      {'trainable': optimizer, 'frozen': optax.set_to_zero()},
      lambda p: trainable_labels(p, train))
