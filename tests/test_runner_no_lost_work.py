"""No lost work in the runner: Ctrl-C saves like SIGTERM (a second aborts),
a failed background save stops training at the next step with its cause,
eval prints its metrics when it cannot write them, infer samples from a
seed, and the ETA leaves out the compilation."""
import json
import logging
import os
import signal
import sys
import time

import pytest

from hyperprompt import atomic_files
from hyperprompt import checkpoints
from hyperprompt import decoding
from hyperprompt import history
from hyperprompt import models
from hyperprompt import preemption
from hyperprompt import runner
from hyperprompt import trainer

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
import runner_tiny  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_first_ctrl_c_asks_for_a_save_and_the_second_aborts():
  # What the handler must give back: Python's default_int_handler, or
  # SIG_IGN where the suite was started in the background by a shell.
  before = signal.getsignal(signal.SIGINT)
  stop = preemption.Preemption()
  try:
    # Real signals: without the handler the first would raise at once.
    signal.raise_signal(signal.SIGINT)
    assert stop.stop_requested() and stop.signal_name == 'Ctrl-C'
    with pytest.raises(KeyboardInterrupt, match='Second Ctrl-C'):
      signal.raise_signal(signal.SIGINT)
  finally:
    stop.restore()
  assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_saves_the_current_step_and_exits_non_zero(
    tmp_path, start_tiny_training):
  model_dir = str(tmp_path / 'run')
  proc = start_tiny_training(model_dir, train_steps=100000,
                             checkpoint_period=100000)
  deadline = time.time() + runner_tiny.STARTUP_TIMEOUT_S
  while not history.read_history(model_dir) and time.time() < deadline:
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0
  assert 'Stopped by Ctrl-C after step' in out
  logged = max(row['step'] for row in history.read_history(model_dir))
  assert checkpoints.latest_step(model_dir) >= logged


def test_a_failed_background_save_stops_training_at_the_next_step(
    tmp_path, monkeypatch, caplog):
  served = []

  def batches(skip):
    for i in range(skip, 100):
      served.append(i)
      yield runner_tiny.random_batch(8, seed=i)

  real_save = checkpoints.Checkpointer.save

  def save_then_fail_in_background(self, state, batches_consumed,
                                   data_iterator=None):
    real_save(self, state, batches_consumed, data_iterator)

    def disk_full():
      raise OSError(28, 'No space left on device')
    self.manager.check_for_errors = disk_full
  monkeypatch.setattr(checkpoints.Checkpointer, 'save',
                      save_then_fail_in_background)
  caplog.set_level(logging.INFO)
  with pytest.raises(checkpoints.CheckpointSaveError,
                     match='step 2 .*failed: OSError.*No space left'):
    runner_tiny.train(model_dir=str(tmp_path), train_steps=50,
                      checkpoint_period=2, train_batches=batches,
                      log_period=1,
                      make_optimizer=lambda p: trainer.adamw(1e-3))
  # Saved after step 2; step 3 ran, then the failure stopped the run.
  assert len(served) == 3
  etas = [r.getMessage().rsplit('ETA ', 1)[1] for r in caplog.records
          if 'ETA ' in r.getMessage()]
  # Step 1 includes the compilation: no rate from it.
  assert etas[0] == '?' and etas[1] != '?'


def test_eval_prints_its_results_when_it_cannot_write_them(
    tiny_trained_run, monkeypatch, capsys):
  def read_only(path, text):
    raise OSError(30, 'Read-only file system', path)
  monkeypatch.setattr(atomic_files, 'write_text', read_only)
  with pytest.raises(OSError, match=r'Could not write .*eval_2.json.*'
                     'Read-only file system.*printed above'):
    runner.evaluate(model=runner_tiny.tiny_model(), model_dir=tiny_trained_run,
                    mixture_or_task_name=runner_tiny.MIXTURE,
                    task_feature_lengths=runner_tiny.LENGTHS, batch_size=8,
                    num_examples=2)
  printed = json.loads(capsys.readouterr().out)
  assert set(printed) == {f'hp_synthetic_{n}' for n in (
      'copy', 'reverse', 'sort', 'first', 'max', 'first_small',
      'first_large', 'last_even', 'last_odd')}


def _sampling_model():
  tiny = runner_tiny.tiny_model()
  return models.EncoderDecoderModel(
      tiny.module, tiny.input_vocabulary, tiny.output_vocabulary,
      decode_fn=decoding.temperature_sample)


def test_infer_samples_reproducibly_from_its_seed(tiny_trained_run, tmp_path):
  outputs = []
  for name in ('a', 'b'):
    path = str(tmp_path / f'{name}.jsonl')
    runner.infer(model=_sampling_model(), model_dir=tiny_trained_run,
                 mixture_or_task_name='hp_synthetic_copy',
                 task_feature_lengths=runner_tiny.LENGTHS, batch_size=8,
                 num_examples=4, output_file=path, seed=3)
    with open(path) as f:
      outputs.append([json.loads(line) for line in f])
  assert len(outputs[0]) == 4 and outputs[0] == outputs[1]
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.jsonl', 'b.jsonl']


def test_exported_prefixes_are_served_with_the_runs_backbone(tiny_trained_run,
                                                             tmp_path):
  """README: export, then precomputed.gin + PREFIX_FILE on the same
  MODEL_DIR predicts what the HyperPrompt model predicts."""
  from hyperprompt import export  # pylint: disable=g-import-not-at-top
  from hyperprompt import network  # pylint: disable=g-import-not-at-top
  from hyperprompt.conditioning import precomputed  # pylint: disable=g-import-not-at-top
  source = runner_tiny.tiny_model()
  prefix_file = str(tmp_path / 'prefixes.npz')
  names = checkpoints.saved_task_names(tiny_trained_run)
  prefixes = export.export_prefixes(
      source.module, checkpoints.restore_params(tiny_trained_run))
  precomputed.save_prefixes(prefix_file, prefixes, names)
  served = models.EncoderDecoderModel(
      network.Transformer(source.module.config, precomputed.Precomputed(
          runner_tiny.NUM_TASKS, prefix_file)),
      source.input_vocabulary, source.output_vocabulary)
  outputs = []
  for model in (source, served):
    path = runner.infer(model=model, model_dir=tiny_trained_run,
                        mixture_or_task_name=runner_tiny.MIXTURE,
                        task_feature_lengths=runner_tiny.LENGTHS,
                        batch_size=8, num_examples=1,
                        output_file=str(tmp_path / f'{len(outputs)}.jsonl'))
    with open(path) as f:
      outputs.append(f.read())
  assert outputs[0] == outputs[1] and outputs[0].count('\n') == 9
  # The file's tasks are checked against the mixture's, in order.
  precomputed.save_prefixes(prefix_file, prefixes, names[::-1])
  with pytest.raises(ValueError, match='holds the prefixes of the tasks'):
    runner.infer(model=served, model_dir=tiny_trained_run,
                 mixture_or_task_name=runner_tiny.MIXTURE,
                 task_feature_lengths=runner_tiny.LENGTHS, batch_size=8,
                 num_examples=1)
