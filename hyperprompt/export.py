"""Export each task's key/value prefixes to a file for `Precomputed`.

    python -m hyperprompt.export --gin_file=... --checkpoint=MODEL_DIR \\
      --output=prefixes.npz [--step=N] [--gin.NAME=VALUE ...]

Works for any prefix-producing conditioner (HyperPrompt share/sep/global,
prefix tuning, precomputed). The file format is described in
hyperprompt/conditioning/precomputed.py; it records the run's task names,
and is replaced only once the new one is complete. A conditioner without
prefixes (none.gin) is refused instead of writing an empty file. Serving the backbone with
`gin/models/conditioners/precomputed.gin` and `PREFIX_FILE` set to the file
gives the same logits as the exported model, without its hypernetwork.
"""
import argparse
import sys
from typing import Dict

import jax.numpy as jnp
import numpy as np

from hyperprompt import checkpoints
from hyperprompt import cli_errors
from hyperprompt import gin_cli
from hyperprompt import models
from hyperprompt import operative_config
from hyperprompt import quiet_logs
from hyperprompt.conditioning import precomputed
from hyperprompt.network import Transformer


def export_prefixes(model: Transformer, params) -> Dict[str, np.ndarray]:
  """Every task's prefixes: {'{stack}_{kind}_{key|value}': [T, L, l, h, d_h]}.

  Runs the conditioner once on the task ids 0..T-1.
  """
  if model.conditioner is None:
    raise ValueError('The model has no conditioner, so no prefixes.')
  all_tasks = jnp.arange(model.conditioner.num_tasks)
  conditioning = model.apply({'params': params}, all_tasks,
                             method=model.condition)
  prefixes = precomputed.stack_prefixes(conditioning)
  if not prefixes:
    raise ValueError(
        f'{type(model.conditioner).__name__} produces no key/value prefixes, '
        'so there is nothing to export; pass the conditioner file the run '
        'was trained with (HyperPrompt or prefix tuning).')
  return prefixes


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--checkpoint', required=True,
                      help="a run's MODEL_DIR or its checkpoints directory")
  parser.add_argument('--step', type=int, default=None,
                      help='checkpoint step (default: the latest)')
  parser.add_argument('--output', required=True, help='the .npz to write')
  args, bindings = gin_cli.parse(parser, sys.argv[1:] if argv is None
                                 else argv)
  gin_cli.parse_gin(args.gin_file, bindings, args.gin_search_paths)
  model = gin_cli.transformer()
  operative_config.check_matches(args.checkpoint)
  params = checkpoints.restore_params(
      args.checkpoint, args.step,
      expected_params=models.param_shapes(model))
  prefixes = export_prefixes(model, params)
  task_names = checkpoints.saved_task_names(args.checkpoint)
  precomputed.save_prefixes(args.output, prefixes, task_names)
  for name, array in sorted(prefixes.items()):
    print(f'{name}: {array.shape}')
  print(f'Wrote {args.output}.')


if __name__ == '__main__':
  quiet_logs.configure(quiet_logs.WARNING)
  cli_errors.exit_on_error(main, sys.argv[1:])
