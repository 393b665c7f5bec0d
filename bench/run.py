"""Runs every benchmark, one fresh process per measurement, and writes the
results JSON of this CPU type, then the generated sections of BENCHMARKS.md
and README.md and the charts from the results of every CPU type.

    python -m bench.run              # full: T5.1.1-small, 30-40 minutes
    python -m bench.run --quick      # tiny shapes, core set, ~2 minutes;
                                     # a check, not in the report
    python -m bench.run --shapes small,base
    python -m bench.run --report_only   # rewrite the report from the JSONs

The results go to `bench/results/<CPU type>.json`, named from this
machine's CPU model (`report.cpu_slug`): a run replaces only the results of
its own CPU type, and the report shows every CPU type's. A `--quick` run
goes to `bench/results/quick/` and leaves the report alone, so a check never
replaces a full run.

Measurements are worthless on a loaded machine: the load average is recorded
before and after every job and printed in the report.

Every job (ours and the peers alike) runs with tcmalloc preloaded when the
machine has it (`apt install libtcmalloc-minimal4`; `--allocator system` to
opt out). glibc's malloc returns large blocks to the OS, so every step
page-faults its large temporaries back in. The full run also measures our
step with glibc's malloc, so the report shows the difference.
"""
import argparse
import ctypes.util
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Optional

from bench import machine
from bench import report
from bench import timing
from bench import workload
from bench.worker import RESULT_MARKER
from hyperprompt.conditioning import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BATCH_SHAPE = (8, 128, 32)  # batch, input length, target length
NUM_TASKS = 8
DROPOUT_RATE = 0.1
JOB_TIMEOUT_S = 420
# A disturbed timed job (timing.disturbed) runs again, at most MAX_ATTEMPTS
# times in all; the report uses its last attempt and names the repeated jobs.
MAX_ATTEMPTS = 3
# Rounds of a paired job: 15 give a 95% interval for the median ratio from
# the 4th to the 12th smallest (timing.median_interval), about a minute of
# interleaved training steps.
PAIRED_ROUNDS = 15


def jobs(shape: str, full: bool, warmup: int, steps: int):
  """The measurements of one model shape.

  `full` measures every conditioner and peer; otherwise the core set
  (none, HyperPrompt-Global, prefix tuning against PEFT, both
  precisions against transformers, decoding).
  """
  common = dict(shape=shape, batch_shape=BATCH_SHAPE, num_tasks=NUM_TASKS,
                dropout_rate=DROPOUT_RATE, warmup=warmup, steps=steps)
  conditioners = (registry.names(learned=True) if full else
                  ('none', 'hyperprompt_global'))
  out = []
  for name in conditioners:
    out.append(dict(common, job='ours_train', conditioner=name,
                    dtype='float32'))
  for name in ('none', 'hyperprompt_global'):
    out.append(dict(common, job='ours_train', conditioner=name,
                    dtype='bfloat16'))
  # PEFT trains the prefixes only; so do these rows: ours with PEFT's
  # placement (decoder self-attention) and with our default (everywhere),
  # and HyperPrompt-Global.
  for name in ('prefix_tuning_decoder', 'prefix_tuning',
               'hyperprompt_global'):
    out.append(dict(common, job='ours_train', conditioner=name,
                    dtype='float32', train_params='conditioning'))
  out.append(dict(common, job='hf_train', precision='float32'))
  out.append(dict(common, job='hf_train', precision='bfloat16'))
  out.append(dict(common, job='hf_train', precision='float32',
                  peft_prefix=16))
  decode = dict(common, warmup=1, steps=max(steps // 2, 2))
  for name in ('none', 'hyperprompt_global'):
    out.append(dict(decode, job='ours_decode', conditioner=name))
  out.append(dict(decode, job='hf_generate'))
  if full:
    out += pairs(common, decode)
    # Decoding at batch 1 (one request) and 64 (a GLUE eval set in large
    # batches) beside batch 8, ours and transformers.
    b, inputs, targets = BATCH_SHAPE
    for batch in (1, 64):
      other = dict(decode, batch_shape=(batch, inputs, targets))
      out.append(dict(other, job='ours_decode', conditioner='none'))
      out.append(dict(other, job='hf_generate'))
    # What the allocator, the dropout PRNG and XLA's options change.
    plain = dict(common, job='ours_train', conditioner='none',
                 dtype='float32')
    out.append(dict(plain, prng_impl='unsafe_rbg'))
    out.append(dict(plain, allocator='system'))
    for name, flags in workload.XLA_OPTIONS.items():
      out.append(dict(job='xla_peak', xla_flags=flags, option=name))
    out.append(dict(plain, dtype='bfloat16', xla_flags=workload.YNN_OFF))
    # Batch-8 decode steps are M=8 matmuls: YNNPACK's or Eigen's kernels
    # (under load, paired: Eigen's decode 0.90x YNNPACK's time).
    out.append(dict(decode, job='ours_decode', conditioner='none',
                    xla_flags=workload.YNN_OFF))
    # Where the time goes (bench/profile.py), for the report.
    out.append(dict(common, job='ours_profile', conditioner='none'))
    # Decoding at batch 8 and at 64, where computing bounds a step.
    for batch in (8, 64):
      out.append(dict(common, job='ours_profile', conditioner='none',
                      decode=True, batch_shape=(batch, inputs, targets)))
  return out


def pairs(common: dict, decode: dict):
  """The paired jobs (worker.paired), one per ratio target of issue 17:
  `b`'s step time over `a`'s is the target's ratio (for decoding, `a`'s
  tokens/s over `b`'s)."""
  ours = dict(common, job='ours_train', conditioner='none', dtype='float32')
  hf = dict(common, job='hf_train', precision='float32')
  glob = dict(ours, conditioner='hyperprompt_global')
  todo = {
      'speedup_f32': (ours, hf),
      'speedup_bf16': (dict(ours, dtype='bfloat16'),
                       dict(hf, precision='bfloat16')),
      'global_overhead': (ours, glob),
      'global_conditioning': (glob, dict(glob, train_params='conditioning')),
      'peft_speedup': (dict(ours, conditioner='prefix_tuning_decoder',
                            train_params='conditioning'),
                       dict(hf, peft_prefix=16)),
      'decode_speedup': (dict(decode, job='ours_decode', conditioner='none'),
                         dict(decode, job='hf_generate')),
  }
  return [dict(job='paired', target=target, a=a, b=b, warmup=1,
               rounds=PAIRED_ROUNDS) for target, (a, b) in todo.items()]


def find_tcmalloc() -> Optional[str]:
  """The tcmalloc shared library's name if the loader can find it."""
  return (ctypes.util.find_library('tcmalloc_minimal') or
          ctypes.util.find_library('tcmalloc'))


def run_job(job: dict, allocator: Optional[str] = None) -> dict:
  """Runs `job` in a fresh `python -m bench.worker` process.

  Args:
    job: the measurement; its optional `allocator` ('system') and
      `xla_flags` change the process's environment.
    allocator: the library to preload (LD_PRELOAD), or None for glibc's.
  """
  env = dict(os.environ)
  if allocator and job.get('allocator') != 'system':
    env['LD_PRELOAD'] = allocator
  if job.get('xla_flags'):
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' +
                        job['xla_flags']).strip()
  load_before = os.getloadavg()
  start = time.perf_counter()
  proc = subprocess.run(
      [sys.executable, '-m', 'bench.worker', json.dumps(job)], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
      check=False)
  record = {'job': job, 'wall_seconds': time.perf_counter() - start,
            'load_before': load_before, 'load_after': os.getloadavg()}
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARKER)]
  if proc.returncode or not lines:
    record['error'] = (proc.stderr or proc.stdout)[-3000:]
    print(f'  FAILED ({proc.returncode}): {record["error"][-600:]}',
          file=sys.stderr)
  else:
    record['result'] = json.loads(lines[-1][len(RESULT_MARKER):])
  return record


def run_steady(job: dict, allocator: Optional[str] = None) -> dict:
  """`run_job`, again while the run was disturbed (at most MAX_ATTEMPTS in
  all); the last attempt's record, with the earlier ones under
  'disturbed_attempts'."""
  earlier = []
  record = run_job(job, allocator)
  while (timing.disturbed(record.get('result', {})) and
         len(earlier) + 1 < MAX_ATTEMPTS):
    res = record['result']
    print(f'  disturbed (steps {res["step_seconds_min"]:.2f} to '
          f'{res["step_seconds_max"]:.2f} s); running it again', flush=True)
    earlier.append(record)
    record = run_job(job, allocator)
  if earlier:
    record['disturbed_attempts'] = earlier
  return record


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='tiny shapes and few steps (~2 minutes)')
  parser.add_argument('--shapes', default=None,
                      help='comma-separated model shapes (tiny, small, base); '
                      'the first is measured in full, the others the core '
                      'set. Default: small (tiny with --quick).')
  parser.add_argument('--steps', type=int, default=None,
                      help='timed steps per training job (default 5, 3 '
                      'with --quick)')
  parser.add_argument('--out', default=None,
                      help='results JSON (default: bench/results/<this CPU '
                      'type>.json, or bench/results/quick/ with --quick; the '
                      'report reads bench/results/*.json only)')
  parser.add_argument('--report_only', action='store_true',
                      help='only rewrite the report (BENCHMARKS.md, '
                      'README.md, charts) from bench/results/')
  parser.add_argument('--allocator', choices=('auto', 'system'),
                      default='auto',
                      help='auto: preload tcmalloc when installed (the '
                      'default); system: glibc malloc for every job')
  args = parser.parse_args(argv)

  if not args.report_only:
    directory = os.path.join(ROOT, report.RESULTS_DIR,
                             'quick' if args.quick else '')
    out = args.out or report.results_file(directory, machine.cpu_model())
    shapes = (args.shapes or ('tiny' if args.quick else 'small')).split(',')
    steps = args.steps or (3 if args.quick else 5)
    warmup = 1  # The step is compiled before timing; one step warms caches.
    todo = [dict(job='machine')]
    for i, shape in enumerate(shapes):
      todo += jobs(shape, full=i == 0 and not args.quick, warmup=warmup,
                   steps=steps)
    if not args.quick:
      todo.append(dict(job='params'))
    allocator = find_tcmalloc() if args.allocator == 'auto' else None
    results = {
        'command': 'python -m bench.run ' + ' '.join(
            sys.argv[1:] if argv is None else argv),
        'started': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'commit': machine.code_commit(),
        'quick': args.quick, 'allocator': allocator,
        'disturbed_spread': timing.DISTURBED_SPREAD, 'runs': [],
    }
    start = time.perf_counter()
    for i, job in enumerate(todo):
      print(f'[{i + 1}/{len(todo)}] {report.job_label(job)} (load '
            f'{os.getloadavg()[0]:.2f})', flush=True)
      results['runs'].append(run_steady(job, allocator))
    results['total_seconds'] = time.perf_counter() - start
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
      json.dump(results, f, indent=1)
    print(f'wrote {out} in {results["total_seconds"]:.0f} s')
    if args.quick:
      return
  for path in report.write(ROOT):
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
