"""Checkpoint integrity: every file's checksum is recorded once a save is on
disk and verified on restore, so a flipped byte or a truncated file is
reported by step and file (with the previous step to resume from), and a
failed save stops with its cause."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt import checkpoints
from hyperprompt import trainer
from hyperprompt.tasks.task_vocab import TaskVocabulary

VOCAB = TaskVocabulary(['a', 'b'])


def _state(step: int):
  return trainer.TrainState(
      step=jnp.array(step, jnp.int32),
      params={'w': jnp.arange(256, dtype=jnp.float32) * step},
      opt_state={'m': jnp.full(3, float(step))})


def _abstract():
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      _state(0))


def _save(model_dir, steps, **kwargs):
  saver = checkpoints.Checkpointer(str(model_dir), VOCAB, **kwargs)
  for step in steps:
    saver.save(_state(step), batches_consumed=step)
  saver.close()


def _largest_params_file(model_dir, step):
  step_dir = os.path.join(checkpoints.checkpoint_dir(str(model_dir)),
                          str(step), 'params')
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  return max(files, key=os.path.getsize)


def test_checksums_are_recorded_for_every_saved_step(tmp_path):
  _save(tmp_path, [2, 4])
  directory = checkpoints.checkpoint_dir(str(tmp_path))
  for step in (2, 4):
    assert checkpoints.verify_checksums(directory, step)
    recorded = checkpoints.file_checksums(os.path.join(directory, str(step)))
    assert any(name.startswith('params/') for name in recorded)


@pytest.mark.parametrize('async_save', [True, False])
def test_the_checksums_are_committed_with_the_step(tmp_path, async_save):
  # A run killed right after a save: orbax finishes (commits) the step, and
  # nothing of ours runs after that (no next save, no close).
  saver = checkpoints.Checkpointer(str(tmp_path), VOCAB,
                                   async_save=async_save)
  saver.save(_state(2), batches_consumed=2)
  saver.manager.wait_until_finished()
  directory = checkpoints.checkpoint_dir(str(tmp_path))
  assert saver.all_steps() == [2]
  # The record is there and covers every file of the committed step.
  assert checkpoints.verify_checksums(directory, 2)
  with open(os.path.join(directory, '2', checkpoints.CHECKSUMS_FILE)) as f:
    recorded = set(json.load(f))
  on_disk = set(checkpoints.file_checksums(os.path.join(directory, '2')))
  assert {n for n in on_disk if n.startswith(('params/', 'opt_state/'))} <= (
      recorded)
  saver.manager.close()


def test_a_flipped_byte_is_named_by_step_and_file(tmp_path):
  _save(tmp_path, [2, 4])
  path = _largest_params_file(tmp_path, 4)
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x10]))
  saver = checkpoints.Checkpointer(str(tmp_path), VOCAB)
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=f'step 4 cannot be read: {path} does not match its '
                     'checksum.*previous step is 2.*fall_back_to_previous'):
    saver.restore(_abstract())
  saver.close()
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=f'step 4 cannot be read: {path}.*previous step is '
                     '2.*--step'):
    checkpoints.restore_params(str(tmp_path))


def test_a_truncated_file_falls_back_to_the_previous_step(tmp_path):
  _save(tmp_path, [2, 4])
  path = _largest_params_file(tmp_path, 4)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  saver = checkpoints.Checkpointer(str(tmp_path), VOCAB,
                                   fall_back_to_previous=True)
  state, consumed = saver.restore(_abstract())
  saver.close()
  assert int(state.step) == 2 and consumed == 2
  np.testing.assert_array_equal(state.params['w'], _state(2).params['w'])
  # Nothing is deleted: the bad step is moved aside.
  assert os.path.isdir(tmp_path / checkpoints.CORRUPT_CHECKPOINTS / '4')
  assert checkpoints.latest_step(str(tmp_path)) == 2


def test_the_only_step_unreadable_says_there_is_no_earlier(tmp_path):
  _save(tmp_path, [2], async_save=False)
  with open(_largest_params_file(tmp_path, 2), 'r+b') as f:
    f.truncate(3)
  saver = checkpoints.Checkpointer(str(tmp_path), VOCAB,
                                   fall_back_to_previous=True)
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match='bytes.*truncated.*no earlier step'):
    saver.restore(_abstract())
  saver.close()


def test_a_failed_save_names_its_cause(tmp_path, monkeypatch):
  saver = checkpoints.Checkpointer(str(tmp_path), VOCAB, async_save=False)
  saver.save(_state(2), batches_consumed=2)

  def full_disk(*args, **kwargs):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(saver.manager, 'save', full_disk)
  with pytest.raises(checkpoints.CheckpointSaveError,
                     match='step 4.*failed: OSError.*No space left on device.*'
                     'last complete checkpoint is step 2'):
    saver.save(_state(4), batches_consumed=4)
  monkeypatch.setattr(saver.manager, 'check_for_errors', full_disk)
  with pytest.raises(checkpoints.CheckpointSaveError, match='No space left'):
    saver.check_for_errors()
  saver.close()
