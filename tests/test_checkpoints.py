"""Checkpoints: resume after SIGKILL gives the uninterrupted losses, SIGTERM
saves the current step, NaN stops with the last checkpoint intact, task
vocabulary mismatch is an error."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hyperprompt import checkpoints, runner, trainer
from hyperprompt.tasks.task_vocab import TaskVocabulary

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
import runner_tiny  # pylint: disable=g-import-not-at-top,wrong-import-position


def _losses(model_dir):
  by_step = {}
  for row in runner.read_history(model_dir):
    if 'train/loss' in row:
      by_step[row['step']] = row['train/loss']  # A resumed step overwrites.
  return by_step


def _start(model_dir, **kwargs):
  args = json.dumps(dict(model_dir=model_dir, **kwargs))
  return subprocess.Popen(
      [sys.executable, os.path.join(TESTS, 'runner_tiny.py'), args],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))


def _wait_for_checkpoint(proc, model_dir, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if checkpoints.latest_step(model_dir):
      return
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    time.sleep(0.2)
  raise TimeoutError('no checkpoint appeared')


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
  killed = str(tmp_path / 'killed')
  proc = _start(killed, train_steps=100000, checkpoint_period=3,
                data_seed=7)
  _wait_for_checkpoint(proc, killed)
  time.sleep(1.0)  # Somewhere between (or during) later checkpoints.
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed_from = checkpoints.latest_step(killed)
  assert resumed_from and resumed_from % 3 == 0
  end = resumed_from + 4
  runner_tiny.train(model_dir=killed, train_steps=end, checkpoint_period=3,
                    data_seed=7)
  reference = str(tmp_path / 'reference')
  runner_tiny.train(model_dir=reference, train_steps=end,
                    checkpoint_period=1000, data_seed=7)
  got, want = _losses(killed), _losses(reference)
  steps = range(resumed_from + 1, end + 1)
  np.testing.assert_allclose([got[s] for s in steps], [want[s] for s in steps],
                             rtol=1e-6)


def test_sigterm_saves_the_current_step(tmp_path):
  model_dir = str(tmp_path / 'run')
  proc = _start(model_dir, train_steps=100000, checkpoint_period=100000)
  deadline = time.time() + 240
  while not _losses(model_dir) and time.time() < deadline:
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  assert 'Stopped by SIGTERM' in out
  assert checkpoints.latest_step(model_dir) == max(_losses(model_dir))


# A step's loss is checked once the next step is dispatched, or at once at a
# log, checkpoint or eval step: (NaN step, log period, error message, last
# checkpoint, batches read before the error).
@pytest.mark.parametrize('nan_step,log_period,match,last_saved,read', [
    # Logged at once.
    (5, 1, 'at step 5.*step 4', 4, 5),
    # Checked late, when step 6 is dispatched, and before step 6 is saved.
    (5, 1000, 'at step 5.*step 4', 4, 6),
    # On a checkpoint step: checked before its save.
    (4, 1000, 'at step 4.*step 2', 2, 4),
])
def test_nan_loss_stops_and_last_checkpoint_restores(
    tmp_path, nan_step, log_period, match, last_saved, read):
  model_dir = str(tmp_path / 'nan')
  served = []

  def batches(skip):
    for i in range(skip, 100):
      batch = runner_tiny.random_batch(8, seed=i)
      if i == nan_step - 1:
        batch['decoder_loss_weights'][:] = np.nan
      served.append(i)
      yield batch

  with pytest.raises(FloatingPointError, match=match):
    runner_tiny.train(model_dir=model_dir, train_steps=10,
                      checkpoint_period=2, train_batches=batches,
                      log_period=log_period,
                      make_optimizer=lambda p: trainer.adamw(1e-3))
  assert len(served) == read
  assert checkpoints.latest_step(model_dir) == last_saved
  params = checkpoints.restore_params(model_dir)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_task_vocabulary_mismatch_is_an_error(tmp_path):
  state = trainer.TrainState(step=jax.numpy.array(2, jax.numpy.int32),
                             params={'w': jax.numpy.ones(3)},
                             opt_state={'m': jax.numpy.zeros(3)})
  saver = checkpoints.Checkpointer(str(tmp_path), TaskVocabulary(['a', 'b']),
                                   async_save=False)
  saver.save(state, batches_consumed=2)
  saver.close()
  other = checkpoints.Checkpointer(str(tmp_path), TaskVocabulary(['b', 'a']),
                                   async_save=False)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      state)
  with pytest.raises(ValueError, match="run has 'b', checkpoint has 'a'"):
    other.restore(abstract)
  restored, consumed = checkpoints.Checkpointer(
      str(tmp_path), TaskVocabulary(['a', 'b'])).restore(abstract)
  assert consumed == 2 and int(restored.step) == 2
  np.testing.assert_array_equal(restored.params['w'], np.ones(3))
