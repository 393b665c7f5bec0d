"""Resume time of the training input pipeline: restoring the saved tf.data
iterator state against replaying the consumed batches with `skip`.

    python -m bench.resume            # 0, 1,000 and 20,000 batches consumed
    python -m bench.resume --report_only   # rewrite BENCHMARKS.md's section

For each position N the runner's own pipeline (`data.train_dataset`, the
synthetic mixture, 8 examples a batch) is read N batches and saved with
`checkpoints.Checkpointer`, as a training run saves it. Then, each in a fresh
pipeline as a restarted process builds it, until its first batch:
  - restore: `Checkpointer.restore_data_iterator` (what `runner.train` does);
  - replay:  `skip(N)` through the pipeline (what it did before);
and, once, a fresh pipeline's first batch without either (building the
seqio pipeline and filling its shuffle buffers, common to both).
The restored first batch is checked against the one the original iterator
gives next. Writes bench/resume.json and its section of BENCHMARKS.md
(between markers; the text around them is written by people); the load
average and busy processes are recorded with the numbers, since other work
on the machine slows both measures.
"""
import argparse
import json
import os
import statistics
import tempfile
import time

import jax.numpy as jnp
import numpy as np
import seqio

from bench import machine
from bench import markdown_section
from hyperprompt import checkpoints
from hyperprompt import data
from hyperprompt import trainer
from hyperprompt.tasks import mixtures
from hyperprompt.tasks import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSITIONS = (0, 1000, 20000)
BATCH = 8
MIXTURE = 'hp_synthetic'
REPEATS = 3  # Restores timed per position (the median is reported).
RESULTS = os.path.join(ROOT, 'bench', 'resume.json')
BEGIN, END = '<!-- resume:begin -->', '<!-- resume:end -->'


def pipeline():
  """The runner's training pipeline, built anew (as a restarted host does)."""
  return data.train_dataset(MIXTURE, synthetic.TASK_FEATURE_LENGTHS, BATCH,
                            seqio.ShardInfo(0, 1), seed=0)


def _state(step: int) -> trainer.TrainState:
  return trainer.TrainState(step=jnp.array(step, jnp.int32),
                            params={'w': jnp.ones(1)},
                            opt_state={'m': jnp.zeros(1)})


def _bytes(directory: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(directory) for name in names)


def measure(position: int, model_dir: str) -> dict:
  """Seconds to the first batch after N consumed, restored and replayed."""
  saver = checkpoints.Checkpointer(
      model_dir, mixtures.task_vocabulary(MIXTURE), keep=len(POSITIONS),
      async_save=False, batch_size=BATCH)
  iterator = iter(pipeline())
  for _ in range(position):
    next(iterator)
  start = time.perf_counter()
  saver.save(_state(position), position, iterator)
  save_s = time.perf_counter() - start
  expected = next(iterator)

  restore_s = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    restored = iter(pipeline())
    if not saver.restore_data_iterator(position, restored):
      raise RuntimeError(f'No iterator state saved at {position}.')
    first = next(restored)
    restore_s.append(time.perf_counter() - start)
    for name, value in expected.items():
      if not np.array_equal(first[name].numpy(), value.numpy()):
        raise AssertionError(f'Restored batch differs in {name!r}.')

  start = time.perf_counter()
  next(iter(pipeline().skip(position)))
  replay_s = time.perf_counter() - start
  saver.close()
  state_dir = os.path.join(checkpoints.checkpoint_dir(model_dir),
                           checkpoints.DATA_ITERATORS, str(position))
  return {'batches_consumed': position,
          'restore_seconds': statistics.median(restore_s),
          'restore_seconds_all': restore_s,
          'replay_seconds': replay_s,
          'save_seconds': save_s,
          'state_bytes': _bytes(state_dir)}


def build_seconds() -> list:
  """Seconds to a fresh pipeline's first batch, neither restored nor
  skipped (REPEATS times)."""
  seconds = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    next(iter(pipeline()))
    seconds.append(time.perf_counter() - start)
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--report_only', action='store_true',
                      help='rewrite the section from bench/resume.json')
  if parser.parse_args().report_only:
    with open(RESULTS) as f:
      print(write_section(json.load(f)))
    return
  commit = machine.code_commit()
  info = machine.describe()
  load_before = os.getloadavg()
  build = build_seconds()
  with tempfile.TemporaryDirectory() as model_dir:
    rows = [measure(n, model_dir) for n in POSITIONS]
  results = {
      'command': 'python -m bench.resume', 'commit': commit,
      'cpu': info['cpu'], 'cores': info['cores'],
      'load_before': load_before, 'load_after': os.getloadavg(),
      'busy_processes': machine.busy_processes(),
      'mixture': MIXTURE, 'batch_size': BATCH,
      'build_seconds': statistics.median(build), 'build_seconds_all': build,
      'rows': rows}
  with open(RESULTS, 'w') as f:
    json.dump(results, f, indent=1)
  print(write_section(results))


def markdown(results: dict) -> str:
  """The facts and table of BENCHMARKS.md's resume section, between its
  markers; the text around them is written there by people."""
  loads = results['load_before'][0], results['load_after'][0]
  out = [
      BEGIN,
      f'- Commit {results["commit"]}, {results["cpu"]}, {results["cores"]} '
      f'cores; pipeline {results["mixture"]}, batch '
      f'{results["batch_size"]}; restore: median of '
      f'{len(results["rows"][0]["restore_seconds_all"])}, replay: one run',
      '',
      '| batches consumed | restore (s) | replay with skip (s) | save (s) '
      '| iterator state (bytes) |',
      '|---:|---:|---:|---:|---:|',
  ]
  for row in results['rows']:
    out.append(f'| {row["batches_consumed"]:,} | '
               f'{row["restore_seconds"]:.2f} | {row["replay_seconds"]:.2f} '
               f'| {row["save_seconds"]:.2f} | {row["state_bytes"]:,} |')
  loaded = max(loads) > results['cores'] + 0.5
  out += ['',
          f'- A fresh pipeline to its first batch: '
          f'{results["build_seconds"]:.2f} s (median of '
          f'{len(results["build_seconds_all"])})',
          f'- Load average (1 min): {loads[0]:.2f} before, {loads[1]:.2f} '
          f'after, on {results["cores"]} cores; loaded (above cores + 0.5): '
          + ('**yes**' if loaded else 'no'),
          '- Busy processes: ' + ('; '.join(
              f'`{p}`' for p in results['busy_processes']) or 'none'),
          '', END]
  return '\n'.join(out)


def write_section(results: dict) -> str:
  """Puts the section into BENCHMARKS.md between its markers (or at the
  end); returns it."""
  section_text = markdown(results)
  markdown_section.replace(section_text, BEGIN, END)
  return section_text


if __name__ == '__main__':
  main()
