"""The paper's analysis: how much attention goes to the hyper-prompts.

For every prompted attention (a layer's self-attention, or a decoder
cross-attention when it is prompted): the share of each query's softmax
weight that falls on the prompt keys, averaged over heads, then over the real
(non-padding) queries of an example, then over examples (each example counts
once, whatever its length). The network records the per-query share in
`intermediates/<stack>/layers_<i>/<attention>/prefix_attention_mass`
[batch, heads, q] when applied with `mutable=['intermediates']`
(attention.py); the rest of each query's weight, `1 - mass`, is on the real
keys.

    python -m hyperprompt.analyze \\
      --gin_file=models/sizes/tiny.gin \\
      --gin_file=models/conditioners/hyperprompt_global.gin \\
      --gin_file=runs/demo.gin --checkpoint=/tmp/demo \\
      --task=hp_synthetic --output=/tmp/analysis

`--task` (repeatable) names seqio tasks or mixtures; a mixture stands for
each of its tasks. Writes `<output>/prefix_attention_mass.json`, a heat map
per task (`<task>.png`, layers x {encoder, decoder}) and, with several tasks,
`all_tasks.png` (layers x tasks).
"""
import argparse
import functools
import json
import os
import re
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from hyperprompt import atomic_files
from hyperprompt import models
from hyperprompt import scanning
from hyperprompt.conditioning import placement
from hyperprompt.network import encoder_valid_positions

MASS = 'prefix_attention_mass'
# Attention module name (network.py) -> kind of prompted attention.
_KINDS = {'attention': 'self', 'self_attention': 'self',
          'encoder_decoder_attention': 'cross'}
# Rows of the heat maps, in this order when present.
STACKS = tuple(f'{stack}_{kind}' for stack, kind in placement.SITE_KINDS)

Site = Tuple[str, str, int]  # (stack, kind, layer), e.g. ('decoder', 'self', 3)


# --- The computation ----------------------------------------------------------

def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def site_masses(intermediates: Mapping) -> Dict[Site, jax.Array]:
  """{(stack, kind, layer): [batch, heads, q]} from a Transformer call's
  'intermediates' collection (traceable: works inside jit).

  Unscanned stacks sow at `<stack>/layers_<i>/<attention>`; scanned ones
  (T5Config.scan_layers) at `<stack>/layers/<attention>`, stacked
  [layers, batch, heads, q], which is split here into one site per layer.
  """
  masses = {}
  for path, value in _flatten(intermediates):
    if path[-1] != MASS:
      continue
    match = (re.fullmatch(rf'{scanning.SCANNED}(?:_(\d+))?', path[1])
             if len(path) == 4 else None)
    if not match or path[0] not in ('encoder', 'decoder') or (
        path[2] not in _KINDS):
      raise ValueError(f'Unexpected place of {MASS}: {"/".join(path)}; '
                       'expected <encoder|decoder>/layers_<i>/<attention> '
                       'or, scanned, <encoder|decoder>/layers/<attention>.')
    # `sow` keeps one value per call; a Transformer call runs a layer once.
    (mass,) = value
    site = (path[0], _KINDS[path[2]])
    if match.group(1) is not None:
      masses[site + (int(match.group(1)),)] = mass
    else:
      for layer in range(mass.shape[0]):
        masses[site + (layer,)] = mass[layer]
  return masses


def query_mean(mass: np.ndarray, query_valid: np.ndarray) -> np.ndarray:
  """Per-example mean over heads and real queries.

  Args:
    mass: [batch, heads, q] attention mass on the prompts.
    query_valid: [batch, q] booleans, False at padding queries.

  Returns:
    [batch]; NaN for an example without a real query.
  """
  per_query = np.asarray(mass, np.float64).mean(axis=1)  # [batch, q]
  weights = np.asarray(query_valid, np.float64)
  count = weights.sum(axis=-1)
  total = (per_query * weights).sum(axis=-1)
  return np.divide(total, count, out=np.full_like(total, np.nan),
                   where=count > 0)


def example_means(masses: Mapping[Site, np.ndarray],
                  encoder_input_tokens: np.ndarray,
                  decoder_target_tokens: np.ndarray) -> Dict[Site, np.ndarray]:
  """{site: [batch]} per-example means over heads and real queries.

  Encoder queries are real where the input token is not padding (input
  prompts, if any, count as real); decoder queries, self and cross, where the
  target token is not padding.
  """
  decoder_valid = np.asarray(decoder_target_tokens) > 0
  means = {}
  for site, mass in masses.items():
    if site[0] == 'encoder':
      valid = np.asarray(encoder_valid_positions(
          np.asarray(encoder_input_tokens), np.shape(mass)[-1]))
    else:
      valid = decoder_valid
    means[site] = query_mean(mass, valid)
  return means


class MassAverage:
  """Mean over examples of the per-example means, per site."""

  def __init__(self):
    self._sum: Dict[Site, float] = {}
    self._count: Dict[Site, int] = {}

  def add(self, means: Mapping[Site, np.ndarray],
          num_real: Optional[int] = None) -> None:
    """Adds one batch's `example_means`; rows from `num_real` on are padding
    examples and are skipped."""
    for site, values in means.items():
      values = np.asarray(values)[:num_real]
      values = values[~np.isnan(values)]
      self._sum[site] = self._sum.get(site, 0.0) + float(values.sum())
      self._count[site] = self._count.get(site, 0) + int(values.size)

  def result(self) -> Dict[str, List[float]]:
    """{'<stack>_<kind>': [mass per layer]}, NaN at layers without prompts."""
    if not any(self._count.values()):
      raise ValueError(
          f'No {MASS} was recorded: the model has no prompted attention (its '
          'conditioner gives no key/value prefixes; prompt tuning and '
          'adapters do not) or no example was added.')
    num_layers = {}
    for stack, kind, layer in self._count:
      key = f'{stack}_{kind}'
      num_layers[key] = max(num_layers.get(key, 0), layer + 1)
    out = {key: [float('nan')] * n for key, n in num_layers.items()}
    for (stack, kind, layer), count in self._count.items():
      if count:
        out[f'{stack}_{kind}'][layer] = self._sum[(stack, kind, layer)] / count
    return out


@functools.lru_cache(maxsize=8)
def masses_fn(module):
  """jitted (params, batch) -> {site: [batch, heads, q]} for a Transformer
  (cached per module, so repeated analyses compile once per batch shape)."""
  def fn(params, batch):
    _, state = module.apply(
        {'params': params}, batch['encoder_input_tokens'],
        batch['decoder_input_tokens'], batch['decoder_target_tokens'],
        batch.get('task_ids'), enable_dropout=False,
        mutable=['intermediates'])
    return site_masses(state.get('intermediates', {}))
  return jax.jit(fn)


def attention_mass(module, params, batches) -> Dict[str, List[float]]:
  """Per-layer attention mass on the prompts over `batches`.

  Args:
    module: a network.Transformer.
    params: its parameters.
    batches: iterable of (batch of model features, number of real rows).

  Returns:
    {'<stack>_<kind>': [mean mass per layer]}, see `MassAverage.result`.
  """
  fn = masses_fn(module)
  average = MassAverage()
  for batch, num_real in batches:
    features = {k: batch[k] for k in models.MODEL_FEATURES if k in batch}
    masses = jax.device_get(fn(params, features))
    average.add(example_means(masses, batch['encoder_input_tokens'],
                              batch['decoder_target_tokens']), num_real)
  return average.result()


# --- Heat maps ----------------------------------------------------------------

def _heatmap(matrix: np.ndarray, row_labels, col_labels, title: str,
             path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 0.9 * len(col_labels)),
                                  max(2.8, 1.6 + 0.35 * len(row_labels))))
  image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0,
                    cmap='viridis', aspect='auto')
  ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha='right',
                fontsize=8)
  ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
  for (i, j), value in np.ndenumerate(matrix):
    if np.isfinite(value):
      ax.text(j, i, f'{value:.2f}', ha='center', va='center', fontsize=7,
              color='white' if value < 0.6 else 'black')
  ax.set_title(title, fontsize=9)
  fig.colorbar(image, ax=ax, label='mass on prompts')
  fig.tight_layout()
  with atomic_files.open_for_write(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=110)
  plt.close(fig)


def _stacks(result: Mapping[str, Sequence[float]]) -> List[str]:
  return [s for s in STACKS if s in result]


def plot_task(result: Mapping[str, Sequence[float]], task: str,
              path: str) -> None:
  """Heat map layers x {encoder, decoder (, cross)} for one task."""
  stacks = _stacks(result)
  depth = max(len(result[s]) for s in stacks)
  matrix = np.full((depth, len(stacks)), np.nan)
  for j, stack in enumerate(stacks):
    matrix[:len(result[stack]), j] = result[stack]
  _heatmap(matrix, [f'layer {i}' for i in range(depth)],
           [s.replace('_', ' ') for s in stacks],
           f'{task}: attention mass on the prompts', path)


def plot_tasks(results: Mapping[str, Mapping[str, Sequence[float]]],
               path: str) -> None:
  """Heat map (stack, layer) x task over several tasks."""
  tasks = list(results)
  stacks = _stacks(results[tasks[0]])
  rows = [(s, i) for s in stacks for i in range(len(results[tasks[0]][s]))]
  matrix = np.array([[results[t][s][i] for t in tasks] for s, i in rows])
  _heatmap(matrix, [f'{s.replace("_", " ")} {i}' for s, i in rows], tasks,
           'Attention mass on the prompts', path)


# --- Command line -------------------------------------------------------------

def _task_names(names: Sequence[str]) -> List[str]:
  import seqio  # pylint: disable=g-import-not-at-top
  from hyperprompt import tasks  # pylint: disable=g-import-not-at-top
  out = []
  for name in names:
    if name in seqio.MixtureRegistry.names():
      # In task-id order (the mixture's task vocabulary).
      out += list(tasks.task_vocabulary(name).names)
    elif name in seqio.TaskRegistry.names():
      out.append(name)
    else:
      raise SystemExit(f'--task={name}: no such seqio task or mixture '
                       '(hyperprompt.tasks registers hp_glue_*, '
                       'hp_superglue_*, hp_synthetic_* and their mixtures).')
  return list(dict.fromkeys(out))


def _task_feature_lengths() -> Mapping[str, int]:
  import gin  # pylint: disable=g-import-not-at-top
  try:
    lengths = gin.query_parameter('%TASK_FEATURE_LENGTHS')
  except ValueError:
    lengths = None
  if not isinstance(lengths, Mapping):
    raise SystemExit(
        'TASK_FEATURE_LENGTHS is not set: pass the run\'s gin files (e.g. '
        'runs/demo.gin) or --gin.TASK_FEATURE_LENGTHS="{\'inputs\': 512, '
        '\'targets\': 16}".')
  return dict(lengths)


def _batches(model, task: str, lengths, split: str, num_examples: int,
             batch_size: int):
  import seqio  # pylint: disable=g-import-not-at-top
  from hyperprompt import data  # pylint: disable=g-import-not-at-top
  ds = seqio.get_dataset(task, lengths, dataset_split=split, shuffle=False,
                         num_epochs=1,
                         feature_converter=data.feature_converter(model),
                         use_cached=False).take(num_examples)
  for batch, num_real in data.padded_batches(ds, batch_size,
                                             models.MODEL_FEATURES):
    yield model.validate_batch(batch), num_real


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
  import gin  # pylint: disable=g-import-not-at-top
  from hyperprompt import checkpoints  # pylint: disable=g-import-not-at-top
  from hyperprompt import gin_cli  # pylint: disable=g-import-not-at-top
  from hyperprompt import operative_config  # pylint: disable=g-import-not-at-top
  from hyperprompt import tasks  # pylint: disable=g-import-not-at-top

  files, bindings, rest = gin_cli.split_gin_flags(
      sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(
      prog='python -m hyperprompt.analyze',
      description='Attention mass on the prompts, per layer and task.')
  gin_cli.add_flags(parser)
  parser.add_argument('--checkpoint', required=True,
                      help="the run's MODEL_DIR (or its checkpoints dir)")
  parser.add_argument('--task', action='append', required=True,
                      help='seqio task or mixture (repeatable)')
  parser.add_argument('--output', required=True, help='output directory')
  parser.add_argument('--step', type=int, default=None,
                      help='checkpoint step (default: latest)')
  parser.add_argument('--split', default='validation')
  parser.add_argument('--num_examples', type=int, default=512,
                      help='examples per task (at most)')
  parser.add_argument('--batch_size', type=int, default=64)
  args = parser.parse_args(rest)
  # The run's files require MODEL_DIR: it is the checkpoint's run.
  gin_cli.parse_gin(files, [f'MODEL_DIR = {json.dumps(args.checkpoint)}',
                             *bindings],
                    gin_cli.search_paths(args.gin_search_paths))
  try:
    model = gin.get_configurable(models.EncoderDecoderModel)()
  except Exception as e:  # gin names the missing binding.
    raise SystemExit(f'Cannot build the model from the gin files: {e}. Pass '
                     'the files the run was trained with (a size, a '
                     'conditioner and a run file such as runs/train.gin).'
                     ) from e
  lengths = _task_feature_lengths()
  names = _task_names(args.task)
  vocabulary = tasks.task_vocabulary(names[0])
  operative_config.check_matches(args.checkpoint)
  params = checkpoints.restore_params(
      args.checkpoint, args.step, task_vocabulary=vocabulary,
      expected_params=models.param_shapes(model.module))
  results = {}
  for name in names:
    results[name] = attention_mass(
        model.module, params,
        _batches(model, name, lengths, args.split, args.num_examples,
                 args.batch_size))
    print(name, json.dumps(results[name]))
  os.makedirs(args.output, exist_ok=True)
  with atomic_files.open_for_write(os.path.join(args.output,
                                                f'{MASS}.json')) as f:
    json.dump({'checkpoint': args.checkpoint, 'step': args.step,
               'split': args.split, 'num_examples': args.num_examples,
               'masses': results}, f, indent=1)
  for name, result in results.items():
    plot_task(result, name, os.path.join(args.output, f'{name}.png'))
  if len(results) > 1:
    plot_tasks(results, os.path.join(args.output, 'all_tasks.png'))
  return results


if __name__ == '__main__':
  from hyperprompt import cli_errors  # pylint: disable=g-import-not-at-top
  from hyperprompt import quiet_logs  # pylint: disable=g-import-not-at-top
  quiet_logs.configure(quiet_logs.WARNING)
  cli_errors.exit_on_error(main, sys.argv[1:])
