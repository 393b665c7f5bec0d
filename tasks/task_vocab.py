"""The task vocabulary: the ordered list of task names a run conditions on.

A mixture fixes this order, and the id of a task is its index in it. The
vocabulary is saved beside every checkpoint and compared on restore, because
per-task parameters (prompts, task embeddings) are stored by id: restoring with
a reordered or different task list would silently give tasks the wrong prompts.
"""
import json
from typing import Iterable

import tensorflow as tf


class TaskVocabulary:
  """Ordered, duplicate-free task names; a task's id is its index."""

  def __init__(self, names: Iterable[str]):
    self._names = tuple(names)
    if not self._names:
      raise ValueError('A task vocabulary needs at least one task name.')
    duplicates = sorted({n for n in self._names if self._names.count(n) > 1})
    if duplicates:
      raise ValueError(f'Task names must be unique; repeated: {duplicates}.')
    self._ids = {name: i for i, name in enumerate(self._names)}

  @property
  def names(self) -> tuple[str, ...]:
    return self._names

  def __len__(self) -> int:
    return len(self._names)

  def id(self, name: str) -> int:
    """The id of task `name`; unknown names list the known ones."""
    if name not in self._ids:
      raise KeyError(
          f'Unknown task {name!r}. Known tasks, in id order: '
          f'{list(self._names)}.')
    return self._ids[name]

  def name(self, task_id: int) -> str:
    """The name of the task with id `task_id` (no negative indexing)."""
    if not 0 <= int(task_id) < len(self._names):
      raise IndexError(
          f'Task id {task_id} is out of range [0, {len(self._names)}) for the '
          f'task vocabulary {list(self._names)}.')
    return self._names[int(task_id)]

  def __eq__(self, other) -> bool:
    return isinstance(other, TaskVocabulary) and self._names == other._names

  def __hash__(self) -> int:
    return hash(self._names)

  def __repr__(self) -> str:
    return f'TaskVocabulary({list(self._names)})'

  def check_matches(self, restored: 'TaskVocabulary') -> None:
    """Raises ValueError, naming the differences, unless `restored` == self.

    Call it on checkpoint restore with the vocabulary saved in the checkpoint.
    """
    if self == restored:
      return
    lines = [f'  id {i}: run has {a!r}, checkpoint has {b!r}'
             for i, (a, b) in enumerate(zip(self._names, restored.names))
             if a != b]
    if len(self) != len(restored):
      lines.append(f'  run has {len(self)} tasks, checkpoint has '
                   f'{len(restored)}')
    raise ValueError(
        "The task vocabulary of this run does not match the checkpoint's, so "
        'per-task parameters would be assigned to the wrong tasks:\n'
        + '\n'.join(lines)
        + '\nUse the mixture the checkpoint was trained with, or start from '
        'a checkpoint without per-task parameters.')

  def save(self, path: str) -> None:
    """Writes the names as JSON to any tf.io.gfile path (local, gs://)."""
    with tf.io.gfile.GFile(path, 'w') as f:
      json.dump({'task_names': list(self._names)}, f, indent=1)

  @classmethod
  def load(cls, path: str) -> 'TaskVocabulary':
    with tf.io.gfile.GFile(path) as f:
      return cls(json.load(f)['task_names'])
