"""Where a training or decoding step spends its time, by XLA operation.

    python -m bench.profile --shape small --conditioner hyperprompt_global
    python -m bench.profile --shape small --decode --batch 64

Runs a few steps under `jax.profiler.trace`, reads the Perfetto trace back,
and attributes every executed XLA instruction to its kind (matmul, fusion,
copy/transpose, loop, ...) and to the JAX operation that produced it (from
the compiled HLO's metadata). Prints the totals per step, largest first.
"""
import argparse
import collections
import glob
import gzip
import json
import re
import tempfile

import jax

from bench import ours
from bench import workload
from hyperprompt import partitioning
from hyperprompt import trainer

_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT )?%?([\w.\-]+) = [^=]*?\b([a-z\-]+)\((.*)$')
_OP_NAME = re.compile(r'op_name="([^"]+)"')


def instruction_sources(hlo_text: str):
  """HLO instruction name -> (opcode, JAX op path from metadata).

  Fusions get the op path of their root (the last instruction of the fused
  computation), which names what the fusion computes.
  """
  sources, fused_root = {}, {}
  computation = None
  for line in hlo_text.splitlines():
    if line.startswith(('%', 'ENTRY')) and '{' in line:
      computation = line.split()[0].lstrip('%') if not line.startswith(
          'ENTRY') else 'ENTRY'
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, opcode, rest = m.groups()
    op = _OP_NAME.search(rest)
    sources[name] = (opcode, op.group(1) if op else '')
    if line.lstrip().startswith('ROOT') and computation:
      fused_root[computation] = sources[name]
    calls = re.search(r'calls=%?([\w.\-]+)', rest)
    if opcode == 'fusion' and calls and calls.group(1) in fused_root:
      kind = re.search(r'kind=(\w+)', rest)
      sources[name] = (f'fusion:{kind.group(1) if kind else "?"}',
                       fused_root[calls.group(1)][1])
  return sources


def _category(name: str, opcode: str) -> str:
  if name.startswith(('ynn_fusion', 'xnn_fusion')) or opcode in (
      'dot', 'convolution'):
    return 'matmul'
  if opcode in ('copy', 'transpose') or name.startswith(
      ('copy', 'transpose')):
    return 'copy/transpose'
  if opcode == 'while':
    return 'loop'
  if opcode.startswith('fusion') or 'fusion' in name:
    return 'elementwise fusion'
  return opcode or 'other'


def _simplify(op_path: str) -> str:
  """'jit(train_step)/jvp(Transformer)/encoder/layers_3/mlp/wi_0/dot_general'
  -> 'mlp/wi_0/dot_general' (the layer index dropped, so layers add up)."""
  path = re.sub(r'^.*?jit\([^)]*\)/', '', op_path)
  path = re.sub(r'(transpose|jvp|vmap|checkpoint)\(([^)]*)\)', r'\2', path)
  path = re.sub(r'layers_\d+/', '', path)
  return '/'.join(path.split('/')[-4:])


def profile(fn, args, compiled_text: str, steps: int = 3, top: int = 25):
  """Runs `fn(*args)` (which returns the next args) `steps` times under the
  profiler; returns per-step milliseconds by kind and by (kind, JAX op)."""
  sources = instruction_sources(compiled_text)
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
      for _ in range(steps):
        args = fn(*args)
      jax.block_until_ready(args)
    path = glob.glob(f'{logdir}/**/*.trace.json.gz', recursive=True)[0]
    with gzip.open(path) as f:
      events = [e for e in json.load(f)['traceEvents'] if e.get('ph') == 'X']
  by_kind, by_op = collections.Counter(), collections.Counter()
  for e in events:
    if e['name'] not in sources:
      continue
    opcode, op_path = sources[e['name']]
    kind = _category(e['name'], opcode)
    by_kind[kind] += e['dur'] / steps / 1e3
    by_op[f'{kind}: {_simplify(op_path)}'] += e['dur'] / steps / 1e3
  return {'total_ms': sum(by_kind.values()),
          'by_kind_ms': dict(by_kind.most_common()),
          'top_ops_ms': dict(by_op.most_common(top))}


def train_step_profile(cfg, conditioner_name: str, batch, num_tasks: int):
  """Breakdown of `trainer.train_step`, jitted as the runner jits it."""
  model, _ = ours.build_model(cfg, conditioner_name, num_tasks)
  partitioner = partitioning.Partitioner()
  batch = model.validate_batch(batch)
  params, params_axes = ours.init_params(model, batch, partitioner)
  optimizer = trainer.make_optimizer(params)
  state, step = ours.train_step(model, optimizer, params, params_axes,
                                partitioner)
  device_batch = partitioner.global_batch(batch)
  rng = jax.random.PRNGKey(0)
  text = step.lower(state, device_batch, rng).compile().as_text()
  state, _ = step(state, device_batch, rng)
  return profile(lambda s, b, r: (step(s, b, r)[0], b, r),
                 (state, device_batch, rng), text)


def decode_profile(cfg, conditioner_name: str, batch, num_tasks: int):
  """Breakdown of greedy `predict_batch`."""
  model, _ = ours.build_model(cfg, conditioner_name, num_tasks)
  partitioner = partitioning.Partitioner()
  batch = model.validate_batch(batch)
  params, _ = ours.init_params(model, batch, partitioner)
  with partitioner.context():
    device_batch = partitioner.global_batch(batch)
    predict = jax.jit(model.predict_batch)
    text = predict.lower(params, device_batch).compile().as_text()
    jax.block_until_ready(predict(params, device_batch))
    # The output rides along in the args so the last decode is waited for.
    return profile(lambda p, b, _: (p, b, predict(p, b)),
                   (params, device_batch, None), text)


def _print(result):
  total = result['total_ms']
  print(f'XLA ops: {total:.1f} ms per step')
  for kind, ms in result['by_kind_ms'].items():
    print(f'  {ms:8.1f} ms {100 * ms / total:5.1f}%  {kind}')
  print('largest (kind: JAX op, summed over layers):')
  for op, ms in result['top_ops_ms'].items():
    print(f'  {ms:8.1f} ms {100 * ms / total:5.1f}%  {op}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shape', default='small')
  parser.add_argument('--conditioner', default='none')
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--dropout_rate', type=float, default=0.1)
  parser.add_argument('--decode', action='store_true',
                      help='profile greedy decoding instead of training')
  parser.add_argument('--batch', type=int,
                      default=workload.BatchShape().batch,
                      help='examples per batch (inputs 128, targets 32 '
                      'tokens)')
  args = parser.parse_args(argv)
  cfg = workload.t5_config(args.shape, args.dtype, args.dropout_rate)
  batch = workload.make_batch(cfg, workload.BatchShape(args.batch), 8)
  fn = decode_profile if args.decode else train_step_profile
  _print(fn(cfg, args.conditioner, batch, 8))


if __name__ == '__main__':
  main()
