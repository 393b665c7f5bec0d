"""Runs one measurement in this (fresh) process and prints its result.

    python -m bench.worker '{"job": "ours_train", "shape": "small", ...}'

One process per measurement, so one configuration's memory and caches never
pollute another's: the peak resident set size reported is this process's
alone, and `baseline_rss_mib` (after imports, before the model exists) says
how much of it is the framework itself.
"""
import json
import resource
import sys

from bench import timing

RESULT_MARKER = 'BENCH_RESULT '


def _rss_mib() -> float:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  raise RuntimeError('No VmRSS in /proc/self/status (Linux only).')


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _workload(job: dict):
  """(T5Config, batch) of a job's shape, precision and dropout rate."""
  from bench import workload  # pylint: disable=g-import-not-at-top
  cfg = workload.t5_config(job['shape'], job.get('dtype', 'float32'),
                           job['dropout_rate'])
  shape = workload.BatchShape(*job['batch_shape'])
  return cfg, workload.make_batch(cfg, shape, job['num_tasks'])


def timed_job(job: dict) -> timing.Timed:
  """The `timing.Timed` of a timed job (ours_train, ours_decode, hf_train,
  hf_generate)."""
  kind = job['job']
  cfg, batch = _workload(job)
  if kind.startswith('ours'):
    from bench import ours  # pylint: disable=g-import-not-at-top
  else:
    from bench import peers  # pylint: disable=g-import-not-at-top
  if kind == 'ours_train':
    return ours.train_job(cfg, job['conditioner'], batch,
                          num_tasks=job['num_tasks'],
                          train_params=job.get('train_params', 'all'),
                          prng_impl=job.get('prng_impl', 'threefry2x32'))
  if kind == 'ours_decode':
    return ours.decode_job(cfg, job['conditioner'], batch,
                           num_tasks=job['num_tasks'])
  if kind == 'hf_train':
    return peers.train_job(cfg, batch, precision=job['precision'],
                           peft_prefix=job.get('peft_prefix', 0))
  if kind == 'hf_generate':
    return peers.generate_job(cfg, batch,
                              new_tokens=job['batch_shape'][2])
  raise ValueError(f'Unknown job {kind!r}.')


def paired(job: dict) -> dict:
  """Two timed jobs, `job['a']` and `job['b']`, in this process, their steps
  interleaved for `job['rounds']` rounds after `job['warmup']` untimed steps
  each (`timing.paired`). Each side's result is its own job's, from its
  timed steps; `times_a` and `times_b` are the step seconds, round by round,
  for the ratio per round. Compilations are not counted here (each side
  counts the other's): the jobs measured alone count them."""
  a, b = timed_job(job['a']), timed_job(job['b'])
  times_a, times_b = timing.paired(a, b, job['warmup'], job['rounds'])
  drop = ('compiles_until_first_step', 'compiles_after_first_step',
          'compiles_after_first_call', 'compile_seconds')
  side = lambda t, times: {k: v for k, v in t.result(times).items()
                           if k not in drop}
  return {'a': side(a, times_a), 'b': side(b, times_b),
          'times_a': times_a, 'times_b': times_b,
          'peak_rss_mib': _peak_rss_mib()}


def run(job: dict) -> dict:
  """Dispatches one job; see `bench.run.jobs` for the fields."""
  kind = job['job']
  if kind == 'machine':
    from bench import machine  # pylint: disable=g-import-not-at-top
    return {'machine': machine.describe(), 'xla_peak': machine.matmul_peak(),
            'torch_peak': machine.torch_matmul_peak(),
            'memory_bandwidth': machine.memory_bandwidth()}
  if kind == 'xla_peak':
    # Under the job's XLA_FLAGS (set by bench.run for this process).
    from bench import machine  # pylint: disable=g-import-not-at-top
    return {'xla_peak': machine.matmul_peak()}

  if kind == 'params':
    from bench import params_table  # pylint: disable=g-import-not-at-top
    return {'rows': params_table.table()}

  if kind == 'paired':
    return paired(job)
  # The framework's own memory (jax, with ours) is in the baseline.
  if kind.startswith('ours'):
    from bench import ours  # pylint: disable=g-import-not-at-top,unused-import
  baseline = _rss_mib()
  if kind == 'ours_profile':
    from bench import profile  # pylint: disable=g-import-not-at-top
    cfg, batch = _workload(job)
    fn = profile.decode_profile if job.get('decode') else \
        profile.train_step_profile
    result = fn(cfg, job['conditioner'], batch, job['num_tasks'])
  else:
    result = timing.run(timed_job(job), job['warmup'], job['steps'])
  result['baseline_rss_mib'] = baseline
  result['peak_rss_mib'] = _peak_rss_mib()
  return result


def main(argv):
  if len(argv) != 2:
    raise SystemExit(f'usage: python -m bench.worker JOB_JSON (got {argv})')
  result = run(json.loads(argv[1]))
  print(RESULT_MARKER + json.dumps(result), flush=True)


if __name__ == '__main__':
  main(sys.argv)
