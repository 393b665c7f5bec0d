"""Merges pretrained backbone weights into freshly initialised parameters.

Every reader in this package produces a flat `{path: array}` dict in our
parameter tree's naming ('encoder/layers_0/attention/query/kernel', ...);
`merge_pretrained` puts it into a params tree: every backbone parameter must
come from the checkpoint with the right shape; conditioning parameters the
checkpoint lacks keep their fresh initialisation and are listed in the log.
Conditioning parameters the model lacks (a run of another conditioner,
fine-tuned with a new one, or served from its exported prefixes with
precomputed.gin) are not loaded, and are listed in a warning. Anything else
is an error that names the parameter.
"""
import logging
from typing import Any, Dict, Mapping

from flax import traverse_util
import numpy as np

CONDITIONER = 'conditioner'
Flat = Dict[str, np.ndarray]


def merge_pretrained(template: Mapping[str, Any], pretrained: Flat,
                     source: str) -> Dict[str, Any]:
  """Overwrites the backbone of `template` (a params tree) with `pretrained`.

  Args:
    template: freshly initialised parameters (nested dict).
    pretrained: flat '/'-joined paths -> arrays, in our naming.
    source: where the weights came from, for messages.

  Returns:
    A new params tree: pretrained backbone, template conditioner.

  Raises:
    ValueError: naming every missing, unexpected or mis-shaped parameter.
  """
  flat = traverse_util.flatten_dict(dict(template), sep='/')
  missing, mismatched, fresh = [], [], []
  merged = {}
  for path, value in flat.items():
    if path in pretrained:
      if tuple(pretrained[path].shape) != tuple(value.shape):
        mismatched.append(f'{path}: checkpoint {tuple(pretrained[path].shape)}'
                          f' vs model {tuple(value.shape)}')
      merged[path] = np.asarray(pretrained[path], dtype=value.dtype)
    elif path.split('/')[0] == CONDITIONER:
      fresh.append(path)
      merged[path] = value
    else:
      missing.append(path)
  unexpected = sorted(set(pretrained) - set(flat))
  # Another conditioner's parameters: the model has its own (fresh above).
  foreign = [p for p in unexpected if p.split('/')[0] == CONDITIONER]
  unexpected = [p for p in unexpected if p not in foreign]
  problems = []
  if missing:
    problems.append('missing from the checkpoint: ' + ', '.join(missing))
  if mismatched:
    problems.append('shape mismatch: ' + '; '.join(mismatched))
  if unexpected:
    problems.append('in the checkpoint but not in the model: ' +
                    ', '.join(unexpected))
  if problems:
    raise ValueError(
        f'Checkpoint {source} does not match the model config ('
        + ' | '.join(problems) + '). Check the model size gin file against '
        'the checkpoint.')
  if foreign:
    logging.warning('Not loaded from %s (another conditioner\'s, not in this '
                    'model): %s', source, ', '.join(foreign))
  if fresh:
    logging.info('Initialised fresh (not in %s): %s', source, ', '.join(fresh))
  return traverse_util.unflatten_dict(merged, sep='/')
