"""A synthetic multi-task suite that can only be solved by knowing the task.

Every task reads the same input: a string of LENGTH digits drawn uniformly and
independently (e.g. "31415926"). For a given seed and split, all tasks even
see the same input sequence, and the task's name is never in the input: only
`task_id` says what to output.

  copy, reverse, sort           the digits, transformed     (exact match)
  first, max                    one digit                   (accuracy)
  first_small / first_large     "yes"/"no": first digit < 5 / >= 5
  last_even / last_odd          "yes"/"no": last digit even / odd

The last four form two CONFLICTING pairs: on every input the two tasks of a
pair give opposite answers. A model that does not know the task sees both
answers equally often for each input, so on these tasks no task-blind
predictor can exceed 50% accuracy, which is chance (each task's majority-class
rate is at least 50%). A model using `task_id` can reach 100%.

Splits are disjoint by construction: an input belongs to validation exactly
when sum((i + 1) * digit_i) is divisible by 10, else to train.

The examples are deterministic in (task, split, n, seed); `generate` gives them
without seqio. Tokens are bytes (seqio.ByteVocabulary): nothing to download.
"""
from typing import Callable

import gin
import numpy as np
import seqio
import tensorflow as tf

from hyperprompt.tasks import metrics
from hyperprompt.tasks.definition import TaskDefinition

LENGTH = 8
VOCABULARY = seqio.ByteVocabulary()
# LENGTH digit bytes + EOS for inputs; the longest target is as long.
TASK_FEATURE_LENGTHS = {'inputs': LENGTH + 1, 'targets': LENGTH + 1}


def _digits(x: np.ndarray) -> str:
  return ''.join(str(d) for d in x)


def _yes_no(condition) -> str:
  return 'yes' if condition else 'no'


# name -> (input digits -> target text, is a sequence task)
TASKS: dict[str, tuple[Callable[[np.ndarray], str], bool]] = {
    'copy': (_digits, True),
    'reverse': (lambda x: _digits(x[::-1]), True),
    'sort': (lambda x: _digits(np.sort(x)), True),
    'first': (lambda x: str(x[0]), False),
    'max': (lambda x: str(x.max()), False),
    'first_small': (lambda x: _yes_no(x[0] < 5), False),
    'first_large': (lambda x: _yes_no(x[0] >= 5), False),
    'last_even': (lambda x: _yes_no(x[-1] % 2 == 0), False),
    'last_odd': (lambda x: _yes_no(x[-1] % 2 == 1), False),
}
CONFLICTING_GROUPS = (('first_small', 'first_large'),
                      ('last_even', 'last_odd'))
SPLITS = ('train', 'validation')
NUM_TRAIN, NUM_VALIDATION = 10_000, 200  # Per task; gin: dataset_config.


def in_validation(digits: np.ndarray) -> np.ndarray:
  """Which rows of [n, LENGTH] digits belong to the validation split."""
  return (digits @ np.arange(1, LENGTH + 1)) % 10 == 0


def inputs(split: str, n: int, seed: int) -> np.ndarray:
  """The first n inputs of `split` for `seed`, as [n, LENGTH] digits.

  Shared by all tasks: the same seed and split give the same inputs.
  """
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; the splits are {SPLITS}.')
  rng = np.random.default_rng([seed, SPLITS.index(split)])
  rows = []
  while sum(len(r) for r in rows) < n:
    draw = rng.integers(0, 10, size=(max(n, 64) * 2, LENGTH))
    rows.append(draw[in_validation(draw) == (split == 'validation')])
  return np.concatenate(rows)[:n]


def generate(task: str, split: str, n: int, seed: int = 0) -> list[dict]:
  """n examples {"inputs": digits, "targets": answer} of `task`."""
  if task not in TASKS:
    raise ValueError(f'Unknown synthetic task {task!r}; the tasks are '
                     f'{list(TASKS)}.')
  fn, _ = TASKS[task]
  return [{'inputs': _digits(x), 'targets': fn(x)}
          for x in inputs(split, n, seed)]


@gin.configurable(module='hyperprompt.tasks.synthetic')
def dataset_config(num_train: int = NUM_TRAIN,
                   num_validation: int = NUM_VALIDATION,
                   seed: int = 0) -> dict:
  """Examples per task and split, and the generator's seed (set in gin)."""
  return {'train': num_train, 'validation': num_validation, 'seed': seed}


def _dataset_fn(task: str) -> Callable[..., tf.data.Dataset]:
  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed  # One in-memory shard; the Task shuffles.
    config = dataset_config()
    examples = generate(task, split, config[split], config['seed'])
    return tf.data.Dataset.from_tensor_slices(
        {k: [ex[k] for ex in examples] for k in ('inputs', 'targets')})
  return dataset_fn


SYNTHETIC = {
    name: TaskDefinition(
        source=seqio.FunctionDataSource(_dataset_fn(name), splits=SPLITS),
        preprocessors=[],
        vocabulary=VOCABULARY,
        metric_fns=[metrics.exact_match if is_sequence else metrics.accuracy],
        num_train_examples=NUM_TRAIN,
    )
    for name, (_, is_sequence) in TASKS.items()
}
