"""gin's operative config of a run: written to MODEL_DIR/config.gin, and
compared with the current one before a checkpoint is read.

    write(model_dir)               # runner.train, once the model is built
    check_matches(model_dir)       # train (resume), eval, infer, export,
                                   # analyze: before orbax reads an array

The rule. The bindings that define what a checkpoint's parameters are and
mean must be the same as when the run was trained:
  - every parameter of `T5Config` (the model size) except the run-time knobs
    in RUNTIME_T5_CONFIG (dropout, activation dtype, rematerialisation);
  - every parameter of `network.Transformer`, hence its conditioner's class,
    and every parameter of whatever those bindings refer to, transitively:
    the conditioner's knobs (prompt_length, bottleneck, placement, ...) and
    its NUM_TASKS, i.e. the mixture whose tasks it conditions on;
  - the vocabularies of `EncoderDecoderModel` and what they refer to (the
    SentencePiece model).
Everything else may change: TRAIN_STEPS, periods, batch size (checked
against the data position by checkpoints.py), learning rate, decoder,
evaluation settings. A resumed run whose configuration differs in those
keeps the original config.gin and writes config_<N>.gin beside it.

Bindings are compared by configurable and parameter, in whatever gin scope
they were called (train builds the model through the MODEL macro, export
directly), and only those present on both sides (export and analyze build
the network without its vocabularies); a conditioner of another class shows
as `network.Transformer.conditioner`. A value computed by a configurable
call (`NUM_TASKS = @mixtures.num_tasks()`) is compared with another call
(and that call's own bindings: the mixture), not with a literal. Serving exported prefixes
(precomputed.gin on the backbone of a HyperPrompt run) compares the backbone
and vocabularies only (`with_conditioner=False`).
"""
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import gin
from gin import config_parser
import jax
import tensorflow as tf

from hyperprompt import atomic_files
from hyperprompt import checkpoints

CONFIG_FILE = 'config.gin'
# T5Config parameters that change how the network runs, not its parameters.
RUNTIME_T5_CONFIG = ('dropout_rate', 'dtype', 'remat_policy')
# How many differing bindings an error names.
_NAMED_DIFFERENCES = 3

# (selector, parameter name); a macro is (NAME, '').
Key = Tuple[str, str]


def write(model_dir: str) -> Optional[str]:
  """Writes gin's operative config to MODEL_DIR/config.gin and logs it.

  As t5x: the configuration the run actually uses, every parameter of every
  configurable called so far (the model, optimizer and partitioner are
  built by now), to reproduce or compare the run. A resumed run whose
  config differs keeps the original and writes config_<N>.gin beside it, N
  the number of configs already there. Returns the path written, or None
  without gin configuration (a Python caller).
  """
  config = gin.operative_config_str()
  if not config.strip() or jax.process_index() > 0:
    return None
  path = os.path.join(model_dir, CONFIG_FILE)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      if f.read() == config:
        return path
    count = len(tf.io.gfile.glob(os.path.join(model_dir, 'config*.gin')))
    path = os.path.join(model_dir, f'config_{count}.gin')
    logging.warning('The gin configuration differs from the one this run '
                    'started with (%s); writing %s.',
                    os.path.join(model_dir, CONFIG_FILE), path)
  atomic_files.write_text(path, config)
  logging.info('Operative gin configuration (%s):\n%s', path, config)
  return path


class _Reference:
  """`@name` or `@name()` as written in a config (compared by text)."""

  def __init__(self, name: str, evaluate: bool):
    self.name, self.evaluate = name, evaluate

  def __repr__(self):
    return f'@{self.name}' + ('()' if self.evaluate else '')

  def __eq__(self, other):
    return repr(self) == repr(other)

  def __hash__(self):
    return hash(repr(self))


class _Macro:

  def __init__(self, name: str):
    self.name = name


class _Delegate(config_parser.ParserDelegate):

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return _Reference(scoped_configurable_name, evaluate)

  def macro(self, macro_name):
    return _Macro(macro_name)


def bindings(config: str) -> Dict[Key, Any]:
  """{(selector, parameter): value} of an operative config's text, gin
  scopes dropped, macros replaced by their values (references stay
  `@name()`)."""
  parsed = {}
  for statement in config_parser.ConfigParser(config, _Delegate()):
    if isinstance(statement, config_parser.BindingStatement):
      parsed[(statement.selector, statement.arg_name)] = statement.value
  macros = {selector: value for (selector, arg), value in parsed.items()
            if not arg}

  def resolve(value, seen=()):
    if isinstance(value, _Macro):
      if value.name in seen or value.name not in macros:
        return f'%{value.name}'
      return resolve(macros[value.name], (*seen, value.name))
    if isinstance(value, (list, tuple)):
      return type(value)(resolve(v, seen) for v in value)
    if isinstance(value, dict):
      return {k: resolve(v, seen) for k, v in value.items()}
    return value
  return {key: resolve(value) for key, value in parsed.items()}


def _references(value) -> List[str]:
  """The configurable names `value` refers to (in containers too)."""
  if isinstance(value, _Reference):
    return [value.name.rsplit('/', 1)[-1]]
  if isinstance(value, (list, tuple)):
    return [name for v in value for name in _references(v)]
  if isinstance(value, dict):
    return [name for v in value.values() for name in _references(v)]
  return []


def _short(selector: str) -> str:
  """'hyperprompt.config.T5Config' and 'config.T5Config' -> 'T5Config'."""
  return selector.rsplit('.', 1)[-1]


def defining_keys(parsed: Dict[Key, Any],
                  with_conditioner: bool = True) -> List[Key]:
  """The bindings of `parsed` that define the checkpoint (module docstring)."""
  roots = []
  for key in parsed:
    selector, arg = key
    name = _short(selector)
    if name == 'T5Config' or (
        name == 'Transformer' and (with_conditioner or arg != 'conditioner')
    ) or (name == 'EncoderDecoderModel' and arg in ('input_vocabulary',
                                                    'output_vocabulary')):
      roots.append(key)
  keys, todo, visited = set(), list(roots), set()
  while todo:
    key = todo.pop()
    if key in keys:
      continue
    keys.add(key)
    for name in _references(parsed[key]):
      if name in visited:
        continue
      visited.add(name)
      # The referenced configurable's bindings, in any scope.
      todo.extend(k for k in parsed if k[1] and (
          k[0] == name or k[0].endswith('.' + name) or
          name.endswith('.' + k[0])))
  return sorted(k for k in keys
                if not (_short(k[0]) == 'T5Config' and k[1] in RUNTIME_T5_CONFIG))


def differences(saved: str, current: str,
                with_conditioner: bool = True) -> List[str]:
  """The defining bindings whose values differ between two operative
  configs, as 'name: old in the checkpoint's run, new now' (sorted)."""
  old, new = bindings(saved), bindings(current)
  keys = set(defining_keys(old, with_conditioner)) | set(
      defining_keys(new, with_conditioner))
  found = []
  for key in sorted(keys):
    if key not in old or key not in new:
      continue
    if isinstance(old[key], _Reference) != isinstance(new[key], _Reference):
      # A computed value against a literal, e.g. NUM_TASKS from the mixture
      # in training and `--gin.NUM_TASKS=9` for export: gin evaluates the
      # call only when running; the parameter-tree check sees its effect.
      continue
    if old[key] != new[key]:
      found.append(f'{key[0]}.{key[1]} = {old[key]!r} in the run, '
                   f'{new[key]!r} now')
  return found


def check_matches(model_dir: str, with_conditioner: bool = True) -> None:
  """Raises checkpoints.CheckpointMismatchError naming the first defining
  bindings (module docstring) of MODEL_DIR/config.gin that the current
  operative config changes (`model_dir` may also be its checkpoints
  directory). Nothing to compare without a saved config.gin
  or without gin configuration (a Python caller); MODEL_DIR is only read.
  """
  if os.path.basename(os.path.normpath(model_dir)) == checkpoints.CHECKPOINTS:
    model_dir = os.path.dirname(os.path.normpath(model_dir))
  current = gin.operative_config_str()
  path = os.path.join(model_dir, CONFIG_FILE)
  if not current.strip() or not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    saved = f.read()
  found = differences(saved, current, with_conditioner)
  if not found:
    return
  named = '; '.join(found[:_NAMED_DIFFERENCES])
  if len(found) > _NAMED_DIFFERENCES:
    named += f' (and {len(found) - _NAMED_DIFFERENCES} more)'
  raise checkpoints.CheckpointMismatchError(
      f'The gin configuration defines another model than the one {model_dir} '
      f'was trained with ({path}): {named}. {checkpoints.MISMATCH_ADVICE}')
