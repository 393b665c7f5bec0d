"""Checkpoints with orbax: periodic, keep-N (plus each task's best), atomic,
resumable.

Layout of `<model_dir>/checkpoints/<step>/`:
  params/     the parameter tree (sharded arrays, tensorstore)
  opt_state/  the optimizer state
  meta/       JSON: step, batches consumed, task vocabulary
and `<model_dir>/checkpoints/task_vocabulary.json` beside them.

Orbax writes each step into a temporary directory and renames it when every
item is complete, so a crash during a save leaves no checkpoint that restores
wrong: the half-written directory is never listed as a step.

The data position is the number of batches consumed: the input pipeline is
deterministic (fixed seed), so a resumed run skips that many batches and
continues with exactly the batches an uninterrupted run would see.
"""
import dataclasses
import logging
import os
from typing import Any, Collection, Mapping, Optional, Sequence

from etils import epath
import gin
import jax
import numpy as np
import orbax.checkpoint as ocp

from hyperprompt.tasks.task_vocab import TaskVocabulary

CHECKPOINTS = 'checkpoints'
TASK_VOCABULARY_FILE = 'task_vocabulary.json'
_ITEMS = ('params', 'opt_state', 'meta')


@dataclasses.dataclass
class _KeepLatestAndBest:
  """Orbax preservation policy: the `n` latest steps and the `best` steps."""
  n: int
  best: set

  def should_preserve(self, checkpoints, *, context) -> Sequence[bool]:
    del context
    latest = sorted((c.step for c in checkpoints), reverse=True)[:self.n]
    return [c.step in latest or c.step in self.best for c in checkpoints]


def checkpoint_dir(model_dir: str) -> str:
  return os.path.join(model_dir, CHECKPOINTS)


@gin.configurable(module='hyperprompt.checkpoints')
class Checkpointer:
  """Saves and restores a run's TrainState, data position and task vocabulary.

  Attributes:
    keep: how many of the latest checkpoints to keep (best ones are kept in
      addition, see `keep_step`).
    async_save: write in a background thread while training continues.
  """

  def __init__(self, model_dir: str, task_vocabulary: TaskVocabulary,
               keep: int = 3, async_save: bool = True):
    self.directory = checkpoint_dir(model_dir)
    self.task_vocabulary = task_vocabulary
    self._best = set()
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=1,  # The runner decides when to save.
        preservation_policy=_KeepLatestAndBest(keep, self._best),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=_ITEMS)
    vocab_file = os.path.join(self.directory, TASK_VOCABULARY_FILE)
    if jax.process_index() == 0 and not os.path.exists(vocab_file):
      task_vocabulary.save(vocab_file)

  def keep_step(self, step: int) -> None:
    """Protects `step` from keep-N deletion (a task's best checkpoint)."""
    self._best.add(int(step))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> Sequence[int]:
    return list(self.manager.all_steps())

  def save(self, state, batches_consumed: int) -> None:
    """Saves `state` (a trainer.TrainState) at its step."""
    step = int(jax.device_get(state.step))
    meta = {'step': step, 'batches_consumed': int(batches_consumed),
            'task_names': list(self.task_vocabulary.names)}
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        meta=ocp.args.JsonSave(meta)), force=True)
    logging.info('Saving checkpoint of step %d in %s.', step, self.directory)

  def wait(self) -> None:
    """Blocks until background saves are on disk."""
    self.manager.wait_until_finished()

  def restore(self, abstract_state, step: Optional[int] = None):
    """Restores (state, batches_consumed) at `step` (default: latest).

    Args:
      abstract_state: a TrainState of jax.ShapeDtypeStruct with shardings;
        arrays are restored directly onto their shards.
      step: which checkpoint.

    Raises:
      FileNotFoundError: no checkpoint.
      ValueError: the checkpoint's task vocabulary differs from the run's.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    meta = self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    self.task_vocabulary.check_matches(TaskVocabulary(meta['task_names']))
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state.params),
        opt_state=ocp.args.StandardRestore(abstract_state.opt_state)))
    state = abstract_state.replace(
        step=jax.device_put(np.int32(meta['step']),
                            abstract_state.step.sharding),
        params=restored['params'], opt_state=restored['opt_state'])
    logging.info('Restored step %d from %s (%d batches consumed).',
                 meta['step'], self.directory, meta['batches_consumed'])
    return state, meta['batches_consumed']

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_params(checkpoint_dir_or_model_dir: str,
                   step: Optional[int] = None,
                   abstract_params: Any = None,
                   task_vocabulary: Optional[TaskVocabulary] = None) -> Any:
  """The parameters of a checkpoint, for other tools (export, analyze).

  Args:
    checkpoint_dir_or_model_dir: a run's MODEL_DIR or its `checkpoints` dir.
    step: which step (default: latest).
    abstract_params: optional tree of jax.ShapeDtypeStruct with shardings to
      restore onto; without it, arrays come back as host NumPy arrays.
    task_vocabulary: if given, checked against the checkpoint's.
  """
  directory = checkpoint_dir_or_model_dir
  if os.path.basename(os.path.normpath(directory)) != CHECKPOINTS and (
      os.path.isdir(os.path.join(directory, CHECKPOINTS))):
    directory = os.path.join(directory, CHECKPOINTS)
  manager = ocp.CheckpointManager(
      directory, item_names=_ITEMS,
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {directory}.')
  if task_vocabulary is not None:
    meta = manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    task_vocabulary.check_matches(TaskVocabulary(meta['task_names']))
  if abstract_params is None:
    metadata = manager.item_metadata(step)['params']
    abstract_params = jax.tree.map(
        lambda m: np.empty(m.shape, m.dtype), metadata,
        is_leaf=lambda m: hasattr(m, 'shape'))
  params = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract_params)))['params']
  manager.close()
  return params


def latest_step(model_dir: str) -> Optional[int]:
  """The latest complete checkpoint step of a run, or None."""
  directory = checkpoint_dir(model_dir)
  if not epath.Path(directory).exists():
    return None
  steps = ocp.utils.checkpoint_steps(directory)
  return max(steps) if steps else None


def restore_task_vocabulary(model_dir: str) -> TaskVocabulary:
  """The task vocabulary saved beside a run's checkpoints."""
  return TaskVocabulary.load(
      os.path.join(checkpoint_dir(model_dir), TASK_VOCABULARY_FILE))
