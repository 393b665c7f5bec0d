"""Memory and FLOPs of full vs conditioning-only training, without timing.

Everything here is deterministic (the same on any CPU, under any load):
byte counts of the train state (parameters and optimizer state) and XLA's
`memory_analysis()` and `cost_analysis()` of the compiled step, built by
`train_state` exactly as `runner.train` builds it. Nothing is initialised or
run: the step is compiled for abstract parameters.

    python -m bench.memory            # T5.1.1-small, writes bench/memory.json
    python -m bench.run --report_only # puts it into BENCHMARKS.md
"""
import argparse
import json
import os
import sys
from typing import Dict

import jax

from bench import machine
from bench import ours
from bench import workload
from hyperprompt import models
from hyperprompt import partitioning
from hyperprompt import train_state
from hyperprompt import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, 'bench', 'memory.json')

# (conditioner, what trains): full and conditioning-only for each method
# that has a conditioning-only row in the timed benchmark.
ROWS = (('none', 'all'),
        ('prefix_tuning', 'all'), ('prefix_tuning', 'conditioning'),
        ('prefix_tuning_decoder', 'conditioning'),
        ('hyperprompt_global', 'all'), ('hyperprompt_global', 'conditioning'))


def step_cost(cfg, conditioner_name: str, batch, *, num_tasks: int,
              train_params: str) -> Dict:
  """State bytes, XLA memory and FLOPs of one compiled training step."""
  model, conditioner = ours.build_model(cfg, conditioner_name, num_tasks)
  partitioner = partitioning.Partitioner()
  batch = model.validate_batch(batch)
  shapes = {k: batch[k].shape for k in models.INPUT_FEATURES}
  params, params_axes = train_state.abstract_params(model, shapes,
                                                    partitioner)
  optimizer = trainer.make_optimizer(params, train=train_params)
  shardings = train_state.state_shardings(partitioner, optimizer, params,
                                          params_axes)
  state = train_state.abstract_state(optimizer, params, shardings)
  step = train_state.jit_train_step(model, optimizer, partitioner, shardings)
  compiled = step.lower(state, partitioner.global_batch(batch),
                        jax.random.key(0)).compile()
  memory = compiled.memory_analysis()
  b, inputs = batch['encoder_input_tokens'].shape
  return {
      'conditioner': conditioner_name, 'train_params': train_params,
      'state_bytes': ours.state_bytes(state),
      'xla_memory_bytes': {
          'arguments': memory.argument_size_in_bytes,
          'outputs': memory.output_size_in_bytes,
          'aliased': memory.alias_size_in_bytes,
          'temporaries': memory.temp_size_in_bytes,
      },
      'xla_flops': float(compiled.cost_analysis()['flops']),
      'analytic_flops': ours.step_flops(
          cfg, conditioner, num_tasks, train_params, b, inputs,
          batch['decoder_target_tokens'].shape[1]),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', default='small')
  parser.add_argument('--out', default=DEFAULT_OUT)
  args = parser.parse_args(argv)
  # The code that runs is the code at the start.
  commit = machine.code_commit()
  from bench import run  # pylint: disable=g-import-not-at-top
  b, i, t = run.BATCH_SHAPE
  cfg = workload.t5_config(args.shape, dropout_rate=run.DROPOUT_RATE)
  batch = workload.make_batch(cfg, workload.BatchShape(b, i, t),
                              run.NUM_TASKS)
  rows = []
  for name, train in ROWS:
    rows.append(step_cost(cfg, name, batch, num_tasks=run.NUM_TASKS,
                          train_params=train))
    print(json.dumps(rows[-1]), flush=True)
  with open(args.out, 'w') as f:
    json.dump({'command': 'python -m bench.memory ' + ' '.join(
        sys.argv[1:] if argv is None else argv), 'commit': commit,
               'shape': args.shape, 'batch_shape': [b, i, t],
               'num_tasks': run.NUM_TASKS, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
