"""The scale table: does T5.1.1 base to XXL, with each conditioner, fit on TPU
slices, and with which partitioning? Compiled here, without a TPU
(`hyperprompt.compile`, libtpu's XLA:TPU compiler).

    python -m bench.scale                 # every cell not yet in the JSON
    python -m bench.scale --report_only   # rewrite BENCHMARKS.md's section
    make scale

The workload is the paper's GLUE setting: 8 tasks, batch 128, inputs 512,
targets 16, Adafactor, bfloat16 activations, scanned layers. For each size
and slice the partitioning is searched with the plain model ('none'): the
first candidate in PARTITIONINGS whose compiled step fits (a candidate whose
parameters and optimizer state alone exceed HBM is not compiled); the
conditioners are then compiled with that same partitioning, so their memory
over plain T5 compares like with like. Every compile runs in a fresh process
and its result is appended to bench/scale.json at once, so an interrupted
run resumes where it stopped. Cells run in PRIORITY order (XXL with
HyperPrompt-Global on v5e-256 first).

Compile times depend on the machine's load, which is recorded with each.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from bench import machine
from bench import markdown_section

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'bench', 'scale.json')
BEGIN, END = '<!-- scale:begin -->', '<!-- scale:end -->'

SIZES = ('xxl', 'xl', 'large', 'base')
CONDITIONERS = ('none', 'hyperprompt_global', 'prefix_tuning', 'adapters')
# (name in the table, libtpu topology).
SLICES = (('v5e-256', 'v5e:16x16'), ('v4-128 chips', 'v4:4x4x8'),
          ('v5e-64', 'v5e:8x8'), ('v5e-16', 'v5e:4x4'))
# (model partitions, parameter partitioning dims, remat policy) to try, in
# order, per size. 2-D first: it divides parameters and optimizer state by
# every device (float32 parameters: base 1 GiB, large 3 GiB, XL 11 GiB, XXL
# 42 GiB), and a small 'model' axis leaves a large 'data' axis, so few
# examples per device. A slice with more devices than the batch has rows
# needs 'model' >= devices / 128 (run skips what does not divide). Remat
# comes last, where nothing else fits: it recomputes the forward pass. On
# this 2-core machine an XXL compile takes about 10 minutes, so the lists
# are short.
PARTITIONINGS = {
    'base': ((1, 1, 'none'), (2, 1, 'none'), (4, 2, 'none')),
    'large': ((1, 1, 'none'), (2, 1, 'none'), (4, 2, 'none'),
              (4, 2, 'full')),
    'xl': ((4, 2, 'none'), (8, 2, 'none'), (4, 2, 'full')),
    'xxl': ((4, 2, 'none'), (8, 2, 'none'), (4, 2, 'full')),
}
BATCH_ROWS = 128
WORKLOAD = {'NUM_TASKS': '8', 'BATCH_SIZE': str(BATCH_ROWS),
            'TASK_FEATURE_LENGTHS': "{'inputs': 512, 'targets': 16}"}
JOB_TIMEOUT_S = 1500


def gin_args(size: str, conditioner: str, partitions: int, dims: int,
             remat: str) -> List[str]:
  return [
      f'--gin_file=models/sizes/t5_1_1_{size}.gin',
      f'--gin_file=models/conditioners/{conditioner}.gin',
      '--gin_file=runs/train.gin', '--gin_file=runs/synthetic.gin',
      '--gin.MODEL_DIR="/tmp/unused"', '--gin.TRAIN_STEPS=1',
      *(f'--gin.{k}={v}' for k, v in WORKLOAD.items()),
      '--gin.config.T5Config.scan_layers=True',
      f'--gin.NUM_PARTITIONS={partitions}',
      f'--gin.partitioning.Partitioner.parameter_partitioning_dims={dims}',
      f"--gin.REMAT_POLICY='{remat}'",
  ]


def worker(args) -> None:
  """One compile, in this (fresh) process; prints the result as JSON."""
  from hyperprompt import compile as compile_lib  # pylint: disable=g-import-not-at-top
  from hyperprompt import gin_cli  # pylint: disable=g-import-not-at-top
  files, bindings, _ = gin_cli.split_gin_flags(
      gin_args(args.size, args.conditioner, args.partitions, args.dims,
               args.remat))
  gin_cli.parse_gin(files, bindings, gin_cli.search_paths([]))
  report, = compile_lib.compile_train(args.topology)
  out = {k: getattr(report, k) for k in (
      'device_kind', 'num_devices', 'mesh', 'params', 'optimizer_state',
      'batch', 'arguments', 'temporaries', 'generated_code', 'hbm', 'flops',
      'collectives', 'compile_seconds', 'compile_cpu_seconds', 'refused',
      'total', 'peak', 'fits')}
  print('SCALE_RESULT ' + json.dumps(out))


def _load() -> List[dict]:
  if not os.path.exists(RESULTS):
    return []
  with open(RESULTS) as f:
    return json.load(f)['cells']


def _notes() -> List[str]:
  """Free-text notes kept in the JSON (e.g. where a recorded commit went)."""
  if not os.path.exists(RESULTS):
    return []
  with open(RESULTS) as f:
    return json.load(f).get('notes', [])


def _save(cells: List[dict]) -> None:
  notes = _notes()
  with open(RESULTS, 'w') as f:
    json.dump({'cells': cells, 'notes': notes}, f, indent=1)


def compile_cell(size, conditioner, slice_name, topology, partitions, dims,
                 remat) -> dict:
  # The commit the worker imports: read before it starts, since a commit made
  # while it compiles would otherwise be recorded as the one it measured.
  commit = machine.code_commit()
  load_before = os.getloadavg()[0]
  cmd = [sys.executable, '-m', 'bench.scale', '--worker', f'--size={size}',
         f'--conditioner={conditioner}', f'--topology={topology}',
         f'--partitions={partitions}', f'--dims={dims}', f'--remat={remat}']
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  start = time.time()
  try:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=JOB_TIMEOUT_S)
    lines = [l for l in proc.stdout.splitlines()
             if l.startswith('SCALE_RESULT ')]
    result = (json.loads(lines[-1].split(' ', 1)[1]) if lines else
              {'error': (proc.stderr.strip().splitlines() or ['?'])[-1]})
  except subprocess.TimeoutExpired:
    result = {'error': f'timed out after {JOB_TIMEOUT_S} s'}
  result.update(size=size, conditioner=conditioner, slice=slice_name,
                topology=topology, partitions=partitions, dims=dims,
                remat=remat,
                wall_seconds=round(time.time() - start, 1),
                load_before=load_before, load_after=os.getloadavg()[0],
                commit=commit,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec='minutes'))
  return result


def _done(cells, size, conditioner, topology, commit=None) -> bool:
  """Whether the cell has a partitioning that fits (compiled at `commit`,
  when given)."""
  return any(_key(c) == (size, conditioner, topology) and c.get('fits') and
             commit in (None, c['commit']) for c in cells)


def _key(c) -> Tuple:
  return (c['size'], c['conditioner'], c['topology'])


def _partitioning(c) -> Tuple:
  return (c['partitions'], c['dims'], c['remat'])


def cells_in_priority_order():
  """[(size, conditioner, slice name, topology)]: XXL with Global and plain
  on v5e-256 and the v4 slice first (the key targets), then the rest."""
  cells = [(size, conditioner, slice_name, topology)
           for size in SIZES for slice_name, topology in SLICES
           for conditioner in ('hyperprompt_global', 'none', 'prefix_tuning',
                               'adapters')]
  key = lambda c: not (c[0] == 'xxl' and c[1] in ('hyperprompt_global',
                                                  'none') and
                       c[3] in ('v5e:16x16', 'v4:4x4x8'))
  return sorted(cells, key=key)


def _num_devices(topology: str) -> int:
  """Devices of a libtpu topology name ('v5e:16x16' -> 256; v4 has two
  devices, its TensorCores, per chip)."""
  kind, shape = topology.split(':')
  chips = 1
  for n in shape.split('x'):
    chips *= int(n)
  return chips * (2 if kind in ('v4', 'v3') else 1)


def run(budget_s: float, recompile=()) -> None:
  """Compiles cells until all are decided or `budget_s` has passed. A cell
  reuses the partitioning that fitted for another conditioner of its size
  and slice; otherwise it walks PARTITIONINGS[size]. With `recompile`
  ((size, conditioner, topology) triples) only those cells are compiled,
  and only a compile at the current commit decides them: after a change to
  the code they measure, the new compile supersedes the old one, which the
  report keeps as history."""
  cells = _load()
  deadline = time.time() + budget_s
  commit = machine.code_commit()
  for size, conditioner, slice_name, topology in cells_in_priority_order():
    key = (size, conditioner, topology)
    if recompile and key not in recompile:
      continue
    at = commit if recompile else None
    if _done(cells, *key, commit=at):
      continue
    fitted = [c for c in cells if c.get('fits') and
              (c['size'], c['topology']) == (size, topology)]
    devices = _num_devices(topology)
    candidates = ([_partitioning(fitted[0])] if fitted else
                  [p for p in PARTITIONINGS[size]
                   if BATCH_ROWS % (devices // p[0]) == 0])
    for partitioning in candidates:
      if time.time() > deadline:
        return
      if any(_key(c) == key and _partitioning(c) == partitioning and
             at in (None, c['commit']) for c in cells):
        continue
      result = compile_cell(size, conditioner, slice_name, topology,
                            *partitioning)
      cells.append(result)
      _save(cells)
      print(json.dumps({k: result.get(k) for k in (
          'size', 'conditioner', 'topology', 'partitions', 'dims', 'remat',
          'fits', 'total', 'wall_seconds', 'error')}), flush=True)
      if result.get('fits'):
        break


def _gib(b) -> str:
  return '-' if b is None else f'{b / 1024**3:.2f}'


def _tflop(flops) -> str:
  return '-' if not flops else f'{flops / 1e12:.3f}'


def _over(c: dict, none: Optional[dict], field: str = 'total') -> str:
  """c's `field` (memory total, live peak or FLOPs) above the plain
  model's, when both were compiled with the same partitioning."""
  if not (none and none.get(field) and c.get(field) and
          _partitioning(none) == _partitioning(c)):
    return '-'
  return f'{100 * (c[field] / none[field] - 1):+.2f}%'


def latest(cells: List[dict]) -> Dict[Tuple, dict]:
  """{(size, topology, conditioner): cell}: the newest compile that fits, or
  the newest attempt while none fits (cells are appended in time order)."""
  deciding = {}
  for c in cells:
    key = (c['size'], c['topology'], c['conditioner'])
    if c.get('fits') or not deciding.get(key, {}).get('fits'):
      deciding[key] = c
  return deciding


def _history(cells: List[dict], deciding: Dict[Tuple, dict]) -> List[str]:
  """Earlier compiles that fitted and were superseded by a compile of newer
  code (`--recompile`), each against the plain model of its own commit."""
  current = {id(c) for c in deciding.values()}
  rows = []
  for c in cells:
    if id(c) in current or not c.get('fits'):
      continue
    none = next((n for n in cells if n['conditioner'] == 'none' and n.get(
        'fits') and (n['size'], n['topology'], n['commit']) == (
            c['size'], c['topology'], c['commit'])), None)
    now = deciding[(c['size'], c['topology'], c['conditioner'])]
    rows.append(
        f'| {c["size"]} | {c["slice"]} | {c["conditioner"]} | {c["commit"]} '
        f'| {_gib(c["total"])} | {_over(c, none)} | {_tflop(c["flops"])} | '
        f'{_over(c, none, "flops")} | {now["commit"]} |')
  if not rows:
    return []
  return ['', 'Superseded compiles (the table above has the newer one, '
          'from `python -m bench.scale --recompile=SIZE/CONDITIONER/'
          'TOPOLOGY`); "over none" is against the plain model compiled at '
          'the same commit:', '',
          '| size | slice | conditioner | commit | total GiB | over none | '
          'XLA TFLOP | FLOPs over none | superseded at |',
          '|---|---|---|---|---|---|---|---|---|'] + rows


def markdown(cells: List[dict]) -> str:
  """The table of BENCHMARKS.md's scale section, between its markers; the
  text around them (what the columns mean, the findings) is written there by
  people."""
  out = [BEGIN,
         '| size | slice | conditioner | partitioning | params GiB | '
         'optimizer GiB | temporaries GiB | total GiB | HBM GiB | fits | '
         'over none | live peak GiB | peak over none | XLA TFLOP | '
         'FLOPs over none | compile s wall / CPU (load) | commit |',
         '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
         '---|']
  deciding = latest(cells)
  missing = []
  for size in SIZES:
    for slice_name, topology in SLICES:
      none = deciding.get((size, topology, 'none'))
      for conditioner in CONDITIONERS:
        c = deciding.get((size, topology, conditioner))
        if c is None:
          missing.append(f'{size}/{slice_name}/{conditioner}')
          continue
        part = f'model {c["partitions"]}' + (
            ', 2-D' if c['dims'] == 2 else '') + (
                f', remat {c["remat"]}' if c['remat'] != 'none' else '')
        over, flops_over = _over(c, none), _over(c, none, 'flops')
        fits = 'yes' if c.get('fits') else (
            'no' if 'error' not in c else f'error: {c["error"][:80]}')
        if c.get('refused'):
          fits = f'no ({c["refused"][:60]})'
        seconds = c.get('compile_seconds')
        cpu = c.get('compile_cpu_seconds')
        out.append(
            f'| {size} | {slice_name} | {conditioner} | {part} | '
            f'{_gib(c.get("params"))} | {_gib(c.get("optimizer_state"))} | '
            f'{_gib(c.get("temporaries"))} | {_gib(c.get("total"))} | '
            f'{_gib(c.get("hbm"))} | {fits} | {over} | '
            f'{_gib(c.get("peak"))} | {_over(c, none, "peak")} | '
            f'{_tflop(c.get("flops"))} | {flops_over} | '
            f'{"-" if seconds is None else f"{seconds:.0f} / {cpu:.0f}"} '
            f'({c["load_before"]:.1f}) | {c["commit"]} |')
  if missing:
    out += ['', f'Not compiled yet ({len(missing)} of '
            f'{len(SIZES) * len(SLICES) * len(CONDITIONERS)} cells; '
            '`make scale` resumes): ' + ', '.join(missing) + '.']
  out += _history(cells, deciding)
  out += [''] + [f'Note: {n}' for n in _notes()] + ['', END]
  return '\n'.join(out)


def write_section(cells: List[dict]) -> str:
  """Puts the table into BENCHMARKS.md between the markers (or at the end)."""
  markdown_section.replace(markdown(cells), BEGIN, END)
  return markdown_section.BENCHMARKS_MD


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--report_only', action='store_true')
  parser.add_argument('--budget_s', type=float, default=float('inf'),
                      help='stop starting compiles after this many seconds')
  parser.add_argument(
      '--recompile', action='append', default=[],
      metavar='SIZE/CONDITIONER/TOPOLOGY',
      help='compile only this cell (repeatable), again at the current '
      'commit, e.g. xxl/hyperprompt_global/v5e:16x16; the report keeps the '
      'earlier compile as history')
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  for name in ('size', 'conditioner', 'topology'):
    parser.add_argument(f'--{name}', help=argparse.SUPPRESS)
  parser.add_argument('--partitions', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--dims', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--remat', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args)
    return
  if not args.report_only:
    run(args.budget_s, {tuple(c.split('/')) for c in args.recompile})
  print('wrote', write_section(_load()))


if __name__ == '__main__':
  main()
