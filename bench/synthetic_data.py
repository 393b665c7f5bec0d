"""The synthetic suite as in-memory model features, for the small study.

The examples are exactly those of the seqio tasks `hp_synthetic_<task>`
(`synthetic.generate`, the byte vocabulary, EOS appended), turned into the
features `TaskConditionedFeatureConverter` gives; the study skips tf.data
because 50 short runs on 2 CPU cores cannot afford a pipeline start each.
"""
from typing import Dict, Iterator, Sequence

import numpy as np

from hyperprompt.tasks import synthetic

VOCABULARY = synthetic.VOCABULARY
INPUT_LENGTH = synthetic.TASK_FEATURE_LENGTHS['inputs']
TARGET_LENGTH = synthetic.TASK_FEATURE_LENGTHS['targets']


def _encode(texts: Sequence[str], length: int) -> np.ndarray:
  """Texts -> [n, length] int32 byte ids + EOS, zero-padded."""
  out = np.zeros((len(texts), length), np.int32)
  for i, text in enumerate(texts):
    ids = list(VOCABULARY.encode(text)) + [VOCABULARY.eos_id]
    if len(ids) > length:
      raise ValueError(f'{text!r} needs {len(ids)} tokens; length {length}.')
    out[i, :len(ids)] = ids
  return out


def features(tasks: Sequence[str], split: str, num_per_task: int,
             seed: int = 0) -> Dict[str, np.ndarray]:
  """Model features of `num_per_task` examples of each task, task by task.

  The task id of `tasks[i]` is `i` (the order of the task vocabulary).
  """
  inputs, targets, task_ids = [], [], []
  for task_id, task in enumerate(tasks):
    examples = synthetic.generate(task, split, num_per_task, seed)
    inputs += [ex['inputs'] for ex in examples]
    targets += [ex['targets'] for ex in examples]
    task_ids += [task_id] * len(examples)
  decoder_targets = _encode(targets, TARGET_LENGTH)
  return {
      'encoder_input_tokens': _encode(inputs, INPUT_LENGTH),
      'decoder_target_tokens': decoder_targets,
      # Shifted right with 0 as the start token, as seqio's converter does.
      'decoder_input_tokens': np.pad(decoder_targets[:, :-1],
                                     [(0, 0), (1, 0)]),
      'decoder_loss_weights': (decoder_targets > 0).astype(np.float32),
      'task_ids': np.asarray(task_ids, np.int32),
  }


def train_batches(data: Dict[str, np.ndarray], batch_size: int,
                  seed: int) -> Iterator[Dict[str, np.ndarray]]:
  """Endless batches of examples drawn uniformly from all tasks (equal
  mixing rates: every task has as many training examples)."""
  rng = np.random.default_rng(seed)
  size = len(data['task_ids'])
  while True:
    index = rng.integers(0, size, batch_size)
    yield {k: v[index] for k, v in data.items()}


def task_rows(data: Dict[str, np.ndarray]) -> Dict[int, np.ndarray]:
  """{task id: row indices} of an evaluation set."""
  return {int(t): np.flatnonzero(data['task_ids'] == t)
          for t in np.unique(data['task_ids'])}
