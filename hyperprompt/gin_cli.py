"""Gin plumbing shared by every command line (train/eval/infer and the tools).

Flags, as t5x's binaries take them: `--gin_file=FILE` (repeatable; a path, or
one relative to `--gin_search_paths`, the installed `hyperprompt/gin` data or
the repository's gin/ directory), `--gin.NAME=VALUE` (a binding applied after
all files, e.g. `--gin.BATCH_SIZE=8`; `--gin_bindings=NAME=VALUE` works too)
and `--gin_search_paths=DIR[,DIR...]` (comma-separated, repeatable).

A macro bound but never used (`--gin.BATCH_SIZ=8`) is an error naming it and
the closest macro that is used. A macro that only the shipped gin files
assign may go unused (each composition uses some of them); one the user
assigns, on the command line or in their own gin file, may not, even if a
shipped file also assigns it (`--gin.PREFIX_FILE=...` without
precomputed.gin would otherwise be silently ignored).
"""
import argparse
import difflib
import glob
import importlib.util
import logging
import os
import re
from typing import Dict, List, Optional, Sequence, Set, Tuple

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


def add_flags(parser: argparse.ArgumentParser) -> None:
  """Lists the gin flags (and --verbose) in `parser`'s --help.

  --gin_file and --gin.NAME=VALUE are taken out of the command line by
  `split_gin_flags` before `parser` sees it; they are added here so that
  --help shows them.
  """
  parser.add_argument(
      '--gin_file', action='append', default=[], metavar='FILE',
      help='a gin file (repeatable): a path, or one relative to '
      '--gin_search_paths or the shipped gin/ directory')
  parser.add_argument(
      '--gin.NAME', dest='gin_binding_help', metavar='VALUE',
      help='a gin binding applied after every file, e.g. '
      '--gin.BATCH_SIZE=8 or --gin.MODEL_DIR=\\"/tmp/run\\" (repeatable)')
  parser.add_argument(
      '--gin_search_paths', action='append', default=[], metavar='DIRS',
      help='comma-separated directories to resolve gin files in, '
      'searched before the shipped gin/ (as t5x)')
  parser.add_argument(
      '--verbose', action='store_true',
      help='show tracebacks (also: HYPERPROMPT_VERBOSE=1)')


def search_paths(flag_values: Sequence[str]) -> List[str]:
  """The directories of repeated, comma-separated --gin_search_paths."""
  return [p for value in flag_values for p in value.split(',') if p]


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


def parse_gin(files: Sequence[str], bindings: Sequence[str],
              search_dirs: Sequence[str] = (),
              read_by_caller: Sequence[str] = ()) -> None:
  """Parses gin files (each named in its error) and then the bindings.

  `search_dirs` are searched before the shipped gin directories. Raises
  SystemExit naming the problem, including macros bound but never used;
  `read_by_caller` are macros the caller queries itself (params'
  --all_methods reads NUM_TASKS), which count as used.
  """
  logging.getLogger().addFilter(_not_a_search_miss)
  if not files:
    raise SystemExit(
        'Pass --gin_file at least once, e.g. --gin_file=runs/demo.gin, or a '
        'size, a conditioner and a run file (models/sizes/tiny.gin '
        'models/conditioners/hyperprompt_global.gin runs/train.gin).')
  gin.clear_config()
  for path in search_dirs:
    if not os.path.isdir(path):
      raise SystemExit(f'--gin_search_paths: {path} is not a directory.')
  # gin tries the paths in order of addition.
  for path in [*search_dirs, *gin_search_paths()]:
    gin.add_config_file_search_path(path)
  for path in files:
    try:
      gin.parse_config_file(path)
    except Exception as e:  # gin raises several types; all are config errors.
      raise SystemExit(f'Error in gin file {path}: {type(e).__name__}: '
                       f'{e}') from e
  _register_decode_functions()
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except Exception as e:
      raise SystemExit(f'Error in --gin.{binding}: {type(e).__name__}: '
                       f'{e}') from e
  try:
    gin.finalize()
  except Exception as e:
    # gin appends the whole configuration to a missing macro's message.
    message = ' '.join(str(e).split(' in config string')[0].split())
    missing = re.search(r"No bindings specified for '([A-Za-z_0-9]+)/gin.macro'",
                        message)
    if missing:
      message = (f'the macro {missing[1]} is used but not bound; set it with '
                 f'--gin.{missing[1]}=VALUE')
    raise SystemExit(f'Error in the gin configuration ({", ".join(files)}): '
                     f'{message}.') from e
  _check_macros_used(_user_macros(files, bindings, search_dirs),
                     set(read_by_caller))


# The decoders a binding may name, as t5x users write
# --gin.models.EncoderDecoderModel.decode_fn=@decoding.beam_search.
DECODE_FUNCTIONS = ('greedy', 'beam_search', 'temperature_sample')
_REGISTRATION_MACRO = '_HYPERPROMPT_DECODE_FUNCTIONS'


def _register_decode_functions() -> None:
  """Registers decoding's functions with gin under `decoding.*`.

  With dynamic registration (our gin files, as t5x's) gin registers only
  what a file names, and a command-line binding cannot import; so the
  decoders are named once here, through a macro that is then removed.
  """
  gin.parse_config('\n'.join([
      'from __gin__ import dynamic_registration',
      'from hyperprompt import decoding',
      f'{_REGISTRATION_MACRO} = ['
      + ', '.join(f'@decoding.{name}' for name in DECODE_FUNCTIONS) + ']']))
  del gin.config._CONFIG[(_REGISTRATION_MACRO, 'gin.macro')]  # pylint: disable=protected-access


_MACRO_LINE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)\s*=', re.MULTILINE)


def _shipped_macros() -> Set[str]:
  """Macros assigned in the shipped gin files (shared defaults)."""
  names = set()
  for directory in gin_search_paths():
    for path in glob.glob(os.path.join(directory, '**', '*.gin'),
                          recursive=True):
      with open(path) as f:
        names.update(_MACRO_LINE.findall(f.read()))
  return names


def _find_gin_file(path: str, search_dirs: Sequence[str]) -> Optional[str]:
  """The file gin reads for `path`: as given, else in the first search
  directory (the user's, then the shipped ones) that has it."""
  for directory in ('', *search_dirs, *gin_search_paths()):
    candidate = os.path.join(directory, path)
    if os.path.isfile(candidate):
      return os.path.realpath(candidate)
  return None


_INCLUDE_LINE = re.compile(r'''^include\s+['"]([^'"]+)['"]''', re.MULTILINE)


def _user_macros(files: Sequence[str], bindings: Sequence[str],
                 search_dirs: Sequence[str]) -> Set[str]:
  """Macros assigned by the command line or by gin files outside the
  shipped directories (and the user files those include)."""
  names = {m for b in bindings for m in _MACRO_LINE.findall(b.strip())}
  shipped = tuple(os.path.realpath(d) + os.sep for d in gin_search_paths())
  todo, seen = list(files), set()
  while todo:
    path = _find_gin_file(todo.pop(), search_dirs)
    if path is None or path in seen or path.startswith(shipped):
      continue
    seen.add(path)
    with open(path) as f:
      text = f.read()
    names.update(_MACRO_LINE.findall(text))
    todo.extend(_INCLUDE_LINE.findall(text))
  return names


def _macro_bindings() -> Dict[str, object]:
  """{macro name: bound value} of the parsed configuration."""
  # gin stores `NAME = value` as the parameter `value` of the configurable
  # `gin.macro` in scope NAME; there is no public accessor.
  return {scope: params.get('value')
          for (scope, selector), params in gin.config._CONFIG.items()  # pylint: disable=protected-access
          if selector == 'gin.macro'}


def _check_macros_used(user_macros: Set[str], read_by_caller: Set[str]) -> None:
  """Raises SystemExit naming each bound macro no binding refers to,
  unless only the shipped gin files assign it."""
  bound = _macro_bindings()
  used = {'/'.join(ref.scopes)
          for ref in gin.config.iterate_references(gin.config._CONFIG)  # pylint: disable=protected-access
          if ref.selector == 'gin.macro'} | read_by_caller
  unused = sorted(set(bound) - used - (_shipped_macros() - user_macros))
  if not unused:
    return
  problems = []
  for name in unused:
    close = difflib.get_close_matches(name, sorted(used), n=1)
    problems.append(name + (f' (did you mean {close[0]}?)' if close else ''))
  raise SystemExit(
      f'Gin macro{"s" if len(unused) > 1 else ""} bound but never used: '
      f'{", ".join(problems)}. Check the spelling, or remove the binding.')


def parse(parser: argparse.ArgumentParser,
          argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
  """Parses `argv` with `parser` plus the gin flags; returns (args, bindings).

  The gin files are in `args.gin_file`, the search directories in
  `args.gin_search_paths` (split at commas).
  """
  add_flags(parser)
  files, bindings, rest = split_gin_flags(argv)
  args = parser.parse_args(rest)
  args.gin_file = files
  args.gin_search_paths = search_paths(args.gin_search_paths)
  return args, bindings


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


# Macros of the shipped run files that must be positive integers.
POSITIVE_INT_MACROS = ('NUM_TASKS', 'BATCH_SIZE', 'TRAIN_STEPS',
                       'CHECKPOINT_PERIOD', 'NUM_PARTITIONS')


def check_macro_values() -> None:
  """Checks the run macros' values before anything is built or compiled.

  Raises SystemExit naming the macro, its value and what it must be: a
  NUM_TASKS of 0 would otherwise fail deep in JAX, and an unknown mixture
  after the model is set up.
  """
  bound = _macro_bindings()
  for name in POSITIVE_INT_MACROS:
    value = bound.get(name)
    if isinstance(value, gin.config.ConfigurableReference) or (
        name not in bound or value is gin.REQUIRED):
      continue  # Another macro's value, or not bound in this run.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise SystemExit(f'{name} = {value!r}: must be a positive integer '
                       f'(set it with --gin.{name}=N).')
  name = bound.get('MIXTURE_OR_TASK_NAME')
  if isinstance(name, str):
    import seqio  # pylint: disable=g-import-not-at-top
    from hyperprompt import tasks  # pylint: disable=g-import-not-at-top,unused-import
    known = sorted({*seqio.MixtureRegistry.names(),
                    *seqio.TaskRegistry.names()})
    if name not in known:
      close = difflib.get_close_matches(name, known, n=3)
      raise SystemExit(
          f'MIXTURE_OR_TASK_NAME = {name!r} is not a registered mixture or '
          'task' + (f'; did you mean {", ".join(close)}?' if close else
                    f'; the mixtures are {sorted(seqio.MixtureRegistry.names())}'
                    '.'))
