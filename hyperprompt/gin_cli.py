"""Command-line gin plumbing shared by the small tools (params, export).

Flags, as t5x's binaries take them: `--gin_file=FILE` (repeatable; a path,
or one relative to the repository's gin/ directory) and `--gin.NAME=VALUE`
(a binding, e.g. `--gin.NUM_TASKS=8`); `--gin_bindings=NAME=VALUE` works too.
"""
import argparse
import os
from typing import List, Sequence, Tuple

import gin

from hyperprompt import network
from hyperprompt.config import T5Config

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'gin')


def parse(parser: argparse.ArgumentParser,
          argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
  """Parses `argv` with `parser` plus the gin flags; returns (args, bindings)."""
  parser.add_argument('--gin_file', action='append', default=[],
                      help='gin file(s), composed in order')
  parser.add_argument('--gin_bindings', action='append', default=[],
                      help='gin binding(s), NAME=VALUE')
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith('--gin.'):
      bindings.append(arg[len('--gin.'):])
    else:
      rest.append(arg)
  args = parser.parse_args(rest)
  return args, args.gin_bindings + bindings


def load(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses the gin files and bindings (after clearing gin's state)."""
  if not gin_files:
    raise ValueError('Pass at least one --gin_file (a size file and a '
                     'conditioner file, e.g. models/sizes/t5_1_1_xxl.gin and '
                     'models/conditioners/hyperprompt_global.gin).')
  paths = []
  for name in gin_files:
    path = name if os.path.exists(name) else os.path.join(GIN_DIR, name)
    if not os.path.exists(path):
      raise FileNotFoundError(f'gin file {name!r} not found (neither as a path '
                              f'nor under {GIN_DIR}).')
    paths.append(path)
  gin.clear_config()
  gin.parse_config_files_and_bindings(paths, bindings)


def transformer() -> network.Transformer:
  """The Transformer the parsed gin describes: T5Config + its conditioner."""
  try:
    gin.query_parameter('network.Transformer.conditioner')
  except ValueError as e:
    raise ValueError(
        'No conditioner is bound: add a file from gin/models/conditioners/ '
        '(none.gin for plain multi-task T5).') from e
  config = gin.get_configurable(T5Config)()
  return gin.get_configurable(network.Transformer)(config=config)
