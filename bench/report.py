"""The generated sections of BENCHMARKS.md and README.md and the charts,
from the results JSON only.

Each CPU type keeps its latest `make bench` in `bench/results/<type>.json`
(named by `cpu_slug` from the CPU model the run recorded) and its chart in
`bench/results/<type>.png`. Every number in the report is computed here from
those files (and `bench/memory.json`, from `python -m bench.memory`, when
present); none is typed by hand. BENCHMARKS.md gets one section per CPU type
and a targets table with one column per CPU type, a target met only where it
is met on every CPU type; README.md gets the range across CPU types. The
code writes between `<!-- report:NAME:begin/end -->` markers; what the
numbers show is prose written by people around them.
"""
import json
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np

from bench import markdown_section
from bench import ours
from bench import timing
from bench import workload
from hyperprompt import params as params_lib

RESULTS_DIR = os.path.join('bench', 'results')
# The batch size of the decoding targets (issue 17).
DECODE_BATCH = 8

# Issue 17's targets, each to hold on every CPU type: (key, description,
# threshold, higher is better).
TARGETS = (
    ('speedup_f32', 'training tokens/s vs transformers f32 full fine-tuning',
     1.3, True),
    ('mfu_f32', 'training FLOP utilisation of the f32 matmul peak', 0.60,
     True),
    ('speedup_bf16', 'bf16 training tokens/s vs transformers bf16 autocast',
     1.0, True),
    ('global_overhead', 'HyperPrompt-Global step time over none (l=16)',
     1.03, False),
    ('decode_speedup', 'greedy decoding tokens/s vs transformers generate, '
     f'batch {DECODE_BATCH}', 2.0, True),
    ('decode_bound', 'greedy decoding speed vs its bound (roofline), batch '
     f'{DECODE_BATCH}', 0.8, True),
    ('peft_speedup', "conditioning-only prefix tuning (PEFT's placement) "
     'tokens/s vs PEFT prefix tuning', 1.0, True),
    ('global_conditioning', 'conditioning-only HyperPrompt-Global step time '
     'vs its full training', 0.7, False),
    ('recompiles', 'compilations after the first step (all our jobs)', 0,
     False),
)


def cpu_slug(cpu: str) -> str:
  """The file name (without extension) of a CPU type's results, from the CPU
  model a run recorded: 'Intel(R) Xeon(R) Processor' -> 'intel-xeon',
  'AMD EPYC 7B13 64-Core Processor' -> 'amd-epyc-7b13-64-core'."""
  name = re.sub(r'\((r|tm)\)', ' ', cpu.split('@')[0].lower())
  words = [w for w in re.split(r'[^a-z0-9]+', name)
           if w and w not in ('cpu', 'processor')]
  if not words:
    raise ValueError(f'No CPU type in the CPU model {cpu!r}.')
  return '-'.join(words)


def cpu_label(results: dict) -> str:
  """How tables name the CPU type of `results`: its model, without (R)."""
  cpu = _machine(results)['machine']['cpu']
  return ' '.join(re.sub(r'\((R|TM)\)', ' ', cpu).split())


def results_file(directory: str, cpu: str) -> str:
  """The file in `directory` of the results of a run on CPU model `cpu`."""
  return os.path.join(directory, cpu_slug(cpu) + '.json')


def load_all(root: str) -> Dict[str, dict]:
  """The results of every CPU type in `root`/bench/results, by file name
  (without .json), in name order."""
  directory = os.path.join(root, RESULTS_DIR)
  out = {}
  for name in sorted(os.listdir(directory)):
    if not name.endswith('.json'):
      continue
    path = os.path.join(directory, name)
    with open(path) as f:
      results = json.load(f)
    cpu = _machine(results)['machine']['cpu']
    if results_file(directory, cpu) != path:
      raise ValueError(f'{path} holds a run on {cpu!r}, whose file is '
                       f'{cpu_slug(cpu)}.json.')
    out[name[:-len('.json')]] = results
  if not out:
    raise ValueError(f'No results in {directory}: run python -m bench.run.')
  return out


def _threshold(key: str) -> float:
  return next(t[2] for t in TARGETS if t[0] == key)


def _tokens(job) -> int:
  batch, inputs, targets = job['batch_shape']
  return batch * (inputs + targets)


def _ok(runs):
  return [r for r in runs if 'result' in r]


def find_run(runs, **match) -> Optional[dict]:
  """The first successful run whose job matches; a job that varies the
  environment (VARIANTS) matches only when the query names that variant."""
  for r in _ok(runs):
    job = r['job']
    if any(job.get(k) and k not in match for k in VARIANTS):
      continue
    if all(job.get(k, _DEFAULTS.get(k)) == v for k, v in match.items()):
      return r
  return None


_DEFAULTS = {'train_params': 'all', 'peft_prefix': 0, 'dtype': 'float32'}
# Job fields that measure a variant of the default setting, and how the
# report names them.
VARIANTS = {'prng_impl': lambda v: f'{v} dropout keys',
            'allocator': lambda v: f'{v} malloc',
            'xla_flags': lambda v: f'XLA_FLAGS={v}'}


def job_label(job) -> str:
  """A job's identifying fields, as `bench.run` prints them."""
  if job['job'] == 'paired':
    return (f'paired target={job["target"]}: {job_label(job["a"])} | '
            f'{job_label(job["b"])}')
  return ' '.join(f'{k}={v}' for k, v in job.items()
                  if k in ('job', 'shape', 'conditioner', 'dtype', 'precision',
                           'peft_prefix', 'train_params', 'prng_impl',
                           'allocator', 'xla_flags'))


def variant_label(job) -> str:
  return ''.join(f', {name(job[k])}' for k, name in VARIANTS.items()
                 if job.get(k))


def _fmt(x, digits=2):
  return '-' if x is None else f'{x:,.{digits}f}'


def _shapes(runs) -> List[str]:
  seen = []
  for r in runs:
    s = r['job'].get('shape')
    if s and s not in seen:
      seen.append(s)
  return seen


def _paired_runs(results: dict, shape: str) -> Dict[str, dict]:
  """{target: run} of the paired jobs of one model shape, in run order."""
  return {r['job']['target']: r for r in _ok(results['runs'])
          if r['job']['job'] == 'paired' and
          r['job']['a'].get('shape') == shape}


def paired_ratios(results: dict, shape: str
                  ) -> Dict[str, Tuple[float, float, float, int]]:
  """{target: (median, low, high, n)} of the paired jobs (bench.run's
  PAIRS) of one model shape: the median of the per-round ratios and its
  95% confidence interval (`timing.median_interval`), over n rounds. A
  target's ratio is b's step time over a's; for decoding, tokens/s (a's
  over b's), which also scales by the generated lengths."""
  out = {}
  for target, r in _paired_runs(results, shape).items():
    res = r['result']
    scale = 1.0
    if 'generated_length' in res['a']:
      scale = res['a']['generated_length'] / res['b']['generated_length']
    per_round = [scale * b / a for a, b in zip(res['times_a'],
                                               res['times_b'])]
    out[target] = (*timing.median_interval(per_round), len(per_round))
  return out


def summary(results: dict, shape: str) -> Dict[str, Optional[float]]:
  """The target quantities for one model shape: each ratio from its paired
  job where the run has one (`paired_ratios`), else from the two jobs
  measured apart (results of runs before the paired jobs existed)."""
  runs = results['runs']
  peak = _machine(results)['xla_peak']['float32']
  get = lambda **m: find_run(runs, shape=shape, **m)
  tps = lambda r: _tokens(r['job']) / r['result']['step_seconds'] if r \
      else None
  ratio = lambda a, b: a / b if a and b else None
  plain = get(job='ours_train', conditioner='none', dtype='float32',
              train_params='all')
  plain16 = get(job='ours_train', conditioner='none', dtype='bfloat16',
                train_params='all')
  glob = get(job='ours_train', conditioner='hyperprompt_global',
             dtype='float32', train_params='all')
  hf32 = get(job='hf_train', precision='float32', peft_prefix=0)
  hf16 = get(job='hf_train', precision='bfloat16', peft_prefix=0)
  peft_ours = get(job='ours_train', conditioner='prefix_tuning_decoder',
                  train_params='conditioning')
  peft = next((r for r in _ok(runs) if r['job'].get('shape') == shape and
               r['job'].get('peft_prefix')), None)
  glob_cond = get(job='ours_train', conditioner='hyperprompt_global',
                  train_params='conditioning')
  at_batch = lambda **m: next(
      (r for r in _ok(runs) if r['job'].get('shape') == shape and
       r['job']['batch_shape'][0] == DECODE_BATCH and
       find_run([r], **m)), None)
  dec = at_batch(job='ours_decode', conditioner='none')
  gen = at_batch(job='hf_generate')
  dtps = lambda r: (r['job']['batch_shape'][0] *
                    r['result']['generated_length'] /
                    r['result']['step_seconds']) if r else None
  bound = next((row for row in decode_roofline(results, shape)
                if row['batch'] == DECODE_BATCH), None)
  our_runs = [r for r in _ok(runs) if r['job']['job'].startswith('ours')]
  recompiles = [r['result'].get('compiles_after_first_step',
                                r['result'].get('compiles_after_first_call'))
                for r in our_runs if r['job']['job'] != 'ours_profile']
  pairs = paired_ratios(results, shape)
  # MFU from the median of the f32 pair's 15 steps of ours where it exists.
  f32_pair = _paired_runs(results, shape).get('speedup_f32')
  plain_result = f32_pair['result']['a'] if f32_pair else (
      plain and plain['result'])
  values = {
      'speedup_f32': ratio(tps(plain), tps(hf32)),
      'mfu_f32': (plain_result['analytic_flops'] /
                  plain_result['step_seconds'] / peak)
                 if plain_result else None,
      'speedup_bf16': ratio(max(tps(plain16) or 0, tps(plain) or 0),
                            tps(hf16)),
      'global_overhead': ratio(glob and glob['result']['step_seconds'],
                               plain and plain['result']['step_seconds']),
      'decode_speedup': ratio(dtps(dec), dtps(gen)),
      'decode_bound': bound and bound['fraction_of_bound'],
      'peft_speedup': ratio(tps(peft_ours), tps(peft)),
      'global_conditioning': ratio(
          glob_cond and glob_cond['result']['step_seconds'],
          glob and glob['result']['step_seconds']),
      'recompiles': max(recompiles) if recompiles else None,
  }
  values.update({key: median for key, (median, *_) in pairs.items()})
  return values


def _machine(results) -> dict:
  r = find_run(results['runs'], job='machine')
  if r is None:
    raise ValueError('The results have no machine job; rerun bench.run.')
  return r['result']


def _training_table(results, shape) -> List[str]:
  runs = [r for r in _ok(results['runs']) if r['job'].get('shape') == shape
          and r['job']['job'] in ('ours_train', 'hf_train')]
  peak = _machine(results)['xla_peak']['float32']
  plain = find_run(results['runs'], shape=shape, job='ours_train',
                   conditioner='none', dtype='float32')
  base_flops = plain['result']['analytic_flops'] if plain else None
  base_time = plain['result']['step_seconds'] if plain else None
  lines = [
      '| system | precision | trains | step (ms) | tokens/s | MFU (f32 peak)'
      ' | step time vs none | FLOPs vs none | peak RSS (MiB) | '
      'XLA temp (MiB) | compile (s) | load |',
      '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for r in runs:
    job, res = r['job'], r['result']
    # Each system's own FLOP model: ours as computed when it ran, the
    # peers' from their job (bench/peers.py), never one for another.
    flops = (res.get('analytic_flops') if job['job'] == 'ours_train'
             else _peer_flops(job))
    if job['job'] == 'ours_train':
      name = ('ours: ' + ours.display_name(job['conditioner']) +
              variant_label(job))
      precision = job['dtype']
      trains = ('conditioner only' if job.get('train_params') ==
                'conditioning' else 'all')
      flop_ratio = (res['analytic_flops'] / base_flops
                    if base_flops else None)
      temp = res['xla_memory_bytes']['temporaries'] / 2**20
    else:
      name = ('PEFT prefix tuning (l=%d)' % job['peft_prefix']
              if job.get('peft_prefix') else 'transformers T5')
      precision = job['precision'] + (' autocast' if job['precision'] ==
                                      'bfloat16' else '')
      trains = 'prefix only' if job.get('peft_prefix') else 'all'
      flop_ratio, temp = None, None
    step = res['step_seconds']
    lines.append(
        f'| {name} | {precision} | {trains} | {_fmt(step * 1e3, 0)} | '
        f'{_fmt(_tokens(job) / step, 0)} | '
        f'{_fmt(100 * flops / step / peak, 1) + "%" if flops else "-"} | '
        f'{_fmt(step / base_time if base_time else None, 3)} | '
        f'{_fmt(flop_ratio, 3)} | {_fmt(res["peak_rss_mib"], 0)} | '
        f'{_fmt(temp, 0)} | {_fmt(res.get("compile_seconds"), 1)} | '
        f'{_fmt(r["load_before"][0])} |')
  return lines


def _peer_flops(job) -> int:
  """A peer's analytic FLOPs per step, from its job."""
  from bench import peers  # pylint: disable=g-import-not-at-top
  cfg = workload.t5_config(job['shape'], dropout_rate=job['dropout_rate'])
  return peers.step_flops(cfg, *job['batch_shape'],
                          peft_prefix=job.get('peft_prefix', 0))


def _peer_params(results, shape) -> List[str]:
  """The transformers baseline's parameter count against ours."""
  hf = find_run(results['runs'], shape=shape, job='hf_train',
                precision='float32', peft_prefix=0)
  plain = find_run(results['runs'], shape=shape, job='ours_train',
                   conditioner='none', dtype='float32')
  if not (hf and plain):
    return []
  theirs = hf['result'].get('total_params', hf['result']['trainable_params'])
  mine = plain['result']['params']
  return ['| parameters | transformers T5 | ours (none) | ours - theirs |',
          '|---|---:|---:|---:|',
          f'| {shape} | {theirs:,} | {mine:,} | {mine - theirs:+,} |']


def _memory_table(memory) -> List[str]:
  """bench/memory.json: deterministic bytes and FLOPs per step."""
  mib = lambda x: _fmt(x / 2**20, 1)
  lines = [
      f'Generated by `{memory["command"]}` at commit {memory["commit"]} '
      f'({memory["shape"]}, batch {memory["batch_shape"][0]}, inputs '
      f'{memory["batch_shape"][1]}, targets {memory["batch_shape"][2]}, '
      f'{memory["num_tasks"]} tasks).', '',
      '| conditioner | trains | parameters (MiB) | optimizer state (MiB) | '
      'XLA temporaries (MiB) | peak (MiB) | XLA GFLOP | analytic GFLOP |',
      '|---|---|---:|---:|---:|---:|---:|---:|']
  for row in memory['rows']:
    m = row['xla_memory_bytes']
    trains = ('conditioner only' if row['train_params'] == 'conditioning'
              else 'all')
    peak = (m['arguments'] + m['outputs'] - m['aliased'] +
            m['temporaries'])
    lines.append(
        f'| {ours.display_name(row["conditioner"])} | '
        f'{trains} | {mib(row["state_bytes"]["params"])} | '
        f'{mib(row["state_bytes"]["opt_state"])} | {mib(m["temporaries"])} | '
        f'{mib(peak)} | {_fmt(row["xla_flops"] / 1e9, 1)} | '
        f'{_fmt(row["analytic_flops"] / 1e9, 1)} |')
  return lines


def _flops_table(results, shape) -> List[str]:
  lines = ['| conditioner | analytic GFLOP/step | vs none | '
           'XLA cost analysis GFLOP | analytic / XLA |',
           '|---|---:|---:|---:|---:|']
  plain = find_run(results['runs'], shape=shape, job='ours_train',
                   conditioner='none', dtype='float32')
  for r in _ok(results['runs']):
    job, res = r['job'], r['result']
    if (job['job'] != 'ours_train' or job.get('shape') != shape or
        job['dtype'] != 'float32' or job.get('train_params') ==
        'conditioning' or variant_label(job)):
      continue
    base = plain['result']['analytic_flops'] if plain else None
    lines.append(
        f'| {ours.display_name(job["conditioner"])} | '
        f'{_fmt(res["analytic_flops"] / 1e9, 1)} | '
        f'{_fmt(res["analytic_flops"] / base if base else None, 3)} | '
        f'{_fmt(res["xla_flops"] / 1e9, 1)} | '
        f'{_fmt(res["analytic_flops"] / res["xla_flops"], 3)} |')
  return lines


def _decode_table(results, shape) -> List[str]:
  lines = ['| system | batch | step (ms per decode of the batch) | '
           'generated tokens | tokens/s | peak RSS (MiB) | recompiles | load |',
           '|---|---:|---:|---:|---:|---:|---:|---:|']
  for r in _ok(results['runs']):
    job, res = r['job'], r['result']
    if job.get('shape') != shape or job['job'] not in ('ours_decode',
                                                       'hf_generate'):
      continue
    name = ('ours: ' + ours.display_name(job['conditioner']) +
            ' greedy, cache' + variant_label(job)
            if job['job'] == 'ours_decode' else
            'transformers generate (greedy, use_cache)')
    tokens = job['batch_shape'][0] * res['generated_length']
    lines.append(
        f'| {name} | {job["batch_shape"][0]} | '
        f'{_fmt(res["step_seconds"] * 1e3, 0)} | {tokens} | '
        f'{_fmt(tokens / res["step_seconds"], 0)} | '
        f'{_fmt(res["peak_rss_mib"], 0)} | '
        f'{res.get("compiles_after_first_call", "-")} | '
        f'{_fmt(r["load_before"][0])} |')
  return lines


def decode_roofline(results, shape) -> List[Dict[str, float]]:
  """The fastest a greedy decode can be here: per batch size measured, every
  generated position reads the decoder's parameters and the cache at the
  measured memory bandwidth, or computes its matmuls at the f32 matmul peak,
  whichever takes longer (results from before `flops_per_position` was
  recorded have the reading roof only, and no `compute_s`), and the encoder
  runs at the f32 matmul peak. Seconds, bytes and ratios."""
  machine = _machine(results)
  bandwidth = machine.get('memory_bandwidth')
  rows = []
  for run in _ok(results['runs']):
    job, res = run['job'], run['result']
    if (job.get('shape') != shape or job['job'] != 'ours_decode' or
        job['conditioner'] != 'none' or variant_label(job) or not bandwidth or
        'bytes_per_position' not in res):
      continue
    gen = next((r for r in _ok(results['runs'])
                if r['job']['job'] == 'hf_generate' and
                r['job'].get('shape') == shape and
                r['job'].get('batch_shape') == job['batch_shape']), None)
    peak = machine['xla_peak']['float32']
    read_s = res['generated_length'] * res['bytes_per_position'] / bandwidth
    compute_s = (res['generated_length'] * res['flops_per_position'] / peak
                 if 'flops_per_position' in res else None)
    encode_s = res['encoder_flops'] / peak
    bound = max(read_s, compute_s or 0.0) + encode_s
    rows.append({
        'batch': job['batch_shape'][0], 'positions': res['generated_length'],
        'bytes_per_position': res['bytes_per_position'],
        'bandwidth': bandwidth, 'read_s': read_s, 'compute_s': compute_s,
        'encode_s': encode_s,
        'bound_s': bound, 'measured_s': res['step_seconds'],
        'fraction_of_bound': bound / res['step_seconds'],
        # The decoding target's multiple of transformers' speed.
        'target_s': (gen['result']['step_seconds'] / _threshold(
            'decode_speedup') if gen else None)})
  return rows


def _roofline_table(results, shape) -> List[str]:
  rows = decode_roofline(results, shape)
  if not rows:
    return []
  ms = lambda s: _fmt(None if s is None else s * 1e3, 0)
  return ['| batch | MiB read per position | GB/s | positions | reading '
          '(ms) | computing (ms) | encoder (ms) | bound (ms) | ours (ms) | '
          'speed vs bound | '
          f'{_threshold("decode_speedup"):g}x transformers (ms) |',
          '|' + '---:|' * 11] + [
              f'| {r["batch"]} | {r["bytes_per_position"] / 2**20:,.0f} | '
              f'{r["bandwidth"] / 1e9:,.0f} | {r["positions"]} | '
              f'{ms(r["read_s"])} | {ms(r["compute_s"])} | '
              f'{ms(r["encode_s"])} | '
              f'{ms(r["bound_s"])} | {ms(r["measured_s"])} | '
              f'{r["fraction_of_bound"]:.0%} | {ms(r["target_s"])} |'
              for r in rows]


def _profile_table(results, shape) -> List[str]:
  lines = []
  cores = _machine(results)['machine']['cores']
  for r in _ok(results['runs']):
    job, res = r['job'], r['result']
    if job['job'] != 'ours_profile' or job.get('shape') != shape:
      continue
    what = (f'greedy decode of a batch of {job["batch_shape"][0]}'
            if job.get('decode') else 'training step')
    total = res['total_ms']
    lines += [f'{ours.display_name(job["conditioner"])}, {what}: '
              f'{total:,.0f} ms of XLA operations, summed over threads '
              f'(load average {r["load_before"][0]:.2f} before the job' + (
                  '; **loaded**: other work ran, the milliseconds are '
                  'inflated' if r['load_before'][0] >
                  cores + 0.5 else '') + ').', '',
              '| kind | share |', '|---|---:|'] + [
                  f'| {kind} | {100 * ms / total:.0f}% |'
                  for kind, ms in res['by_kind_ms'].items()] + [
                      '', '| operation (kind: JAX op, summed over layers) | '
                      'ms | share |', '|---|---:|---:|']
    lines += [f'| {op or "(no source)"} | {ms:,.1f} | '
              f'{100 * ms / total:.1f}% |'
              for op, ms in list(res['top_ops_ms'].items())[:12]]
    lines.append('')
  return lines


def _params_table(results) -> List[str]:
  r = find_run(results['runs'], job='params')
  if r is None:
    return ['(not measured in this run: `--quick` skips it)']
  rows = r['result']['rows']
  lines = params_lib.overhead_markdown(rows)
  checked = [x for x in rows if x['formula'] is not None]
  differ = [f'{x["conditioner"]} {x["size"]} T={x["tasks"]}' for x in checked
            if x['formula'] != x['conditioning']]
  lines.append('')
  lines.append(f"HyperPrompt counts equal METHOD.md's closed forms in "
               f'{len(checked) - len(differ)} of {len(checked)} rows'
               + (f' (not in: {", ".join(differ)})' if differ else '') + '.')
  return lines


def _met(key: str, value: Optional[float]) -> Optional[bool]:
  """Whether `value` meets target `key`; None when it was not measured."""
  _, _, threshold, higher = next(t for t in TARGETS if t[0] == key)
  if value is None:
    return None
  return value >= threshold if higher else value <= threshold


def _show(key: str, value: Optional[float], interval=None) -> str:
  """A target's value; with `interval` ((median, low, high, n) of a paired
  job) its confidence interval and n too."""
  if value is None:
    return '-'
  if key in ('mfu_f32', 'decode_bound'):
    return _fmt(100 * value, 1) + '%'
  if key == 'recompiles':
    return str(value)
  if interval:
    _, low, high, n = interval
    return f'{value:.2f}x ({low:.2f}-{high:.2f}, n={n})'
  return f'{value:.2f}x'


def targets_table(all_results: Dict[str, dict], shape: str) -> List[str]:
  """One column per CPU type; a target is met only if it is met on every
  CPU type (and measured on each)."""
  values = {slug: summary(results, shape)
            for slug, results in all_results.items()}
  pairs = {slug: paired_ratios(results, shape)
           for slug, results in all_results.items()}
  lines = ['| target | wanted | ' + ' | '.join(
      f'{cpu_label(results)} ({results.get("commit", "commit not recorded")})'
      for results in all_results.values()) + ' | met on every CPU type |',
           '|---|---:|' + '---:|' * len(all_results) + '---|']
  for key, text, threshold, higher in TARGETS:
    met = [_met(key, values[slug][key]) for slug in all_results]
    if None in met:
      verdict = 'not measured on ' + ', '.join(
          cpu_label(all_results[slug])
          for slug, m in zip(all_results, met) if m is None)
    else:
      verdict = 'yes' if all(met) else '**no**'
    if key in ('mfu_f32', 'decode_bound'):
      wanted = f'>= {threshold:.0%}'
    elif key == 'recompiles':
      wanted = str(threshold)
    else:
      wanted = f'{">=" if higher else "<="} {threshold}x'
    lines.append(f'| {text} | {wanted} | ' + ' | '.join(
        _show(key, values[slug][key], pairs[slug].get(key))
        for slug in all_results) + f' | {verdict} |')
  if any(pairs.values()):
    lines += ['', 'A ratio shown with an interval was measured in one '
              'process, the two sides\' steps interleaved (`bench.run`\'s '
              'PAIRS): the median of n per-round ratios and its 95% '
              'confidence interval, which covers that one process only (the '
              'ratio also moves from process to process). The verdict reads '
              'the median; an interval that holds the target means the run '
              'cannot tell. Ratios without one compare two jobs run minutes '
              'apart.']
  return lines


def _ratios(results, shape) -> List[str]:
  """Ratios the run measured besides the targets: a table of numbers."""
  machine = _machine(results)
  xla, torch_peak = machine['xla_peak'], machine['torch_peak']
  step = lambda **m: (find_run(results['runs'], shape=shape, **m) or {}).get(
      'result', {}).get('step_seconds')
  f32, bf16 = (step(job='ours_train', conditioner='none', dtype=d)
               for d in ('float32', 'bfloat16'))
  hf32, hf16 = (step(job='hf_train', precision=p, peft_prefix=0)
                for p in ('float32', 'bfloat16'))
  plain = dict(job='ours_train', conditioner='none')
  allocator = results.get('allocator')
  rows = [
      ('XLA bf16-input dot rate / f32 rate', xla['bfloat16'], xla['float32']),
      ('PyTorch bf16 mm rate / f32 rate', torch_peak['bfloat16'],
       torch_peak['float32']),
      ('our step time, bf16 / f32', bf16, f32),
      ('transformers step time, bf16 autocast / f32', hf16, hf32),
      (f'our f32 step time, glibc malloc / {allocator}',
       step(**plain, allocator='system') if allocator else None, f32),
      ('our f32 step time, `unsafe_rbg` / threefry dropout keys',
       step(**plain, prng_impl='unsafe_rbg'), f32),
      ('our bf16 step time, YNNPACK off / default',
       step(job='ours_train', conditioner='none', dtype='bfloat16',
            xla_flags=workload.YNN_OFF), bf16),
  ]
  return ['| ratio | value |', '|---|---:|'] + [
      f'| {name} | {a / b:.2f}x |' for name, a, b in rows if a and b]


def _xla_options_table(results) -> List[str]:
  """Matmul peaks under the XLA:CPU options bench.run tried."""
  machine = _machine(results)
  rows = [('default', machine['xla_peak'])]
  rows += [(f'{r["job"]["option"]} (`{r["job"]["xla_flags"]}`)',
            r['result']['xla_peak']) for r in _ok(results['runs'])
           if r['job']['job'] == 'xla_peak']
  if len(rows) == 1:
    return []
  return ['| XLA:CPU option | float32 GFLOP/s | bfloat16 inputs GFLOP/s |',
          '|---|---:|---:|'] + [
              f'| {name} | {peak["float32"] / 1e9:,.0f} | '
              f'{peak["bfloat16"] / 1e9:,.0f} |' for name, peak in rows]


def rate_range(amount: float, res: dict) -> Tuple[float, float, float]:
  """(median, slowest, fastest) rate of `amount` per step over the timed
  steps; the slowest is NaN in results from before step_seconds_max was
  recorded."""
  slowest = res.get('step_seconds_max')
  return (amount / res['step_seconds'],
          float('nan') if slowest is None else amount / slowest,
          amount / res['step_seconds_min'])


def chart(results: dict, path: str, shape: str) -> None:
  """Training and decoding tokens/s of every system, one shape: bars at the
  median step, whiskers from the slowest to the fastest timed step."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  train, decode = [], []
  steps = {'train': set(), 'decode': set()}
  for r in _ok(results['runs']):
    job, res = r['job'], r['result']
    if job.get('shape') != shape:
      continue
    if job['job'] == 'ours_train':
      if variant_label(job):
        continue  # In the table; the chart shows the default settings.
      label = ours.display_name(job['conditioner']) + (
          ' bf16' if job['dtype'] == 'bfloat16' else '')
      if job.get('train_params') == 'conditioning':
        label += ' (frozen)'
      train.append((label, rate_range(_tokens(job), res), 'C0'))
    elif job['job'] == 'hf_train':
      label = ('PEFT prefix (frozen)' if job.get('peft_prefix') else
               'transformers ' + ('bf16 autocast' if job['precision'] ==
                                  'bfloat16' else 'f32'))
      train.append((label, rate_range(_tokens(job), res), 'C3'))
    elif job['job'] in ('ours_decode', 'hf_generate'):
      if variant_label(job):
        continue  # In the table; the chart shows the default settings.
      mine = job['job'] == 'ours_decode'
      label = (ours.display_name(job['conditioner']) if mine else
               'transformers generate') + f', batch {job["batch_shape"][0]}'
      decode.append((label, rate_range(
          job['batch_shape'][0] * res['generated_length'], res),
                     'C0' if mine else 'C3'))
    else:
      continue
    steps['decode' if 'generated_length' in res else 'train'].add(
        res['steps_timed'])
  fig, axes = plt.subplots(1, 2, figsize=(13, 5.5),
                           gridspec_kw={'width_ratios': [3, 1.3]})
  for ax, rows, title, kind in (
      (axes[0], train, 'training step', 'train'),
      (axes[1], decode, 'greedy decoding', 'decode')):
    names, ranges, colors = zip(*rows) if rows else ((), (), ())
    median = np.array([r[0] for r in ranges])
    # Whiskers down to the slowest step (0 where it was not recorded) and
    # up to the fastest.
    low = np.nan_to_num(median - np.array([r[1] for r in ranges]))
    high = np.array([r[2] for r in ranges]) - median
    ax.barh(range(len(median)), median, color=colors,
            xerr=np.array([low, high]).reshape(2, -1), capsize=3,
            error_kw={'elinewidth': 1})
    ax.set_yticks(range(len(median)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel('tokens / s')
    timed = '/'.join(map(str, sorted(steps[kind])))
    ax.set_title(f'{title}, {shape}\n({timed} timed steps per job)',
                 fontsize=9)
  missing_max = any(np.isnan(r[1]) for _, r, _ in train + decode)
  fig.suptitle(
      f'{cpu_label(results)}. Blue: ours; red: transformers/PEFT. Bars: '
      'median step; whiskers: '
      'fastest and slowest timed step' + (' (the slowest was not recorded by this run, so only '
                       'the fastest is drawn)' if missing_max else ''),
      fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def timed_load(results: dict) -> float:
  """The highest load average (1 min) before a timed training or decoding
  job of the run: what the targets' timings ran under."""
  return max(r['load_before'][0] for r in _ok(results['runs'])
             if 'step_seconds' in r['result'] or
             r['job']['job'] == 'paired')


def disturbed_facts(results: dict) -> List[str]:
  """The jobs that `bench.run` ran again (runs from before that rule: no
  line)."""
  if 'disturbed_spread' not in results:
    return []
  again = [f'`{job_label(r["job"])}` ({len(r["disturbed_attempts"])} '
           'earlier attempt(s))' for r in results['runs']
           if r.get('disturbed_attempts')]
  return ['- Jobs run again because their timed steps spread by more than '
          f'{results["disturbed_spread"]}x (the tables use the last '
          'attempt): ' + ('; '.join(again) or 'none')]


def _run_facts(results: dict, slug: str) -> List[str]:
  """What a run measured on and how: commit, date, CPU, libraries,
  allocator, load and workload."""
  info = _machine(results)['machine']
  b, i, t = next(r['job']['batch_shape'] for r in results['runs']
                 if 'batch_shape' in r['job'])
  job = next(r['job'] for r in results['runs'] if 'num_tasks' in r['job'])
  loads = [r['load_before'][0] for r in results['runs']]
  commit = results.get('commit', 'not recorded')
  if results.get('commit_note'):
    commit += f' ({results["commit_note"]})'
  return [
      f'Generated by `{results["command"]}` at commit {commit} (started '
      f'{results["started"]}, {results["total_seconds"] / 60:.1f} minutes) '
      f'into `{RESULTS_DIR}/{slug}.json`.',
      '',
      f'- CPU: {info["cpu"]}, {info["cores"]} cores, '
      f'{info.get("memory_gib", "?")} GiB; vector extensions: '
      f'{", ".join(info["cpu_flags"])}',
      f'- jax {info["jax"]}, flax {info["flax"]}, numpy {info["numpy"]}, '
      f'torch {info["torch"]}, transformers {info["transformers"]}, peft '
      f'{info["peft"]}, Python {info["python"]}; XLA_FLAGS='
      f'`{info["xla_flags"] or "(none)"}`',
      '- Allocator for every job (ours and the peers): ' + (
          f'{results["allocator"]} (LD_PRELOAD)' if results.get('allocator')
          else 'glibc malloc'),
      f'- Load average (1 min) before each job: min {min(loads):.2f}, max '
      f'{max(loads):.2f}; loaded (max above cores + 0.5): '
      + ('**yes**' if max(loads) > info['cores'] + 0.5 else 'no') +
      f'; before the timed training and decoding jobs: max '
      f'{timed_load(results):.2f}, loaded: ' +
      ('**yes**' if timed_load(results) > info['cores'] + 0.5 else 'no'),
      *disturbed_facts(results),
      '- Processes using >= 10% CPU (ps, lifetime average) when the run '
      'started: ' + (
          '; '.join(f'`{p}`' for p in info.get('busy_processes', []))
          or 'none'),
      f'- Workload: batch {b}, inputs {i} tokens, targets {t} tokens, '
      f'{job["num_tasks"]} tasks, dropout {job["dropout_rate"]}']


def _paired_table(results: dict, shape: str) -> List[str]:
  """Each paired job: both sides' median step and the target's ratio."""
  ratios = paired_ratios(results, shape)
  rows = []
  for r in _paired_runs(results, shape).values():
    job, res = r['job'], r['result']
    side = lambda j: f'{job_label(j)}{variant_label(j)}'
    ms = lambda x: f'{1000 * x["step_seconds"]:,.0f}'
    median, low, high, n = ratios[job['target']]
    rows.append(f'| {job["target"]} | {side(job["a"])} | {ms(res["a"])} | '
                f'{side(job["b"])} | {ms(res["b"])} | {median:.3f} | '
                f'{low:.3f}-{high:.3f} | {n} |')
  if not rows:
    return []
  return ['| target | a | a median ms | b | b median ms | ratio (median of '
          'rounds) | 95% interval | rounds |',
          '|---|---|---:|---|---:|---:|---|---:|'] + rows


def _cpu_section(results: dict, slug: str) -> List[str]:
  """Everything one CPU type's run measured, under one heading."""
  machine = _machine(results)
  shapes = _shapes(results['runs'])
  lines = [f'### {cpu_label(results)}', '', *_run_facts(results, slug), '',
           '#### Matmul peak (same machine, same run)', '',
           '| kernel | float32 GFLOP/s | bfloat16 inputs GFLOP/s |',
           '|---|---:|---:|',
           f'| XLA `jnp.dot` 2048^3 | '
           f'{machine["xla_peak"]["float32"] / 1e9:,.0f} | '
           f'{machine["xla_peak"]["bfloat16"] / 1e9:,.0f} |',
           f'| PyTorch `torch.mm` 2048^3 | '
           f'{machine["torch_peak"]["float32"] / 1e9:,.0f} | '
           f'{machine["torch_peak"]["bfloat16"] / 1e9:,.0f} |',
           '', *_xla_options_table(results), '',
           f'#### Other ratios the run measured, {shapes[0]}', '',
           *_ratios(results, shapes[0]), '',
           *_peer_params(results, shapes[0]), '',
           f'![throughput on {cpu_label(results)}]({RESULTS_DIR}/{slug}.png)']
  for shape in shapes:
    paired = _paired_table(results, shape)
    if paired:
      lines += ['', f'#### Paired jobs, {shape}', '', *paired]
    lines += ['', f'#### Training step, {shape}', '',
              *_training_table(results, shape), '',
              f'#### FLOPs per training step, {shape}', '',
              *_flops_table(results, shape), '',
              f'#### Greedy decoding, {shape}', '',
              *_decode_table(results, shape), '',
              *_roofline_table(results, shape)]
    profile = _profile_table(results, shape)
    if profile:
      lines += ['', f'#### Where the time goes, {shape} '
                '(`python -m bench.profile`)', '', *profile]
  failed = [r for r in results['runs'] if 'error' in r]
  if failed:
    lines += ['', '#### Failed jobs', ''] + [
        f'- `{r["job"]}`: {r["error"].strip().splitlines()[-1]}'
        for r in failed]
  return lines


def _span(values: Dict[str, Optional[float]], show) -> str:
  """'lowest (CPU) to highest (CPU)' of the measured values by CPU label."""
  known = sorted((v, cpu) for cpu, v in values.items() if v is not None)
  if not known:
    return 'not measured'
  (low, low_cpu), (high, high_cpu) = known[0], known[-1]
  if len(known) == 1:
    return f'{show(low)} (measured on {low_cpu} only)'
  if show(low) == show(high):
    return f'{show(low)} (on every CPU type)'
  return f'{show(low)} ({low_cpu}) to {show(high)} ({high_cpu})'


def performance_sentence(all_results: Dict[str, dict]) -> List[str]:
  """README's performance sentence: the range across CPU types of the
  headline ratios, each end named by its CPU type."""
  first = next(iter(all_results.values()))
  shape = _shapes(first['runs'])[0]
  values = {cpu_label(r): summary(r, shape) for r in all_results.values()}
  span = lambda key, show: _span({cpu: v[key] for cpu, v in values.items()},
                                 show)
  times = lambda v: f'{v:.2f}x'
  percent = lambda v: f'{100 * v:.0f}%'
  def run(results):
    info = _machine(results)['machine']
    return (f'{cpu_label(results)} ({info["cores"]} cores, commit '
            f'{results.get("commit", "not recorded")}, load average up to '
            f'{timed_load(results):.1f} before the timed jobs)')
  b, i, t = next(r['job']['batch_shape'] for r in first['runs']
                 if 'batch_shape' in r['job'])
  return [
      f'`make bench` (T5.1.1-{shape}, batch {b}, {i} + {t} tokens) has run '
      f'on {len(all_results)} CPU type(s): '
      f'{", ".join(run(r) for r in all_results.values())}. Across them, a '
      'training step in f32 is '
      f'{span("speedup_f32", times)} as fast as transformers\' at '
      f'{span("mfu_f32", percent)} of the f32 matmul peak measured in the '
      f'same run; in bf16, {span("speedup_bf16", times)} as fast as '
      f'transformers\' bf16 autocast. HyperPrompt-Global\'s step takes '
      f'{span("global_overhead", times)} the time of None\'s. Training '
      'only the conditioner, prefix tuning with PEFT\'s placement is '
      f'{span("peft_speedup", times)} as fast as PEFT\'s prefix tuning, and '
      f'HyperPrompt-Global\'s step takes {span("global_conditioning", times)}'
      ' the time of its full training. Greedy '
      f'decoding at batch {DECODE_BATCH} is '
      f'{span("decode_speedup", times)} as fast as transformers\' '
      f'`generate`, at {span("decode_bound", percent)} of the speed of its '
      'memory-bandwidth bound.']


def sections(all_results: Dict[str, dict], memory: Optional[dict] = None
            ) -> List[Tuple[str, List[str]]]:
  """(name, lines) of each generated section of BENCHMARKS.md, in order:
  the targets across CPU types, then each CPU type's tables and the facts
  of its run. What they show is written by people around the sections, in
  BENCHMARKS.md itself."""
  first = next(iter(all_results.values()))
  headline = _shapes(first['runs'])[0]
  out = [(f'targets-{headline}', [
      f'## Targets ({headline}; issue 17)', '',
      *targets_table(all_results, headline)])]
  out += [(f'cpu-{slug}', _cpu_section(results, slug))
          for slug, results in all_results.items()]
  if memory:
    out.append(('memory', [
        '## Memory and FLOPs: full vs conditioning-only training', '',
        *_memory_table(memory)]))
  # The parameter table is computed from shapes: the same on every CPU.
  with_params = next((r for r in all_results.values()
                      if find_run(r['runs'], job='params')), first)
  out.append(('params', [
      '## Parameter overhead (from shapes, `hyperprompt.params`)', '',
      *_params_table(with_params)]))
  return out


def readme_sections(all_results: Dict[str, dict]
                    ) -> List[Tuple[str, List[str]]]:
  """(name, lines) of README.md's generated sections."""
  return [('performance', performance_sentence(all_results))]


def markers(name: str) -> Tuple[str, str]:
  """The begin and end markers of generated section `name`."""
  return f'<!-- report:{name}:begin -->', f'<!-- report:{name}:end -->'


def section_text(name: str, lines: List[str]) -> str:
  """Section `name` as BENCHMARKS.md holds it, between its markers."""
  begin, end = markers(name)
  # The blank line ends a table before the marker.
  return '\n'.join([begin, *lines, '', end])


def write(root: str) -> List[str]:
  """Rewrites the generated sections of BENCHMARKS.md and README.md (a
  missing one is inserted before the next, or appended) and each CPU
  type's chart, from every results file; the text around the sections is
  left as it is. Returns the paths written."""
  all_results = load_all(root)
  written = []
  for slug, results in all_results.items():
    chart_path = os.path.join(root, RESULTS_DIR, slug + '.png')
    chart(results, chart_path, _shapes(results['runs'])[0])
    written.append(chart_path)
  # The conditioning-only memory table has its own results (bench/memory.json,
  # python -m bench.memory); so do the pod-slice table (bench/scale.json,
  # make scale) and resuming (bench/resume.json, bench.resume), which write
  # their own sections.
  memory_file = os.path.join(root, 'bench', 'memory.json')
  memory = None
  if os.path.exists(memory_file):
    with open(memory_file) as f:
      memory = json.load(f)
  for name, generated in (('BENCHMARKS.md', sections(all_results, memory)),
                          ('README.md', readme_sections(all_results))):
    path = os.path.join(root, name)
    for i, (section, lines) in enumerate(generated):
      markdown_section.replace(
          section_text(section, lines), *markers(section), path,
          before=[markers(n)[0] for n, _ in generated[i + 1:]])
    written.append(path)
  return written
