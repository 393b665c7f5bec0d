"""Checkpoints with orbax: periodic, keep-N (plus each task's best), atomic,
resumable.

Layout of `<model_dir>/checkpoints/<step>/`:
  params/     the parameter tree (sharded arrays, tensorstore)
  opt_state/  the optimizer state
  meta/       JSON: step, batches consumed, task vocabulary, batch size,
              process count, whether the data iterators were saved
  checksums.json  CRC32 and size of every other file of the step
and `<model_dir>/checkpoints/task_vocabulary.json` beside them. Each host's
training-data iterator (tf.data iterator checkpointing, as t5x's
`checkpoint_dataset`) is in
`<model_dir>/checkpoints/data/<step>/process_<i>-of-<n>/`, written before the
step's orbax save starts, so every complete step has it.

Checksums are part of each save's commit: orbax writes a step into a
temporary directory and renames it once complete; the checksums of its files
are written into that directory just before the rename (orbax's
post-finalization callback), so every step that exists has them, even if
the process is killed right after. They are verified before a restore, so a
truncated or bit-flipped file is reported by step and file instead of
surfacing as a TensorStore traceback or, worse, as NaN losses.
A step that cannot be read names the previous step; `train` resumes from it
(moving the bad step to MODEL_DIR/corrupt_checkpoints/) when
`Checkpointer.fall_back_to_previous` is set.

Orbax writes each step into a temporary directory and renames it when every
item is complete, so a crash during a save leaves no checkpoint that restores
wrong: the half-written directory is never listed as a step.

Restoring a data iterator sets its state; nothing is replayed, so resuming
takes the same time at step 100 and at step 100,000. (Checkpoints written
before iterator states were saved resume by skipping the batches consumed.)
"""
import dataclasses
import json
import logging
import os
import zlib
from typing import (Any, Collection, Dict, List, Mapping, Optional, Sequence,
                    Tuple)

from etils import epath
import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

from hyperprompt.tasks.task_vocab import TaskVocabulary

CHECKPOINTS = 'checkpoints'
DATA_ITERATORS = 'data'
TASK_VOCABULARY_FILE = 'task_vocabulary.json'
_ITEMS = ('params', 'opt_state', 'meta')
CHECKSUMS_FILE = 'checksums.json'
CORRUPT_CHECKPOINTS = 'corrupt_checkpoints'
_CHUNK = 1 << 24


class CorruptCheckpointError(ValueError):
  """A checkpoint step whose files fail their checksums or cannot be read."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class _StepUnreadable(Exception):
  """Internal: restoring a step failed; the cause is the reason."""


class CheckpointSaveError(OSError):
  """A checkpoint save that failed (in the background, for async saves)."""


def _crc32(path: str) -> int:
  crc = 0
  with tf.io.gfile.GFile(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


# Orbax's own step files, written or rewritten by the commit itself (commit
# time, success marker): bookkeeping, not data, and not final before it.
_WRITTEN_AT_COMMIT = (CHECKSUMS_FILE, '_CHECKPOINT_METADATA',
                      'commit_success.txt')


def file_checksums(step_dir: str) -> Dict[str, Dict[str, int]]:
  """{path relative to `step_dir`: {'crc32', 'bytes'}} of its files."""
  sums = {}
  for directory, _, files in tf.io.gfile.walk(step_dir):
    for name in files:
      path = os.path.join(directory, name)
      relative = os.path.relpath(path, step_dir)
      if relative not in _WRITTEN_AT_COMMIT:
        sums[relative] = {'crc32': _crc32(path),
                          'bytes': tf.io.gfile.stat(path).length}
  return sums


def write_checksums(step_dir: str) -> None:
  from hyperprompt import atomic_files  # pylint: disable=g-import-not-at-top
  atomic_files.write_text(os.path.join(step_dir, CHECKSUMS_FILE), json.dumps(
      file_checksums(step_dir), indent=0, sort_keys=True))


def verify_checksums(directory: str, step: int) -> bool:
  """Checks step `step` of the checkpoints `directory` against its record.

  Returns False if the step has no checksums (saved by an older version, or
  killed before they were written); raises CorruptCheckpointError naming
  the step and the first file that differs.
  """
  step_dir = os.path.join(directory, str(step))
  record = os.path.join(step_dir, CHECKSUMS_FILE)
  if not tf.io.gfile.exists(record):
    return False
  with tf.io.gfile.GFile(record) as f:
    expected = json.load(f)
  for relative, want in sorted(expected.items()):
    path = os.path.join(step_dir, relative)
    if not tf.io.gfile.exists(path):
      problem = 'is missing'
    elif tf.io.gfile.stat(path).length != want['bytes']:
      problem = (f'has {tf.io.gfile.stat(path).length} bytes, '
                 f'{want["bytes"]} when saved (truncated?)')
    elif _crc32(path) != want['crc32']:
      problem = 'does not match its checksum (its bytes changed since saved)'
    else:
      continue
    raise CorruptCheckpointError(
        f'Checkpoint step {step} cannot be read: {path} {problem}.', step)
  return True


def _unreadable(directory: str, step: int, error: Exception,
                earlier_steps: Sequence[int], hint: str) -> Exception:
  """The error for a step whose restore failed, naming the previous step."""
  if isinstance(error, CorruptCheckpointError):
    message = str(error)
  else:
    message = (f'Checkpoint step {step} in {directory} cannot be read '
               f'({type(error).__name__}: {" ".join(str(error).split())[:300]})'
               '.')
  previous = [s for s in earlier_steps if s < step]
  if previous:
    message += f' The previous step is {max(previous)}: {hint}'
  else:
    message += ' There is no earlier step in this directory.'
  return CorruptCheckpointError(message, step)


class CheckpointMismatchError(ValueError):
  """A checkpoint that does not fit the configured run (raised before orbax
  reads any array, so nothing is restored half-way)."""


# What to do about a mismatch, in every such error.
MISMATCH_ADVICE = (
    'Use the gin files the run was trained with, start a new MODEL_DIR, or '
    'pass the checkpoint as INITIAL_CHECKPOINT_PATH to fine-tune from it.')
# How many differing arrays an error names.
_NAMED_DIFFERENCES = 3


def _key_name(key) -> str:
  for attribute in ('key', 'name', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _array_specs(tree) -> Dict[str, Tuple[Tuple[int, ...], str]]:
  """'/'-joined path -> (shape, dtype name) of each array in `tree` (abstract
  arrays or orbax's ArrayMetadata; orbax stores named tuples as dicts by field
  name, so both sides name a leaf the same way)."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'))
  return {'/'.join(_key_name(k) for k in path):
              (tuple(leaf.shape), np.dtype(leaf.dtype).name)
          for path, leaf in leaves}


def _describe(spec) -> str:
  shape, dtype = spec
  return f'{shape} {dtype}'


def tree_differences(stored, configured) -> List[str]:
  """The arrays that differ between a checkpoint's tree and the configured
  one, by path, in path order: missing on either side, or another shape or
  dtype. Both are trees of anything with .shape and .dtype."""
  stored, configured = _array_specs(stored), _array_specs(configured)
  differences = []
  for path in sorted(set(stored) | set(configured)):
    if path not in stored:
      differences.append(f'{path} is not in the checkpoint')
    elif path not in configured:
      differences.append(f'{path} is in the checkpoint but not in the '
                         'configured model')
    elif stored[path] != configured[path]:
      differences.append(
          f'{path} is {_describe(stored[path])} in the checkpoint but '
          f'{_describe(configured[path])} in the configured model')
  return differences


def stored_tree(step_dir: epath.PathLike, item: str):
  """The ArrayMetadata tree of one item of a step, read without its arrays."""
  metadata = ocp.StandardCheckpointer().metadata(epath.Path(step_dir) / item)
  return getattr(metadata, 'item_metadata', metadata)


def check_tree(stored, configured, item: str,
               step_dir: epath.PathLike) -> None:
  """Raises CheckpointMismatchError naming the first differing arrays of
  `item` ('params' or 'opt_state') between `stored` (its stored_tree) and
  `configured`."""
  differences = tree_differences(stored, configured)
  if not differences:
    return
  what = 'parameters' if item == 'params' else 'optimizer state'
  named = '; '.join(differences[:_NAMED_DIFFERENCES])
  more = len(differences) - _NAMED_DIFFERENCES
  if more > 0:
    named += f' (and {more} more)'
  raise CheckpointMismatchError(
      f'The checkpoint {step_dir} does not match the configured model\'s '
      f'{what}: {named}. {MISMATCH_ADVICE}')


def _check_task_vocabulary(task_vocabulary: TaskVocabulary,
                           meta: Mapping[str, Any],
                           step_dir: epath.PathLike) -> None:
  try:
    task_vocabulary.check_matches(TaskVocabulary(meta['task_names']))
  except ValueError as e:
    message = ' '.join(str(e).split())  # One line.
    raise CheckpointMismatchError(
        f'{step_dir}: {message} {MISMATCH_ADVICE}') from None


def check_data_position(meta: Mapping[str, Any], batch_size: Optional[int],
                        step_dir: epath.PathLike) -> None:
  """The data position is per host and counts global batches: it only means
  the same examples with the same batch size and number of hosts.
  (Checkpoints from before these were saved pass.)"""
  saved = meta.get('batch_size')
  if saved is not None and batch_size is not None and saved != batch_size:
    raise CheckpointMismatchError(
        f'The checkpoint {step_dir} was trained with BATCH_SIZE={saved} and '
        f'this run has BATCH_SIZE={batch_size}: its data position counts '
        f'batches of {saved}, so the resumed run would see other examples. '
        f'Resume with BATCH_SIZE={saved}, start a new MODEL_DIR, or pass the '
        'checkpoint as INITIAL_CHECKPOINT_PATH to fine-tune from it.')
  hosts = meta.get('process_count')
  if hosts is not None and hosts != jax.process_count():
    raise CheckpointMismatchError(
        f'The checkpoint {step_dir} was written by {hosts} processes and this '
        f'run has {jax.process_count()}: each process reads its own shard of '
        'the data, so the saved position would mean other examples. Resume '
        f'on {hosts} processes, start a new MODEL_DIR, or pass the checkpoint '
        'as INITIAL_CHECKPOINT_PATH to fine-tune from it.')


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
    checksums: record each file's CRC32 as part of the save's commit (this
      reads the step back once) and verify it before restoring.
    fall_back_to_previous: when the latest step cannot be read, move it to
      MODEL_DIR/corrupt_checkpoints/ and restore the previous step (with a
      warning) instead of stopping.
    batch_size: the run's global batch size, saved with each checkpoint; a
      resumed run with another one is refused (its data position counts
      batches of the saved size).
  """

  def __init__(self, model_dir: str, task_vocabulary: TaskVocabulary,
               keep: int = 3, async_save: bool = True,
               checksums: bool = True, fall_back_to_previous: bool = False,
               batch_size: Optional[int] = None):
    self.model_dir = model_dir
    self.directory = checkpoint_dir(model_dir)
    self.task_vocabulary = task_vocabulary
    self.batch_size = batch_size
    self.checksums = checksums
    self.fall_back_to_previous = fall_back_to_previous
    self.async_save = async_save
    # The step of the save in progress (or last started).
    self._saving: Optional[int] = None
    self._best = set()
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=1,  # The runner decides when to save.
        preservation_policy=_KeepLatestAndBest(keep, self._best),
        # Always orbax's async checkpointer, whose callback writes the
        # checksums before the commit; a synchronous save waits for it.
        enable_async_checkpointing=True,
        async_options=ocp.AsyncOptions(
            post_finalization_callback=self._write_checksums_before_commit),
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

  def _iterator_prefix(self, step: int) -> str:
    return os.path.join(
        self.directory, DATA_ITERATORS, str(step),
        f'process_{jax.process_index()}-of-{jax.process_count()}', 'iterator')

  def save(self, state, batches_consumed: int,
           data_iterator: Optional[tf.data.Iterator] = None) -> None:
    """Saves `state` (a trainer.TrainState) at its step, and this host's
    `data_iterator` at its current position (written before the step's orbax
    save starts, so a complete step always has it).

    Raises CheckpointSaveError if this or the previous (background) save
    failed.
    """
    self.check_for_errors()  # A failed background save stops here.
    step = int(jax.device_get(state.step))
    if data_iterator is not None:
      tf.train.Checkpoint(ds=data_iterator).write(self._iterator_prefix(step))
    meta = {'step': step, 'batches_consumed': int(batches_consumed),
            'task_names': list(self.task_vocabulary.names),
            'batch_size': self.batch_size,
            'process_count': jax.process_count(),
            'data_iterator': data_iterator is not None}
    try:
      self.manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(state.params),
          opt_state=ocp.args.StandardSave(state.opt_state),
          meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e
    self._saving = step
    if not self.async_save:
      self.wait()
    logging.info('Saving checkpoint of step %d in %s.', step, self.directory)
    self._remove_stale_iterators(step)

  def _remove_stale_iterators(self, step: int) -> None:
    """Deletes the iterator states of earlier steps orbax no longer keeps
    (manager.save has waited for the previous save, so those are final)."""
    root = os.path.join(self.directory, DATA_ITERATORS)
    if jax.process_index() != 0 or not tf.io.gfile.exists(root):
      return
    kept = set(self.manager.all_steps())
    for name in tf.io.gfile.listdir(root):
      saved = int(name.rstrip('/'))
      if saved < step and saved not in kept:
        tf.io.gfile.rmtree(os.path.join(root, name.rstrip('/')))

  def restore_data_iterator(self, step: int,
                            data_iterator: tf.data.Iterator) -> bool:
    """Sets `data_iterator` (fresh, of the same pipeline) to this host's
    position at `step`. False when that checkpoint has no iterator state
    (written before they were saved, or from in-memory batches)."""
    meta = self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    if not meta.get('data_iterator'):
      return False
    tf.train.Checkpoint(ds=data_iterator).read(
        self._iterator_prefix(step)).assert_consumed()
    return True

  def _save_error(self, step: Optional[int], error: Exception):
    saved = [s for s in self.all_steps() if step is None or s < step]
    return CheckpointSaveError(
        f'Saving the checkpoint of step {step} in {self.directory} failed: '
        f'{type(error).__name__}: {" ".join(str(error).split())[:300]}. '
        'Training stopped; ' + (f'the last complete checkpoint is step '
                                f'{max(saved)}.' if saved else
                                'no checkpoint was completed.'))

  def check_for_errors(self) -> None:
    """Raises CheckpointSaveError at once if a background save failed.

    Cheap (no waiting): call it every step, so that training does not go on
    for a whole checkpoint period after a save failed.
    """
    try:
      self.manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(self._saving, e) from e

  def _write_checksums_before_commit(self) -> None:
    """Orbax's post-finalization callback (its save thread): every item of
    step `_saving` is complete in its temporary directory, which orbax
    renames (commits) after this returns. On storage without renames (GCS)
    orbax writes the step in place and commits with a marker file after
    this, so the step directory is the one to record."""
    if not self.checksums or jax.process_index() != 0:
      return
    final = os.path.join(self.directory, str(self._saving))
    pending = tf.io.gfile.glob(f'{final}.orbax-checkpoint-tmp*')
    if len(pending) > 1:
      raise CheckpointSaveError(
          f'Several temporary directories of step {self._saving}: {pending}.')
    write_checksums(pending[0] if pending else final)

  def wait(self) -> None:
    """Blocks until background saves are committed, with their checksums;
    raises CheckpointSaveError if one failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(self._saving, e) from e

  def restore(self, abstract_state, step: Optional[int] = None):
    """Restores (state, batches_consumed) at `step` (default: latest).

    Args:
      abstract_state: a TrainState of jax.ShapeDtypeStruct with shardings;
        arrays are restored directly onto their shards.
      step: which checkpoint.

    Raises:
      FileNotFoundError: no checkpoint.
      CheckpointMismatchError: the checkpoint's task vocabulary, batch size,
        process count, parameter or optimizer state tree differs from the
        run's (checked before any array is read).
      CorruptCheckpointError: the step's files fail their checksums or
        cannot be read (unless `fall_back_to_previous` and there is an
        earlier step, which is then restored).
    """
    latest = step is None
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    try:
      return self._restore_step(abstract_state, step)
    except _StepUnreadable as e:
      error = e.__cause__
    earlier = [s for s in self.all_steps() if s < step]
    if not (latest and self.fall_back_to_previous and earlier):
      raise _unreadable(
          self.directory, step, error, earlier,
          'resume from it by rerunning with '
          '--gin.Checkpointer.fall_back_to_previous=True (step '
          f'{step} is then moved to {self.model_dir}/{CORRUPT_CHECKPOINTS}/).'
      ) from error
    aside = os.path.join(self.model_dir, CORRUPT_CHECKPOINTS, str(step))
    logging.warning('Checkpoint step %d cannot be read (%s); moving it to %s '
                    'and resuming from step %d.', step, error, aside,
                    max(earlier))
    if jax.process_index() == 0:
      tf.io.gfile.makedirs(os.path.dirname(aside))
      tf.io.gfile.rename(os.path.join(self.directory, str(step)), aside,
                         overwrite=True)
    self.manager.reload()
    return self.restore(abstract_state)

  def _restore_step(self, abstract_state, step: int):
    """Restores `step`; raises _StepUnreadable from any read failure."""
    try:
      if self.checksums:
        verify_checksums(self.directory, step)
      meta = self.manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
      step_dir = epath.Path(self.directory) / str(step)
      stored = {item: stored_tree(step_dir, item)
                for item in ('params', 'opt_state')}
    except Exception as e:  # pylint: disable=broad-except
      raise _StepUnreadable() from e
    # A different configuration is the run's mistake, not corruption.
    _check_task_vocabulary(self.task_vocabulary, meta, step_dir)
    check_data_position(meta, self.batch_size, step_dir)
    check_tree(stored['params'], abstract_state.params, 'params', step_dir)
    check_tree(stored['opt_state'], abstract_state.opt_state, 'opt_state',
               step_dir)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_state.params),
          opt_state=ocp.args.StandardRestore(abstract_state.opt_state)))
    except Exception as e:  # pylint: disable=broad-except
      raise _StepUnreadable() from e
    state = abstract_state.replace(
        step=jax.device_put(np.int32(meta['step']),
                            abstract_state.step.sharding),
        params=restored['params'], opt_state=restored['opt_state'])
    logging.info('Restored step %d from %s (%d batches consumed).',
                 meta['step'], self.directory, meta['batches_consumed'])
    return state, meta['batches_consumed']

  def close(self) -> None:
    self.wait()
    self.manager.close()


def _checkpoints_directory(checkpoint_dir_or_model_dir: str) -> str:
  directory = checkpoint_dir_or_model_dir
  if os.path.basename(os.path.normpath(directory)) != CHECKPOINTS and (
      os.path.isdir(os.path.join(directory, CHECKPOINTS))):
    directory = os.path.join(directory, CHECKPOINTS)
  return directory


def restore_params(checkpoint_dir_or_model_dir: str,
                   step: Optional[int] = None,
                   abstract_params: Any = None,
                   task_vocabulary: Optional[TaskVocabulary] = None,
                   expected_params: Any = None) -> Any:
  """The parameters of a checkpoint, for other tools (export, analyze).

  Args:
    checkpoint_dir_or_model_dir: a run's MODEL_DIR or its `checkpoints` dir.
    step: which step (default: latest).
    abstract_params: optional tree of jax.ShapeDtypeStruct with shardings to
      restore onto; without it, arrays come back as host NumPy arrays.
    task_vocabulary: if given, checked against the checkpoint's.
    expected_params: the configured model's parameter tree (anything with
      .shape and .dtype), compared with the checkpoint's; defaults to
      abstract_params.

  Raises:
    CheckpointMismatchError: the task vocabulary or the parameter tree
      differs, checked before any array is read.
  """
  directory = _checkpoints_directory(checkpoint_dir_or_model_dir)
  manager = ocp.CheckpointManager(
      directory, item_names=_ITEMS,
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {directory}.')
  if step not in manager.all_steps():
    raise FileNotFoundError(
        f'No checkpoint of step {step} in {directory}; its steps are '
        f'{sorted(manager.all_steps())}.')
  try:
    verify_checksums(directory, step)
    meta = manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    step_dir = epath.Path(directory) / str(step)
    stored = stored_tree(step_dir, 'params')
  except Exception as e:  # pylint: disable=broad-except
    raise _unreadable(directory, step, e, manager.all_steps(),
                      'pass it as the step to read (--step, or '
                      'CHECKPOINT_STEP in gin).') from e
  if task_vocabulary is not None:
    _check_task_vocabulary(task_vocabulary, meta, step_dir)
  if expected_params is None:
    expected_params = abstract_params
  if expected_params is not None:
    check_tree(stored, expected_params, 'params', step_dir)
  try:
    if abstract_params is None:
      metadata = manager.item_metadata(step)['params']
      abstract_params = jax.tree.map(
          lambda m: np.empty(m.shape, m.dtype), metadata,
          is_leaf=lambda m: hasattr(m, 'shape'))
    params = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))['params']
  except Exception as e:  # pylint: disable=broad-except
    raise _unreadable(directory, step, e, manager.all_steps(),
                      'pass it as the step to read (--step, or '
                      'CHECKPOINT_STEP in gin).') from e
  manager.close()
  return params


def latest_step(model_dir: str) -> Optional[int]:
  """The latest complete checkpoint step of a run, or None."""
  directory = checkpoint_dir(model_dir)
  if not epath.Path(directory).exists():
    return None
  steps = ocp.utils.checkpoint_steps(directory)
  return max(steps) if steps else None


def saved_task_names(checkpoint_dir_or_model_dir: str) -> Optional[list]:
  """The task names saved beside a run's checkpoints, or None if absent."""
  directory = _checkpoints_directory(checkpoint_dir_or_model_dir)
  path = os.path.join(directory, TASK_VOCABULARY_FILE)
  if not epath.Path(path).exists():
    return None
  return list(TaskVocabulary.load(path).names)
