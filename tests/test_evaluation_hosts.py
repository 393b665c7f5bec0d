"""Training, evaluation and inference over hosts: two CPU processes (gloo)
train like one process on the whole batches, give the metrics and
predictions of one, each decoding only its share of the examples, and infer
writes every example exactly once. (One pair of processes serves all three:
each process start costs more than the tiny model's work.)"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
import runner_tiny  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_EXAMPLES = 5  # Per task: odd, so the two hosts' shares differ (3 and 2).
BATCH = 4

SCRIPT = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {tests!r})
    import jax
    jax.config.update('jax_default_matmul_precision', 'highest')
    from hyperprompt import partitioning
    if {processes} > 1:
      partitioning.initialize_distributed(
          enabled=True, coordinator_address='127.0.0.1:{port}',
          num_processes=2, process_id={pid}, cpu_collectives='gloo')
    from hyperprompt import evaluation, models, runner, train_state
    import runner_tiny, train_loop
    losses = None
    if {processes} > 1:
      # Three train steps, each process feeding its rows of the global
      # batches, against one process alone on the whole batches.
      assert jax.process_count() == 2 and len(jax.devices()) == 2
      batches = [runner_tiny.random_batch(8, seed=s) for s in range(3)]
      part = partitioning.Partitioner()
      rows = part.host_rows(8)
      losses = dict(
          together=train_loop.losses(part, [{{k: v[rows] for k, v in
                                               b.items()}} for b in batches]),
          alone=train_loop.losses(partitioning.Partitioner(
              devices=jax.local_devices()), batches))
    model = runner_tiny.tiny_model()
    decoded = []  # Real (non-padding) rows this process fed.
    validate = model.validate_batch
    def counting(batch, **kwargs):
      decoded.append(int((batch['encoder_input_tokens'] > 0).any(-1).sum()))
      return validate(batch, **kwargs)
    model.validate_batch = counting
    common = dict(model=model, model_dir={model_dir!r},
                  mixture_or_task_name=runner_tiny.MIXTURE,
                  task_feature_lengths=runner_tiny.LENGTHS,
                  batch_size={batch}, num_examples={num_examples})
    metrics = runner.evaluate(**common)
    evaluated = sum(decoded)
    runner.infer(output_file={output!r}, **common)
    print('RESULT ' + json.dumps(dict(
        losses=losses, metrics=metrics, evaluated=evaluated,
        inferred=sum(decoded) - evaluated)))
''')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run(model_dir, output, processes):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  procs = [subprocess.Popen(
      [sys.executable, '-c', SCRIPT.format(
          tests=TESTS, processes=processes, port=port, pid=pid,
          model_dir=model_dir, batch=BATCH, num_examples=NUM_EXAMPLES,
          output=output)],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for pid in range(processes)]
  results = []
  for proc in procs:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    line = [l for l in out.splitlines() if l.startswith('RESULT ')][-1]
    results.append(json.loads(line[len('RESULT '):]))
  return results


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_two_processes_train_evaluate_and_infer_like_one(tiny_trained_run,
                                                         tmp_path):
  one = _run(tiny_trained_run, str(tmp_path / 'one.jsonl'), processes=1)
  two = _run(tiny_trained_run, str(tmp_path / 'two.jsonl'), processes=2)

  for result in two:
    np.testing.assert_allclose(result['losses']['together'],
                               result['losses']['alone'], rtol=1e-5,
                               atol=1e-5)

  num_tasks = runner_tiny.NUM_TASKS
  total = num_tasks * NUM_EXAMPLES
  assert one[0]['metrics'] and len(one[0]['metrics']) == num_tasks
  for result in two:
    assert result['metrics'] == one[0]['metrics']
  # Each host decoded only its share (3 and 2 of each task's 5) for infer,
  # and for evaluation (decoding, and scoring where a task has score
  # metrics) split what one process did alone.
  assert one[0]['inferred'] == total
  assert sorted(r['inferred'] for r in two) == [2 * num_tasks, 3 * num_tasks]
  assert sum(r['evaluated'] for r in two) == one[0]['evaluated']
  assert all(0 < r['evaluated'] < one[0]['evaluated'] for r in two)
  # One file with every example exactly once, as one process writes it.
  lines = _lines(tmp_path / 'two.jsonl')
  assert lines == _lines(tmp_path / 'one.jsonl')
  assert len(lines) == total
  assert len({(l['task'], l['inputs']) for l in lines}) == total
  assert np.unique([l['task'] for l in lines]).size == num_tasks
