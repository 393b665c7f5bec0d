"""Checkpoints: resume after SIGKILL gives the uninterrupted losses, SIGTERM
saves the current step, NaN stops with the last checkpoint intact, task
vocabulary mismatch is an error."""
import os
import re
import signal
import sys
import time

import jax
import numpy as np
import pytest

import seqio

from hyperprompt import checkpoints, data, history, models, network, runner
from hyperprompt import trainer
from hyperprompt.conditioning.hyperprompt import HyperPromptGlobal
from hyperprompt.conditioning.hyperprompt import HyperPromptSep
from hyperprompt.tasks.task_vocab import TaskVocabulary

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
import runner_tiny  # pylint: disable=g-import-not-at-top,wrong-import-position


def _losses(model_dir):
  by_step = {}
  for row in history.read_history(model_dir):
    if 'train/loss' in row:
      by_step[row['step']] = row['train/loss']  # A resumed step overwrites.
  return by_step


def _wait_for_checkpoint(proc, model_dir,
                         timeout=runner_tiny.STARTUP_TIMEOUT_S):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if checkpoints.latest_step(model_dir):
      return
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    time.sleep(0.2)
  raise TimeoutError('no checkpoint appeared')


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path,
                                                       start_tiny_training):
  killed = str(tmp_path / 'killed')
  proc = start_tiny_training(killed, train_steps=100000, checkpoint_period=3,
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


def test_sigterm_saves_the_current_step(tmp_path, start_tiny_training):
  model_dir = str(tmp_path / 'run')
  proc = start_tiny_training(model_dir, train_steps=100000,
                             checkpoint_period=100000)
  deadline = time.time() + runner_tiny.STARTUP_TIMEOUT_S
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


def _tiny_model(conditioner):
  config = runner_tiny.tiny_model().module.config
  vocab = seqio.ByteVocabulary()
  return models.EncoderDecoderModel(network.Transformer(config, conditioner),
                                    vocab, vocab)


def _in_memory(skip):
  for i in range(skip, 100):
    yield runner_tiny.random_batch(8, seed=i)


def _snapshot(model_dir):
  """Every file under model_dir with its size and modification time."""
  return {os.path.join(root, name): (os.stat(os.path.join(root, name)).st_size,
                                     os.stat(os.path.join(root, name)
                                             ).st_mtime_ns)
          for root, _, names in os.walk(model_dir) for name in names}


def _global(prompt_length):
  return HyperPromptGlobal(num_tasks=runner_tiny.NUM_TASKS,
                           prompt_length=prompt_length, bottleneck=4,
                           layer_task_dim=6, task_embed_dim=4)


# (other model, the first difference the message names).
MISMATCHES = {
    'another conditioner': (
        lambda: _tiny_model(HyperPromptSep(
            num_tasks=runner_tiny.NUM_TASKS, prompt_length=2, bottleneck=4)),
        'conditioner/'),
    'another prompt_length': (
        lambda: _tiny_model(_global(4)),
        r'conditioner/task_prompts is \(9, 2, 16\) float32 in the '
        r'checkpoint but \(9, 4, 16\) float32 in the configured model'),
}


@pytest.mark.parametrize('mismatch', sorted(MISMATCHES))
@pytest.mark.parametrize('command', ['train', 'evaluate', 'infer'])
def test_mismatched_model_is_refused_by_name_before_orbax(
    tiny_trained_run, mismatch, command):
  make_model, first = MISMATCHES[mismatch]
  before = _snapshot(tiny_trained_run)
  kwargs = dict(model=make_model(), model_dir=tiny_trained_run,
                mixture_or_task_name=runner_tiny.MIXTURE,
                task_feature_lengths=runner_tiny.LENGTHS, batch_size=8)
  with pytest.raises(checkpoints.CheckpointMismatchError) as error:
    if command == 'train':
      runner_tiny.train(train_steps=4, train_batches=_in_memory, **kwargs)
    else:
      getattr(runner, command)(**kwargs)
  # One line (gin appends where the configurable was called on the next).
  message = str(error.value).splitlines()[0]
  assert re.search(first, message), message
  assert 'INITIAL_CHECKPOINT_PATH' in message and 'MODEL_DIR' in message
  assert _snapshot(tiny_trained_run) == before


def test_changed_batch_size_is_refused_on_resume(tiny_trained_run):
  before = _snapshot(tiny_trained_run)
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='BATCH_SIZE=8 and this run has BATCH_SIZE=16'):
    runner_tiny.train(model_dir=tiny_trained_run, train_steps=4,
                      batch_size=16, train_batches=_in_memory)
  assert _snapshot(tiny_trained_run) == before


def test_another_host_count_is_refused():
  """Each host's iterator state is its shard's: a checkpoint of 2 processes
  does not resume on this 1 (nor with another batch size)."""
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='written by 2 processes and this run has 1'):
    checkpoints.check_data_position(
        {'batch_size': 8, 'process_count': 2}, 8, 'ckpt/4')
  checkpoints.check_data_position(
      {'batch_size': 8, 'process_count': 1}, 8, 'ckpt/4')


def test_export_and_analyze_trees_are_checked_against_the_checkpoint(
    tiny_trained_run):
  """export and analyze pass models.param_shapes(module): the same model
  restores, another is refused by name without reading arrays."""
  same = models.param_shapes(runner_tiny.tiny_model().module)
  params = checkpoints.restore_params(tiny_trained_run, expected_params=same)
  assert checkpoints.tree_differences(params, same) == []
  other = models.param_shapes(_tiny_model(_global(4)).module)
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='conditioner/'):
    checkpoints.restore_params(tiny_trained_run, expected_params=other)
  with pytest.raises(FileNotFoundError, match=r'steps are \[2\]'):
    checkpoints.restore_params(tiny_trained_run, step=7)


def test_tree_differences_by_hand():
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, np.float32)
  stored = {'a': {'k': f32(2, 3)}, 'b': f32(4), 'c': f32(1)}
  configured = {'a': {'k': f32(2, 4)},
                'b': jax.ShapeDtypeStruct((4,), np.int32), 'd': f32(1)}
  assert checkpoints.tree_differences(stored, configured) == [
      'a/k is (2, 3) float32 in the checkpoint but (2, 4) float32 in the '
      'configured model',
      'b is (4,) float32 in the checkpoint but (4,) int32 in the configured '
      'model',
      'c is in the checkpoint but not in the configured model',
      'd is not in the checkpoint']


def test_data_iterator_restores_its_position_and_old_states_go(tmp_path):
  """A saved tf.data iterator, restored into a fresh one of the same
  pipeline, continues with the batches the original would have given next
  (those of skip(5)); states of steps orbax deleted are deleted too."""
  def pipeline():  # As a new process builds it (each iter() reshuffles).
    return data.train_dataset(runner_tiny.MIXTURE, runner_tiny.LENGTHS, 4,
                              seqio.ShardInfo(0, 1), seed=3)
  saver = checkpoints.Checkpointer(str(tmp_path), TaskVocabulary(['a']),
                                   keep=1, async_save=False)

  def state(step):
    return trainer.TrainState(step=jax.numpy.array(step, jax.numpy.int32),
                              params={'w': jax.numpy.ones(3)},
                              opt_state={'m': jax.numpy.zeros(3)})

  iterator = iter(pipeline())
  for _ in range(5):
    next(iterator)
  saver.save(state(5), 5, iterator)
  want = [next(iterator) for _ in range(2)]
  fresh = iter(pipeline())
  assert saver.restore_data_iterator(5, fresh)
  skipped = iter(pipeline().skip(5))
  for expected in want:
    got, replayed = next(fresh), next(skipped)
    for name, value in expected.items():
      np.testing.assert_array_equal(got[name], value, err_msg=name)
      np.testing.assert_array_equal(replayed[name], value, err_msg=name)

  saver.save(state(6), 6)  # In-memory batches: no iterator state.
  assert not saver.restore_data_iterator(6, iter(pipeline()))
  saver.save(state(7), 7, iterator)
  saver.close()
  assert checkpoints.latest_step(str(tmp_path)) == 7
  assert os.listdir(tmp_path / 'checkpoints' / 'data') == ['7']
