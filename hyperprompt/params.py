"""Parameter report: backbone, conditioning, total and overhead, from shapes.

    python -m hyperprompt.params \\
      --gin_file=models/sizes/t5_1_1_xxl.gin \\
      --gin_file=models/conditioners/hyperprompt_global.gin --gin.NUM_TASKS=8

Shapes come from `jax.eval_shape` of the model's init, so nothing is
allocated: T5-XXL is reported on a laptop. The conditioning parameters are
the `params['conditioner']` subtree; the overhead is conditioning / backbone.
"""
import argparse
import functools
import sys
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from hyperprompt import cli_errors
from hyperprompt import gin_cli
from hyperprompt import quiet_logs
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
  args, bindings = gin_cli.parse(parser, sys.argv[1:] if argv is None
                                 else argv)
  gin_cli.parse_gin(args.gin_file, bindings, args.gin_search_paths)
  model = gin_cli.transformer()
  counts = parameter_counts(model.config, model.conditioner)
  print(report(counts, type(model.conditioner).__name__))


if __name__ == '__main__':
  quiet_logs.configure(quiet_logs.WARNING)
  cli_errors.exit_on_error(main, sys.argv[1:])
