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

RESULT_MARKER = 'BENCH_RESULT '


def _rss_mib() -> float:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  raise RuntimeError('No VmRSS in /proc/self/status (Linux only).')


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(job: dict) -> dict:
  """Dispatches one job; see `bench.run.jobs` for the fields."""
  from bench import workload  # pylint: disable=g-import-not-at-top
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

  cfg = workload.t5_config(job['shape'], job.get('dtype', 'float32'),
                           job['dropout_rate'])
  shape = workload.BatchShape(*job['batch_shape'])
  batch = workload.make_batch(cfg, shape, job['num_tasks'])
  if kind.startswith('ours'):
    from bench import ours  # pylint: disable=g-import-not-at-top
  else:
    from bench import peers  # pylint: disable=g-import-not-at-top
  baseline = _rss_mib()
  steps = dict(warmup=job['warmup'], steps=job['steps'])
  if kind == 'ours_train':
    result = ours.train(cfg, job['conditioner'], batch,
                        num_tasks=job['num_tasks'],
                        train_params=job.get('train_params', 'all'),
                        prng_impl=job.get('prng_impl', 'threefry2x32'),
                        **steps)
  elif kind == 'ours_decode':
    result = ours.decode(cfg, job['conditioner'], batch,
                         num_tasks=job['num_tasks'], **steps)
  elif kind == 'ours_profile':
    from bench import profile  # pylint: disable=g-import-not-at-top
    fn = profile.decode_profile if job.get('decode') else \
        profile.train_step_profile
    result = fn(cfg, job['conditioner'], batch, job['num_tasks'])
  elif kind == 'hf_train':
    result = peers.train(cfg, batch, precision=job['precision'],
                         peft_prefix=job.get('peft_prefix', 0), **steps)
  elif kind == 'hf_generate':
    result = peers.generate(cfg, batch, new_tokens=shape.targets, **steps)
  else:
    raise ValueError(f'Unknown job {kind!r}.')
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
