"""The conditioning methods, as the files of gin/models/conditioners/ define
them: nothing here lists them again.

A method's name is its file's name ('none', 'hyperprompt_global', ...). The
file's first line names it for readers (`# HyperPrompt-Global: ...`), and its
`network.Transformer.conditioner = @module.Class()` binding says which class
it is. A new method is a new gin file (and its module); benchmarks, the study
and the tests pick it up from here.
"""
import dataclasses
import functools
import importlib
import os
import re
from typing import Tuple, Type

from hyperprompt import gin_cli
from hyperprompt.conditioning.interface import Conditioner

_DISPLAY_LINE = re.compile(r'\A# ([^:\n]+):')
_IMPORT_LINE = re.compile(r'^from (hyperprompt\.conditioning) import (\w+)$',
                          re.MULTILINE)
_BINDING = re.compile(
    r'^network\.Transformer\.conditioner = @(\w+)\.(\w+)\(\)$', re.MULTILINE)
# A macro the file reads: `%NAME`.
_MACRO_USE = re.compile(r'%([A-Z_][A-Z0-9_]*)')


@dataclasses.dataclass(frozen=True)
class Method:
  """One conditioning method.

  Attributes:
    name: the gin file's name without `.gin`, the key everywhere.
    display_name: how tables and charts name it.
    conditioner: the Conditioner class the file binds.
    needs: the macros the file reads besides NUM_TASKS (e.g. PREFIX_FILE for
      'precomputed', which serves exported prefixes instead of learning them).
  """
  name: str
  display_name: str
  conditioner: Type[Conditioner]
  needs: Tuple[str, ...]

  @property
  def gin_file(self) -> str:
    """The file, relative to a gin search path (as `--gin_file` takes it)."""
    return f'models/conditioners/{self.name}.gin'


def conditioners_dir() -> str:
  """The shipped gin/models/conditioners/ directory."""
  for path in gin_cli.gin_search_paths():
    directory = os.path.join(path, 'models', 'conditioners')
    if os.path.isdir(directory):
      return directory
  raise FileNotFoundError(
      'No models/conditioners/ in the gin search paths '
      f'{gin_cli.gin_search_paths()}: is hyperprompt installed with its gin '
      'files?')


def _read(path: str) -> Method:
  with open(path) as f:
    text = f.read()
  name = os.path.basename(path)[:-len('.gin')]
  display = _DISPLAY_LINE.match(text)
  binding = _BINDING.search(text)
  if not (display and binding):
    raise ValueError(
        f'{path}: a conditioner file starts with "# Display name: ..." and '
        'binds network.Transformer.conditioner = @module.Class().')
  module_name, class_name = binding.groups()
  packages = {module: package for package, module in
              _IMPORT_LINE.findall(text)}
  if module_name not in packages:
    raise ValueError(f'{path}: binds @{module_name}.{class_name}() without '
                     f'`from hyperprompt.conditioning import {module_name}`.')
  module = importlib.import_module(f'{packages[module_name]}.{module_name}')
  needs = tuple(dict.fromkeys(m for m in _MACRO_USE.findall(text)
                              if m != 'NUM_TASKS'))
  return Method(name=name, display_name=display.group(1).strip(),
                conditioner=getattr(module, class_name), needs=needs)


@functools.cache
def methods() -> Tuple[Method, ...]:
  """Every method: 'none' (the baseline tables compare with) first, then by
  name."""
  directory = conditioners_dir()
  files = sorted((f for f in os.listdir(directory) if f.endswith('.gin')),
                 key=lambda f: (f != 'none.gin', f))
  return tuple(_read(os.path.join(directory, f)) for f in files)


def names(learned: bool = False) -> Tuple[str, ...]:
  """The methods' names; with `learned`, only those that learn their
  conditioning from data (need nothing besides NUM_TASKS)."""
  return tuple(m.name for m in methods() if not (learned and m.needs))


def method(name: str) -> Method:
  """The method called `name` (a file name in gin/models/conditioners/)."""
  for m in methods():
    if m.name == name:
      return m
  raise ValueError(f'Unknown conditioner {name!r}; the files in '
                   f'{conditioners_dir()} define {", ".join(names())}.')


def display_name(name: str) -> str:
  return method(name).display_name


def conditioner(name: str, num_tasks: int, **overrides) -> Conditioner:
  """Method `name`'s Conditioner with its code defaults and `overrides`."""
  return method(name).conditioner(num_tasks, **overrides)
