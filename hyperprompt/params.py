"""Parameter report: backbone, conditioning, total and overhead, from shapes.

    python -m hyperprompt.params \\
      --gin_file=models/sizes/t5_1_1_xxl.gin \\
      --gin_file=models/conditioners/hyperprompt_global.gin --gin.NUM_TASKS=8
    python -m hyperprompt.params --all_methods \\
      --gin_file=models/sizes/t5_1_1_xxl.gin --gin.NUM_TASKS=8

Shapes come from `jax.eval_shape` of the model's init, so nothing is
allocated: T5-XXL is reported on a laptop. The conditioning parameters are
the `params['conditioner']` subtree; the overhead is conditioning / backbone.
`overhead_table` is the one table of every method's overhead, which the
benchmarks and the study report too.
"""
import argparse
import functools
import sys
from typing import Dict, List, Mapping, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from hyperprompt import cli_errors
from hyperprompt import gin_cli
from hyperprompt import quiet_logs
from hyperprompt.conditioning import registry
from hyperprompt.conditioning.interface import Conditioner
from hyperprompt.config import T5Config
from hyperprompt.network import Transformer


def parameter_shapes(model: Transformer):
  """The params tree of `model` as jax.ShapeDtypeStructs (no allocation)."""
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  task_ids = jax.ShapeDtypeStruct((1,), jnp.int32)
  init = functools.partial(model.init, enable_dropout=False)
  return jax.eval_shape(init, jax.random.PRNGKey(0), tokens, tokens, tokens,
                        task_ids)['params']


def _count(tree) -> int:
  return int(sum(np.prod(x.shape, dtype=np.int64)
                 for x in jax.tree.leaves(tree)))


def parameter_counts(config: T5Config,
                     conditioner: Optional[Conditioner]) -> Dict[str, float]:
  """{'backbone', 'conditioning', 'total', 'percent'} parameter counts.

  `percent` is the conditioning overhead in percent of the backbone.
  """
  shapes = dict(parameter_shapes(Transformer(config, conditioner)))
  conditioning = _count(shapes.pop('conditioner', {}))
  backbone = _count(shapes)
  return {'backbone': backbone, 'conditioning': conditioning,
          'total': backbone + conditioning,
          'percent': 100.0 * conditioning / backbone}


def conditioning_count(config: T5Config, conditioner: Conditioner) -> int:
  """Parameters of `conditioner` alone: the model's `params['conditioner']`
  subtree, from the conditioner's own init (the backbone is not traced)."""
  task_ids = jax.ShapeDtypeStruct((1,), jnp.int32)
  shapes = jax.eval_shape(
      lambda ids: conditioner.init(jax.random.PRNGKey(0), ids, config),
      task_ids)['params']
  return _count(shapes)


def overhead_table(configs: Mapping[str, T5Config],
                   task_counts: Sequence[int],
                   methods: Optional[Sequence[str]] = None) -> List[Dict]:
  """Every method's parameter overhead at each size and task count.

  Args:
    configs: {size name: T5Config}.
    task_counts: the numbers of tasks.
    methods: names in gin/models/conditioners/ (conditioning.registry), each
      with its code defaults; default: every method that learns its
      conditioning, except 'none'.

  Returns:
    One row per size, task count and method (in that nesting): {'size',
    'tasks', 'conditioner', 'backbone', 'conditioning', 'total', 'percent'},
    `percent` the conditioning in percent of the backbone.
  """
  if methods is None:
    methods = [m for m in registry.names(learned=True) if m != 'none']
  rows = []
  for size, config in configs.items():
    backbone = parameter_counts(config, None)['backbone']
    for num_tasks in task_counts:
      for name in methods:
        count = conditioning_count(config,
                                   registry.conditioner(name, num_tasks))
        rows.append({'size': size, 'tasks': num_tasks, 'conditioner': name,
                     'backbone': backbone, 'conditioning': count,
                     'total': backbone + count,
                     'percent': 100.0 * count / backbone})
  return rows


def overhead_markdown(rows: Sequence[Mapping]) -> List[str]:
  """`overhead_table`'s rows as a markdown table: one line per method, one
  column per size and task count, `conditioning (percent)` in each cell."""
  columns = list(dict.fromkeys((r['size'], r['tasks']) for r in rows))
  cell = {(r['size'], r['tasks'], r['conditioner']): r for r in rows}
  lines = ['| conditioner | ' + ' | '.join(f'{s} T={t}' for s, t in columns)
           + ' |', '|---|' + '---:|' * len(columns),
           '| backbone parameters | ' + ' | '.join(
               f'{cell[(s, t, rows[0]["conditioner"])]["backbone"] / 1e6:,.1f}M'
               for s, t in columns) + ' |']
  for name in dict.fromkeys(r['conditioner'] for r in rows):
    lines.append(f'| {registry.display_name(name)} | ' + ' | '.join(
        f'{cell[(s, t, name)]["conditioning"] / 1e6:,.2f}M '
        f'({cell[(s, t, name)]["percent"]:.3f}%)' for s, t in columns) + ' |')
  return lines


def report(counts: Dict[str, float], name: str) -> str:
  return '\n'.join([
      f'model:        {name}',
      f'backbone:     {counts["backbone"]:>16,d}',
      f'conditioning: {counts["conditioning"]:>16,d}',
      f'total:        {counts["total"]:>16,d}',
      f'overhead:     {counts["percent"]:>15.4f}% of the backbone',
  ])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description='Parameter counts of a gin-configured model.')
  parser.add_argument(
      '--all_methods', action='store_true',
      help='the overhead of every method in gin/models/conditioners/ at the '
      "size file's size and NUM_TASKS, instead of the bound conditioner")
  args, bindings = gin_cli.parse(parser, sys.argv[1:] if argv is None
                                 else argv)
  gin_cli.parse_gin(args.gin_file, bindings, args.gin_search_paths,
                    read_by_caller=['NUM_TASKS'] if args.all_methods else [])
  if args.all_methods:
    try:
      num_tasks = gin.query_parameter('%NUM_TASKS')
    except ValueError as e:
      raise ValueError('--all_methods needs the number of tasks: add '
                       '--gin.NUM_TASKS=8 (for example).') from e
    rows = overhead_table({'model': gin.get_configurable(T5Config)()},
                          [num_tasks])
    print('\n'.join(overhead_markdown(rows)))
    return
  model = gin_cli.transformer()
  counts = parameter_counts(model.config, model.conditioner)
  print(report(counts, type(model.conditioner).__name__))


if __name__ == '__main__':
  quiet_logs.configure(quiet_logs.WARNING)
  cli_errors.exit_on_error(main, sys.argv[1:])
