"""BENCHMARKS.md and bench/throughput.png, from the results JSON only.

Every number in the report is computed here from `bench/results.json` (and
`bench/memory.json`, from `python -m bench.memory`, when present); none is
typed by hand.
"""
import json
import os
from typing import Dict, List, Optional

from bench import ours
from bench import resume
from bench import scale
from bench import workload
from hyperprompt import params as params_lib

# The targets: (key, description, threshold, higher is better).
TARGETS = (
    ('speedup_f32', 'training tokens/s vs transformers f32 full fine-tuning',
     4.0, True),
    ('mfu_f32', 'training FLOP utilisation of the f32 matmul peak', 0.40,
     True),
    ('speedup_bf16', 'bf16 training tokens/s vs transformers bf16 autocast',
     1.0, True),
    ('global_overhead', 'HyperPrompt-Global step time over none (l=16)',
     1.05, False),
    ('decode_speedup', 'greedy decoding tokens/s vs transformers generate',
     3.0, True),
    ('peft_speedup', "conditioning-only prefix tuning (PEFT's placement) "
     'tokens/s vs PEFT prefix tuning', 1.0, True),
    ('global_conditioning', 'conditioning-only HyperPrompt-Global step time '
     'vs its full training', 0.7, False),
    ('recompiles', 'compilations after the first step (all our jobs)', 0,
     False),
)


def _tokens(job) -> int:
  batch, inputs, targets = job['batch_shape']
  return batch * (inputs + targets)


def _ok(runs):
  return [r for r in runs if 'result' in r]


def _find(runs, **match) -> Optional[dict]:
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


def _variant(job) -> str:
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


def summary(results: dict, shape: str) -> Dict[str, Optional[float]]:
  """The target quantities for one model shape."""
  runs = results['runs']
  peak = _machine(results)['xla_peak']['float32']
  get = lambda **m: _find(runs, shape=shape, **m)
  tps = lambda r: _tokens(r['job']) / r['result']['step_seconds'] if r \
      else None
  ratio = lambda a, b: a / b if a and b else None
  plain = get(job='ours_train', conditioner='none', dtype='float32')
  plain16 = get(job='ours_train', conditioner='none', dtype='bfloat16')
  glob = get(job='ours_train', conditioner='hyperprompt_global',
             dtype='float32')
  hf32 = get(job='hf_train', precision='float32', peft_prefix=0)
  hf16 = get(job='hf_train', precision='bfloat16', peft_prefix=0)
  peft_ours = get(job='ours_train', conditioner='prefix_tuning_decoder',
                  train_params='conditioning')
  peft = next((r for r in _ok(runs) if r['job'].get('shape') == shape and
               r['job'].get('peft_prefix')), None)
  glob_cond = get(job='ours_train', conditioner='hyperprompt_global',
                  train_params='conditioning')
  dec = get(job='ours_decode', conditioner='none')
  gen = get(job='hf_generate')
  dtps = lambda r: (r['job']['batch_shape'][0] *
                    r['result']['generated_length'] /
                    r['result']['step_seconds']) if r else None
  ours = [r for r in _ok(runs) if r['job']['job'].startswith('ours')]
  recompiles = [r['result'].get('compiles_after_first_step',
                                r['result'].get('compiles_after_first_call'))
                for r in ours if r['job']['job'] != 'ours_profile']
  return {
      'speedup_f32': ratio(tps(plain), tps(hf32)),
      'mfu_f32': (plain['result']['analytic_flops'] /
                  plain['result']['step_seconds'] / peak)
                 if plain else None,
      'speedup_bf16': ratio(max(tps(plain16) or 0, tps(plain) or 0),
                            tps(hf16)),
      'global_overhead': ratio(glob and glob['result']['step_seconds'],
                               plain and plain['result']['step_seconds']),
      'decode_speedup': ratio(dtps(dec), dtps(gen)),
      'peft_speedup': ratio(tps(peft_ours), tps(peft)),
      'global_conditioning': ratio(
          glob_cond and glob_cond['result']['step_seconds'],
          glob and glob['result']['step_seconds']),
      'recompiles': max(recompiles) if recompiles else None,
  }


def _machine(results) -> dict:
  r = _find(results['runs'], job='machine')
  if r is None:
    raise ValueError('The results have no machine job; rerun bench.run.')
  return r['result']


def _training_table(results, shape) -> List[str]:
  runs = [r for r in _ok(results['runs']) if r['job'].get('shape') == shape
          and r['job']['job'] in ('ours_train', 'hf_train')]
  peak = _machine(results)['xla_peak']['float32']
  plain = _find(results['runs'], shape=shape, job='ours_train',
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
      name = 'ours: ' + ours.display_name(job['conditioner']) + _variant(job)
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
  hf = _find(results['runs'], shape=shape, job='hf_train',
             precision='float32', peft_prefix=0)
  plain = _find(results['runs'], shape=shape, job='ours_train',
                conditioner='none', dtype='float32')
  if not (hf and plain):
    return []
  theirs = hf['result'].get('total_params', hf['result']['trainable_params'])
  mine = plain['result']['params']
  same = ('equal' if theirs == mine else
          f'{mine - theirs:+,} for ours' + (
              " (in this run transformers tied lm_head to the embedding; "
              'bench/peers.py now unties it)' if 'total_params' not in
              hf['result'] else ''))
  return [f'- Parameters: transformers T5 {theirs:,}, ours (none) '
          f'{mine:,}: {same}.']


def _memory_table(memory) -> List[str]:
  """bench/memory.json: deterministic bytes and FLOPs per step."""
  mib = lambda x: _fmt(x / 2**20, 1)
  lines = [
      f'Generated by `{memory["command"]}` at commit {memory["commit"]} '
      f'({memory["shape"]}, batch {memory["batch_shape"][0]}, inputs '
      f'{memory["batch_shape"][1]}, targets {memory["batch_shape"][2]}, '
      f'{memory["num_tasks"]} tasks). Nothing is timed, so these hold on any '
      'CPU and under any load: the train state\'s bytes, and XLA\'s '
      '`memory_analysis()` and `cost_analysis()` of the compiled step '
      '(Adafactor). Peak = arguments + outputs - aliased (donated state) + '
      'temporaries.', '',
      '| conditioner | trains | parameters (MiB) | optimizer state (MiB) | '
      'XLA temporaries (MiB) | peak (MiB) | XLA GFLOP | analytic GFLOP |',
      '|---|---|---:|---:|---:|---:|---:|---:|']
  for row in memory['rows']:
    m = row['xla_memory_bytes']
    peak = (m['arguments'] + m['outputs'] - m['aliased'] +
            m['temporaries'])
    lines.append(
        f'| {ours.display_name(row["conditioner"])} | '
        f'{"conditioner only" if row["train_params"] == "conditioning" else "all"}'
        f' | {mib(row["state_bytes"]["params"])} | '
        f'{mib(row["state_bytes"]["opt_state"])} | {mib(m["temporaries"])} | '
        f'{mib(peak)} | {_fmt(row["xla_flops"] / 1e9, 1)} | '
        f'{_fmt(row["analytic_flops"] / 1e9, 1)} |')
  return lines


def _flops_table(results, shape) -> List[str]:
  lines = ['| conditioner | analytic GFLOP/step | vs none | '
           'XLA cost analysis GFLOP | analytic / XLA |',
           '|---|---:|---:|---:|---:|']
  plain = _find(results['runs'], shape=shape, job='ours_train',
                conditioner='none', dtype='float32')
  for r in _ok(results['runs']):
    job, res = r['job'], r['result']
    if (job['job'] != 'ours_train' or job.get('shape') != shape or
        job['dtype'] != 'float32' or job.get('train_params') ==
        'conditioning' or _variant(job)):
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
    name = ('ours: ' + ours.display_name(job['conditioner']) + ' greedy, cache'
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


def _decode_roofline(results, shape) -> List[str]:
  """The fastest a greedy decode can be here, from what it must read; one
  line per batch size measured."""
  machine = _machine(results)
  bandwidth = machine.get('memory_bandwidth')
  lines = []
  for run in _ok(results['runs']):
    job, res = run['job'], run['result']
    if (job.get('shape') != shape or job['job'] != 'ours_decode' or
        job['conditioner'] != 'none' or _variant(job) or not bandwidth or
        'bytes_per_position' not in res):
      continue
    batch = job['batch_shape'][0]
    gen = next((r for r in _ok(results['runs'])
                if r['job']['job'] == 'hf_generate' and
                r['job'].get('shape') == shape and
                r['job'].get('batch_shape') == job['batch_shape']), None)
    positions = res['generated_length']
    read_s = positions * res['bytes_per_position'] / bandwidth
    encode_s = res['encoder_flops'] / machine['xla_peak']['float32']
    bound = read_s + encode_s
    line = (
        f'Roofline, batch {batch}: every generated position reads the '
        f'decoder\'s parameters and the cache '
        f'({res["bytes_per_position"] / 2**20:,.0f} MiB) from memory, at the '
        f'measured {bandwidth / 1e9:,.0f} GB/s at best: '
        f'{read_s * 1e3:,.0f} ms for {positions} positions, plus '
        f'{encode_s * 1e3:,.0f} ms for the encoder at the f32 matmul peak. '
        f'No greedy decode of this batch runs in less than '
        f'{bound * 1e3:,.0f} ms here; ours takes '
        f'{res["step_seconds"] * 1e3:,.0f} ms '
        f'({bound / res["step_seconds"]:.0%} of the bound\'s speed).')
    if gen:
      needed = gen['result']['step_seconds'] / 3
      line += (f' Three times transformers\' speed would need '
               f'{needed * 1e3:,.0f} ms' + (
                   ', below the bound: out of reach at batch '
                   f'{batch} on this machine.' if needed < bound else '.'))
    lines += [line, '']
  return lines[:-1]


def _profile_table(results, shape) -> List[str]:
  lines = []
  for r in _ok(results['runs']):
    job, res = r['job'], r['result']
    if job['job'] != 'ours_profile' or job.get('shape') != shape:
      continue
    what = 'greedy decode of the batch' if job.get('decode') else \
        'training step'
    total = res['total_ms']
    lines += [f'{ours.display_name(job["conditioner"])}, {what}: '
              f'{total:,.0f} ms of XLA operations (summed over threads). '
              'By kind: ' + ', '.join(
                  f'{kind} {100 * ms / total:.0f}%'
                  for kind, ms in res['by_kind_ms'].items()) + '.', '',
              '| operation (kind: JAX op, summed over layers) | ms | share |',
              '|---|---:|---:|']
    lines += [f'| {op or "(no source)"} | {ms:,.1f} | '
              f'{100 * ms / total:.1f}% |'
              for op, ms in list(res['top_ops_ms'].items())[:12]]
    lines.append('')
  return lines


def _params_table(results) -> List[str]:
  r = _find(results['runs'], job='params')
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


def _targets_table(results, shape) -> List[str]:
  values = summary(results, shape)
  lines = ['| target | wanted | measured | met |', '|---|---:|---:|---|']
  for key, text, threshold, higher in TARGETS:
    v = values[key]
    if v is None:
      met = 'not measured'
    else:
      met = 'yes' if (v >= threshold if higher else v <= threshold) else \
          '**no**'
    if key == 'mfu_f32':
      wanted, shown = f'>= {threshold:.0%}', (_fmt(100 * v, 1) + '%'
                                              if v is not None else '-')
    elif key == 'recompiles':
      wanted, shown = '0', '-' if v is None else str(v)
    else:
      wanted = f'{">=" if higher else "<="} {threshold}x'
      shown = '-' if v is None else f'{v:.2f}x'
    lines.append(f'| {text} | {wanted} | {shown} | {met} |')
  return lines


def _findings(results, shape) -> List[str]:
  """Statements computed from the results (no number typed by hand)."""
  machine = _machine(results)
  xla, torch_peak = machine['xla_peak'], machine['torch_peak']
  step = lambda **m: (_find(results['runs'], shape=shape, **m) or {}).get(
      'result', {}).get('step_seconds')
  out = [
      f'- bf16 matmuls: XLA runs a bf16-input dot at '
      f'{xla["bfloat16"] / xla["float32"]:.2f}x its f32 rate on this CPU, '
      f'PyTorch at {torch_peak["bfloat16"] / torch_peak["float32"]:.2f}x. '
      'XLA:CPU lowers dots to YNNPACK fusions; bf16 inputs with an f32 '
      'result go to the kernel directly, a bf16 result adds converts.',
  ]
  f32, bf16 = (step(job='ours_train', conditioner='none', dtype=d)
               for d in ('float32', 'bfloat16'))
  if f32 and bf16:
    out.append(f'- Our bf16 step takes {bf16 / f32:.2f}x the time of the '
               'f32 step (parameters stay f32 and are cast per use).')
  hf32, hf16 = (step(job='hf_train', precision=p, peft_prefix=0)
                for p in ('float32', 'bfloat16'))
  if hf32 and hf16:
    out.append(f'- transformers: bf16 autocast takes {hf16 / hf32:.2f}x '
               'the time of f32.')
  plain = dict(job='ours_train', conditioner='none')
  system = step(**plain, allocator='system')
  if f32 and system and results.get('allocator'):
    out.append(f'- Allocator: with glibc malloc the f32 step takes '
               f'{system / f32:.2f}x the time it takes with '
               f'{results["allocator"]} (glibc returns large blocks to the '
               'OS, so every step page-faults its temporaries back in).')
  out += _peer_params(results, shape)
  rbg = step(**plain, prng_impl='unsafe_rbg')
  if f32 and rbg:
    out.append(f'- Dropout keys: `unsafe_rbg` (runner.train\'s `prng_impl`) '
               f'takes {rbg / f32:.2f}x the time of threefry.')
  bf16_ynn_off = step(job='ours_train', conditioner='none',
                      dtype='bfloat16', xla_flags=workload.YNN_OFF)
  if bf16 and bf16_ynn_off:
    out.append(f'- With YNNPACK off, our bf16 step takes '
               f'{bf16_ynn_off / bf16:.2f}x the time of the default.')
  return out


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


def chart(results: dict, path: str, shape: str) -> None:
  """Training and decoding tokens/s of every system, one shape."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  train, decode = [], []
  for r in _ok(results['runs']):
    job, res = r['job'], r['result']
    if job.get('shape') != shape:
      continue
    if job['job'] == 'ours_train':
      if _variant(job):
        continue  # In the table; the chart shows the default settings.
      label = ours.display_name(job['conditioner']) + (
          ' bf16' if job['dtype'] == 'bfloat16' else '')
      if job.get('train_params') == 'conditioning':
        label += ' (frozen)'
      train.append((label, _tokens(job) / res['step_seconds'], 'C0'))
    elif job['job'] == 'hf_train':
      label = ('PEFT prefix (frozen)' if job.get('peft_prefix') else
               'transformers ' + ('bf16 autocast' if job['precision'] ==
                                  'bfloat16' else 'f32'))
      train.append((label, _tokens(job) / res['step_seconds'], 'C3'))
    elif job['job'] in ('ours_decode', 'hf_generate'):
      mine = job['job'] == 'ours_decode'
      label = (ours.display_name(job['conditioner']) if mine else
               'transformers generate')
      decode.append((label, job['batch_shape'][0] * res['generated_length']
                     / res['step_seconds'], 'C0' if mine else 'C3'))
  fig, axes = plt.subplots(1, 2, figsize=(13, 5.5),
                           gridspec_kw={'width_ratios': [3, 1.3]})
  for ax, rows, title in ((axes[0], train, 'training step'),
                          (axes[1], decode, 'greedy decoding')):
    names, values, colors = zip(*rows) if rows else ((), (), ())
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel('tokens / s')
    ax.set_title(f'{title}, {shape} (blue: ours, red: transformers/PEFT)',
                 fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def markdown(results: dict, chart_name: str,
             memory: Optional[dict] = None) -> str:
  machine = _machine(results)
  info = machine['machine']
  shapes = _shapes(results['runs'])
  headline = shapes[0]
  b, i, t = next(r['job']['batch_shape'] for r in results['runs']
                 if 'batch_shape' in r['job'])
  loads = [r['load_before'][0] for r in results['runs']]
  failed = [r for r in results['runs'] if 'error' in r]
  out = [
      '# Benchmarks',
      '',
      f'Generated by `{results["command"]}` (started {results["started"]}, '
      f'{results["total_seconds"] / 60:.1f} minutes) from '
      '`bench/results.json` by `bench/report.py`; do not edit by hand. '
      'Rerun with `make bench` (or `python -m bench.run --quick` for a '
      'two-minute check).',
      '',
      '## Machine',
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
          else "glibc malloc"),
      f'- Load average (1 min) before each job: min {min(loads):.2f}, max '
      f'{max(loads):.2f} (each job keeps all {info["cores"]} cores busy, '
      'so the average carries over from the previous job; above '
      f'{info["cores"] + 0.5:g}, other work competed)' + (' - **the machine was loaded: treat these numbers '
                         'with care**' if max(loads) > info['cores'] + 0.5
                         else ''),
      '- Processes using >= 10% CPU (ps, lifetime average) when the run '
      'started: ' + (
          '; '.join(f'`{p}`' for p in info.get('busy_processes', []))
          or 'none'),
      '',
      '## Workload',
      '',
      f'Batch {b}, inputs {i} tokens, targets {t} tokens, '
      f'{results["runs"][1]["job"]["num_tasks"]} tasks, dropout '
      f'{results["runs"][1]["job"]["dropout_rate"]}, full-length random '
      'tokens. tokens/s counts input and target tokens per training step, '
      'generated tokens per decode. Every measurement runs in a fresh '
      'process; step times are the median of the timed steps after warm-up '
      '(the first step compiles). Ours: `trainer.train_step` jitted as '
      '`runner.train` jits it, Adafactor (T5.1.1 recipe). transformers: '
      '`T5ForConditionalGeneration` with the same shapes (T5.1.1: lm_head '
      'untied from the embedding), AdamW (foreach; a different optimizer '
      'from ours), `torch.set_num_threads(cores)`. MFU = analytic matmul '
      "FLOPs of the step, each system's own (`bench/flops.py`: full "
      'fine-tuning, or a frozen backbone: no weight gradients, no backward '
      "pass below the lowest trained parameter; PEFT's prefixes sit in the "
      'decoder self-attention only) / step time / measured f32 matmul '
      'peak.',
      '',
      f'## Targets ({headline})',
      '',
      *_targets_table(results, headline),
      '',
      '## Matmul peak (same machine, same run)',
      '',
      '| kernel | float32 GFLOP/s | bfloat16 inputs GFLOP/s |',
      '|---|---:|---:|',
      f'| XLA `jnp.dot` 2048^3 | {machine["xla_peak"]["float32"] / 1e9:,.0f}'
      f' | {machine["xla_peak"]["bfloat16"] / 1e9:,.0f} |',
      f'| PyTorch `torch.mm` 2048^3 | '
      f'{machine["torch_peak"]["float32"] / 1e9:,.0f} | '
      f'{machine["torch_peak"]["bfloat16"] / 1e9:,.0f} |',
      '',
      *_xla_options_table(results),
      '',
      *_findings(results, headline),
      '',
      f'![throughput]({chart_name})',
      '',
  ]
  for shape in shapes:
    out += [f'## Training step, {shape}', '',
            *_training_table(results, shape), '',
            f'## FLOPs per training step, {shape}', '',
            'Analytic: matmuls only, forward x 3 (`bench/flops.py`); XLA: '
            "`compiled.cost_analysis()['flops']` of the whole compiled step "
            '(elementwise work and the optimizer included).', '',
            *_flops_table(results, shape), '',
            f'## Greedy decoding, {shape}', '',
            *_decode_table(results, shape), '',
            *_decode_roofline(results, shape), '']
    profile = _profile_table(results, shape)
    if profile:
      out += [f'## Where the time goes, {shape} (`python -m bench.profile`)',
              '', *profile]
  if memory:
    out += ['## Memory and FLOPs: full vs conditioning-only training', '',
            *_memory_table(memory), '']
  out += ['## Parameter overhead (from shapes, `hyperprompt.params`)', '',
          'Conditioning parameters (and percent of the backbone) with each '
          "method's defaults.", '', *_params_table(results), '']
  if failed:
    out += ['## Failed jobs', '']
    out += [f'- `{r["job"]}`: {r["error"].strip().splitlines()[-1]}'
            for r in failed]
    out.append('')
  return '\n'.join(out)


def write(results: dict, root: str) -> List[str]:
  chart_rel = 'bench/throughput.png'
  shape = _shapes(results['runs'])[0]
  chart(results, os.path.join(root, chart_rel), shape)
  path = os.path.join(root, 'BENCHMARKS.md')
  # The pod-slice table has its own results (bench/scale.json, make scale),
  # the conditioning-only memory table its own (bench/memory.json).
  scale_section = scale.section()
  memory_file = os.path.join(root, 'bench', 'memory.json')
  memory = None
  if os.path.exists(memory_file):
    with open(memory_file) as f:
      memory = json.load(f)
  with open(path, 'w') as f:
    f.write(markdown(results, chart_rel, memory))
    if scale_section:
      f.write('\n' + scale_section + '\n')
    # So is resuming the input pipeline (bench/resume.json, bench.resume).
    resume_section = resume.section()
    if resume_section:
      f.write('\n' + resume_section + '\n')
  return [path, os.path.join(root, chart_rel)]
