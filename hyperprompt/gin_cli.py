"""Gin plumbing shared by every command line (train/eval/infer and the tools).

Flags, as t5x's binaries take them: `--gin_file=FILE` (repeatable; a path, or
one relative to the installed `hyperprompt/gin` data or the repository's
gin/ directory) and `--gin.NAME=VALUE` (a binding applied after all files,
e.g. `--gin.NUM_TASKS=8`); `--gin_bindings=NAME=VALUE` works too.
"""
import argparse
import importlib.util
import logging
import os
from typing import List, Sequence, Tuple

import gin

from hyperprompt import network
from hyperprompt.config import T5Config

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'gin')


def gin_search_paths() -> List[str]:
  """The installed gin package data, then the repository's gin/ directory."""
  paths = []
  spec = importlib.util.find_spec('hyperprompt.gin')
  if spec is not None and spec.submodule_search_locations:
    paths.extend(spec.submodule_search_locations)
  if os.path.isdir(GIN_DIR):
    paths.append(GIN_DIR)
  return list(dict.fromkeys(os.path.abspath(p) for p in paths))


def split_gin_flags(argv: Sequence[str]):
  """(gin files, gin bindings, other args) from the command line."""
  files, bindings, rest = [], [], []
  it = iter(argv)
  for arg in it:
    if arg.startswith('--gin_file='):
      files.append(arg.split('=', 1)[1])
    elif arg == '--gin_file':
      files.append(next(it))
    elif arg.startswith('--gin.'):
      if '=' not in arg:
        raise SystemExit(f'{arg}: write --gin.NAME=VALUE.')
      bindings.append(arg[len('--gin.'):])
    elif arg.startswith('--gin_bindings='):
      bindings.append(arg.split('=', 1)[1])
    else:
      rest.append(arg)
  return files, bindings, rest


def _not_a_search_miss(record: logging.LogRecord) -> bool:
  # gin logs every search-path miss (at ERROR) while resolving a file.
  return not record.pathname.endswith(os.path.join('gin', 'resource_reader.py'))


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files (each named in its error) and then the bindings."""
  logging.getLogger().addFilter(_not_a_search_miss)
  if not files:
    raise SystemExit(
        'Pass --gin_file at least once, e.g. --gin_file=runs/demo.gin, or a '
        'size, a conditioner and a run file (models/sizes/tiny.gin '
        'models/conditioners/hyperprompt_global.gin runs/train.gin).')
  gin.clear_config()
  for path in gin_search_paths():
    gin.add_config_file_search_path(path)
  for path in files:
    try:
      gin.parse_config_file(path)
    except Exception as e:  # gin raises several types; all are config errors.
      raise SystemExit(f'Error in gin file {path}: {type(e).__name__}: '
                       f'{e}') from e
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except Exception as e:
      raise SystemExit(f'Error in --gin.{binding}: {type(e).__name__}: '
                       f'{e}') from e
  try:
    gin.finalize()
  except Exception as e:
    raise SystemExit(f'Error in the gin configuration ({", ".join(files)}): '
                     f'{e}') from e


def parse(parser: argparse.ArgumentParser,
          argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
  """Parses `argv` with `parser` plus the gin flags; returns (args, bindings).

  The gin files are in `args.gin_file`.
  """
  files, bindings, rest = split_gin_flags(argv)
  args = parser.parse_args(rest)
  args.gin_file = files
  return args, bindings


def load(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses the gin files and bindings (after clearing gin's state)."""
  parse_gin(gin_files, bindings)


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
