"""Compiles a training run for a TPU slice that is not here, and says whether
it fits (as MaxText's train_compile.py does for MaxText).

    hyperprompt compile --gin_file=models/sizes/t5_1_1_xxl.gin \\
        --gin_file=models/conditioners/hyperprompt_global.gin \\
        --gin_file=runs/train.gin --gin.MODEL_DIR=\\"/tmp/unused\\" ... \\
        --topology=v5e:16x16 [--eval_steps]

The same gin files and bindings as `hyperprompt train`; `--topology` names the
slice (`v5e:16x16`, `v4:4x4x8`, `v5p:2x2x1`, `v6e:2x2`: libtpu's topology
names; `cpu:8` for 8 host devices). With libtpu installed
(`pip install 'jax[tpu]'`) JAX builds that slice's devices without a TPU
(`jax.experimental.topologies`) and XLA's TPU compiler compiles the real
train step for them, with exactly the shardings `runner.train` gives it: the
state, shardings and step come from `hyperprompt.train_state` (and the
evaluation steps from `hyperprompt.evaluation`), which the runner uses too. Nothing is allocated; the model directory is not touched.

Printed, per device: parameters and optimizer state (their sharded shapes),
the batch, XLA's temporaries, the total against the device's HBM (table
below), XLA's peak of the buffers live at once (where the backend reports
it), the step's FLOPs, its collectives and their bytes, and the compile
time. When it does not fit the command fails (exit 1) naming the largest
buffers and what to try.
"""
import argparse
import dataclasses
import inspect
import os
import re
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hyperprompt import libtpu_options

GiB = 1024**3

# HBM per JAX device, by `device_kind`. Source: Google Cloud TPU system
# architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e, /v3;
# read 2026-12): v3 32 GiB and v4 32 GiB per chip, each chip's two
# TensorCores appear as two devices in libtpu's v3/v4 topologies, so 16 GiB
# each; v5e 16 GiB, v5p 95 GiB (one megacore device per chip), v6e 32 GiB.
HBM_BYTES = {
    'TPU v3': 16 * GiB,
    'TPU v4': 16 * GiB,
    'TPU v5 lite': 16 * GiB,
    'TPU v5': 95 * GiB,
    'TPU v6 lite': 32 * GiB,
}

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all',
               'collective-permute')
# `%name = f32[8,128]{1,0} all-gather(` or `= (f32[..], bf16[..]) all-reduce-
# start(`: the result shape(s) and the collective.
_HLO_OP = re.compile(r'=\s*(\(.*?\)|\S+)\s+(' + '|'.join(COLLECTIVES) +
                     r')(-start)?\(')
_HLO_SHAPE = re.compile(r'([a-z]+[0-9]*)\[([0-9,]*)\]')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2,
                'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8,
                'f64': 8, 'c64': 8, 'c128': 16}


def format_bytes(n: int) -> str:
  """'12.34 GiB', or MiB below a tenth of a GiB; right-aligned."""
  if n >= GiB / 10:
    return f'{n / GiB:8.2f} GiB'
  return f'{n / 2**20:8.1f} MiB'


def topology_devices(topology: str) -> List[Any]:
  """The devices of `topology`: a libtpu topology name, or 'cpu:N'."""
  import jax  # pylint: disable=g-import-not-at-top
  kind, _, shape = topology.partition(':')
  if kind == 'cpu':
    if not shape.isdigit():
      raise ValueError(f"--topology={topology}: write 'cpu:N', e.g. cpu:8.")
    devices = jax.devices('cpu')
    if len(devices) != int(shape):
      raise ValueError(
          f'--topology={topology} needs {shape} host devices; this process '
          f'has {len(devices)} (the command sets jax_num_cpu_devices before '
          'JAX starts; call topology_devices before any other JAX use).')
    return devices
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # libtpu takes a machine-wide lock when loaded; compiling for a topology
  # uses no TPU, so it must neither wait for nor block another process that
  # loaded libtpu (a training run, a parallel test).
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  libtpu_options.set_defaults()
  try:
    return list(topologies.get_topology_desc(
        platform='tpu', topology_name=topology).devices)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'Cannot build TPU topology {topology!r} ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}). Install libtpu '
        "(pip install 'jax[tpu]' at the installed jax version) and use a "
        'name like v5e:4x4, v5e:16x16, v4:4x4x8.') from None


def train_bindings() -> Dict[str, Any]:
  """runner.train's arguments as the parsed gin configuration gives them."""
  import gin  # pylint: disable=g-import-not-at-top
  from hyperprompt import runner  # pylint: disable=g-import-not-at-top
  defaults = {name: p.default for name, p in
              inspect.signature(runner.train).parameters.items()
              if p.default is not inspect.Parameter.empty}
  return {**defaults, **gin.get_bindings(runner.train)}


def _per_device_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize
             for x in jax.tree.leaves(tree))


def largest_buffers(tree, n: int = 5) -> List[Tuple[str, int]]:
  """(path, per-device bytes) of the `n` largest leaves."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  sizes = [(jax.tree_util.keystr(path),
            int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize)
           for path, x in jax.tree_util.tree_leaves_with_path(tree)]
  return sorted(sizes, key=lambda s: -s[1])[:n]


def collectives(hlo_text: str) -> Dict[str, Tuple[int, int]]:
  """{collective: (count, result bytes per device)} in compiled HLO text."""
  out = {}
  for shapes, op, _ in _HLO_OP.findall(hlo_text):
    size = 0
    for dtype, dims in _HLO_SHAPE.findall(shapes):
      n = 1
      for d in filter(None, dims.split(',')):
        n *= int(d)
      size += n * _DTYPE_BYTES.get(dtype, 4)
    count, total = out.get(op, (0, 0))
    out[op] = (count + 1, total + size)
  return out


@dataclasses.dataclass
class Report:
  """What one compiled step costs on one device (bytes unless named)."""
  step: str
  topology: str
  device_kind: str
  num_devices: int
  mesh: Mapping[str, int]
  params: int
  optimizer_state: int
  batch: int
  hbm: Optional[int]
  compile_seconds: float
  # CPU time of this process while compiling (all threads): on a shared
  # machine the wall time mostly measures the other users.
  compile_cpu_seconds: float
  largest: List[Tuple[str, int]]
  # XLA's numbers; all None when the step was refused for lack of HBM, by
  # XLA's TPU compiler or before compiling because the state alone exceeds
  # HBM (then `refused` says which).
  arguments: Optional[int] = None  # All inputs: params, optimizer, batch.
  outputs: Optional[int] = None
  aliased: Optional[int] = None  # Outputs written into donated inputs.
  temporaries: Optional[int] = None
  generated_code: Optional[int] = None
  # XLA's peak of the buffers live at once, inputs included, where the
  # backend reports it (XLA:TPU does). On TPU `total` is larger (by 0.4 to
  # 3.7 GB on T5.1.1 base to XXL): XLA's temporaries reserve more than the
  # buffers live at any one moment.
  peak: Optional[int] = None
  flops: Optional[float] = None
  collectives: Dict[str, Tuple[int, int]] = dataclasses.field(
      default_factory=dict)
  refused: Optional[str] = None

  @property
  def total(self) -> Optional[int]:
    """Live at the step's peak, as XLA plans it: inputs, outputs not written
    in place, temporaries and the program itself."""
    if self.refused:
      return None
    return (self.arguments + self.outputs - self.aliased + self.temporaries +
            self.generated_code)

  @property
  def fits(self) -> bool:
    if self.refused:
      return False
    return self.hbm is None or self.total <= self.hbm

  def table(self) -> str:
    g = format_bytes
    hbm = 'unknown' if self.hbm is None else g(self.hbm).strip()
    lines = [
        f'{self.step} step on {self.topology} ({self.num_devices} x '
        f'{self.device_kind}), mesh {dict(self.mesh)}; per device:',
        f'  parameters        {g(self.params)}',
        f'  optimizer state   {g(self.optimizer_state)}',
        f'  batch             {g(self.batch)}',
    ]
    if self.refused:
      return '\n'.join(lines + [f'  refused: {self.refused}'])
    lines += [
        f'  inputs (XLA)      {g(self.arguments)}  (the above, padded to '
        'device tiles)',
        f'  temporaries       {g(self.temporaries)}',
        f'  outputs (new)     {g(self.outputs - self.aliased)}',
        f'  program           {g(self.generated_code)}',
        f'  total             {g(self.total)}  of {hbm} HBM '
        f'({"fits" if self.fits else "DOES NOT FIT"})',
        *([f'  live at the peak  {g(self.peak)}  (XLA\'s peak of live '
           'buffers, inputs included; the total reserves more)']
          if self.peak else []),
        f'  FLOPs             {self.flops:.4g}',
        f'  compile time      {self.compile_seconds:.1f} s '
        f'({self.compile_cpu_seconds:.1f} s CPU)',
        '  collectives:',
    ]
    for op, (count, size) in sorted(self.collectives.items()):
      lines.append(f'    {op:20s} {count:5d} ops {g(size)}')
    return '\n'.join(lines)

  def advice(self) -> str:
    """Why it does not fit and what to try (for the error message)."""
    names = ', '.join(f'{p} {b / GiB:.2f} GiB' for p, b in self.largest)
    if self.refused:
      need = self.refused
    else:
      need = (f'It needs {self.total / GiB:.2f} GiB per device, above the '
              f'{self.hbm / GiB:.0f} GiB of HBM of a {self.device_kind} '
              f'(temporaries {self.temporaries / GiB:.2f} GiB).')
    return (
        f'The {self.step} step does not fit on {self.topology}. {need} '
        f'Parameters {self.params / GiB:.2f} GiB and optimizer state '
        f'{self.optimizer_state / GiB:.2f} GiB per device; the largest state '
        f'buffers per device: {names}. Try: more model partitions '
        '(--gin.NUM_PARTITIONS), 2-D parameter sharding '
        '(--gin.partitioning.Partitioner.parameter_partitioning_dims=2), '
        'remat (--gin.REMAT_POLICY=\\"full\\"), a smaller --gin.BATCH_SIZE, '
        'or a larger slice.')


def _compile(step, topology, devices, partitioner, lowered, state, batch,
             params) -> Report:
  """Compiles `lowered` and reports; `state` is every non-batch input (the
  TrainState, or the params alone), `params` its parameters."""
  state_bytes = _per_device_bytes(state)
  params_bytes = _per_device_bytes(params)
  report = Report(
      step=step, topology=topology, device_kind=devices[0].device_kind,
      num_devices=len(devices), mesh=dict(partitioner.mesh.shape),
      params=params_bytes, optimizer_state=state_bytes - params_bytes,
      batch=_per_device_bytes(batch),
      hbm=HBM_BYTES.get(devices[0].device_kind), compile_seconds=0.0,
      compile_cpu_seconds=0.0,
      largest=largest_buffers(state))
  if report.hbm is not None and state_bytes > report.hbm:
    report.refused = (f'Parameters and optimizer state alone need '
                      f'{state_bytes / GiB:.2f} GiB per device, above the '
                      f'{report.hbm / GiB:.0f} GiB of HBM (not compiled).')
    return report
  start, cpu_start = time.perf_counter(), time.process_time()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    # XLA:TPU refuses a program that cannot fit; that is an answer here.
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    report.compile_seconds = time.perf_counter() - start
    report.compile_cpu_seconds = time.process_time() - cpu_start
    report.refused = 'XLA: ' + ' '.join(str(e).split())
    return report
  report.compile_seconds = time.perf_counter() - start
  report.compile_cpu_seconds = time.process_time() - cpu_start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  report.arguments = memory.argument_size_in_bytes
  report.outputs = memory.output_size_in_bytes
  report.aliased = memory.alias_size_in_bytes
  report.temporaries = memory.temp_size_in_bytes
  report.generated_code = memory.generated_code_size_in_bytes
  report.peak = getattr(memory, 'peak_memory_in_bytes', None) or None
  report.flops = float((cost or {}).get('flops', 0.0))
  report.collectives = collectives(compiled.as_text())
  return report


def compile_train(topology: str, *, eval_steps: bool = False,
                  bindings: Optional[Mapping[str, Any]] = None
                  ) -> List[Report]:
  """Compiles runner.train's step (and with `eval_steps` evaluation's scoring
  and decoding steps, at the training batch size) for `topology`, configured
  by the parsed gin (or `bindings`: runner.train's keyword arguments, for
  callers without gin)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from hyperprompt import train_state  # pylint: disable=g-import-not-at-top
  devices = topology_devices(topology)
  cfg = dict(train_bindings() if bindings is None else bindings)
  model = cfg['model']
  partitioner = cfg['partitioner'](devices=devices)
  shapes = train_state.input_shapes(model, cfg['task_feature_lengths'],
                                    cfg['batch_size'])
  params, params_axes = train_state.abstract_params(model, shapes,
                                                    partitioner)
  optimizer = cfg['make_optimizer'](params)
  shardings = train_state.state_shardings(partitioner, optimizer, params,
                                          params_axes)
  state = train_state.abstract_state(optimizer, params, shardings)
  batch_shapes = dict(shapes)
  dec = shapes['decoder_input_tokens']
  batch_shapes.update(decoder_target_tokens=dec, decoder_loss_weights=dec)
  if model.num_tasks is None:
    batch_shapes.pop('task_ids')
  batch = {k: jax.ShapeDtypeStruct(s, jnp.int32,
                                   sharding=partitioner.data_sharding)
           for k, s in batch_shapes.items()}
  rng = jax.eval_shape(lambda: jax.random.key(
      0, impl=cfg.get('prng_impl', 'threefry2x32')))

  step = train_state.jit_train_step(model, optimizer, partitioner, shardings)
  reports = [_compile('train', topology, devices, partitioner,
                      step.lower(state, batch, rng), state, batch,
                      state.params)]
  if eval_steps:
    # Evaluation's own jitted functions, on the train state's parameters.
    from hyperprompt import evaluation  # pylint: disable=g-import-not-at-top
    from hyperprompt import models  # pylint: disable=g-import-not-at-top
    score_batch = dict(batch)
    decode_batch = {k: v for k, v in batch.items()
                    if k in models.INPUT_FEATURES}
    for name, jitted, inputs in (
        ('score', evaluation.jit_score(model, partitioner), score_batch),
        ('decode', evaluation.jit_predict(model, partitioner), decode_batch)):
      reports.append(_compile(name, topology, devices, partitioner,
                              jitted.lower(state.params, inputs),
                              state.params, inputs, state.params))
  return reports


def main(argv: Optional[Sequence[str]] = None) -> None:
  """`hyperprompt compile`: gin flags as `train`, plus --topology."""
  from hyperprompt import gin_cli  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv[1:] if argv is None else argv)
  files, bindings, rest = gin_cli.split_gin_flags(argv)
  parser = argparse.ArgumentParser(
      prog='hyperprompt compile',
      description='Compile the train step for a TPU topology and report its '
      'per-device memory, FLOPs and collectives (no TPU needed).')
  gin_cli.add_flags(parser)
  parser.add_argument('--topology', required=True,
                      help='v5e:16x16, v4:4x4x8, ... or cpu:N')
  parser.add_argument('--eval_steps', action='store_true',
                      help="also compile evaluation's scoring and decoding "
                      'steps')
  args = parser.parse_args(rest)
  kind, _, count = args.topology.partition(':')
  if kind == 'cpu' and count.isdigit():
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_num_cpu_devices', int(count))
  gin_cli.parse_gin(files, bindings,
                    gin_cli.search_paths(args.gin_search_paths))
  gin_cli.check_macro_values()
  reports = compile_train(args.topology, eval_steps=args.eval_steps)
  for report in reports:
    print(report.table())
  too_big = [r for r in reports if not r.fits]
  if too_big:
    raise SystemExit(too_big[0].advice())


if __name__ == '__main__':
  from hyperprompt import cli_errors  # pylint: disable=g-import-not-at-top
  cli_errors.exit_on_error(main, sys.argv[1:])
