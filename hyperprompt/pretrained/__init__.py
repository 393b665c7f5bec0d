"""Starting from pretrained T5 weights.

Each reader turns one checkpoint format into a flat `{path: array}` dict in
our parameter naming; `merge_pretrained` puts it into freshly initialised
parameters (backbone from the checkpoint, conditioner fresh and logged, any
other gap or mismatch an error naming the parameter). `load_pretrained`
detects the format:

  format       what the path is                                    reader
  'hf'         a directory with config.json (transformers T5)      hf.py
  'orbax'      an orbax PyTree directory (`_METADATA`), or a step
               directory with one in state/ (t5x), params/
               (hyperprompt) or default/                           orbax_tree.py
  't5x'        a t5x checkpoint directory with a msgpack
               `checkpoint` file and zarr arrays, or that file      t5x_legacy.py

Public checkpoints have unscanned layer stacks (`encoder/layers_0/...`); a
scanned model's template (`T5Config.scan_layers`) is unscanned for the merge
and the result scanned again (hyperprompt.scanning), for every format.

Paths may be local or anything etils.epath and TensorStore open (gs:// on a
TPU VM).
"""
from typing import Any, Dict, Mapping

from etils import epath

from hyperprompt import scanning
from hyperprompt.pretrained.hf import (hf_config, hf_to_flat, load_hf,
                                       read_hf, read_hf_state_dict)
from hyperprompt.pretrained.merge import CONDITIONER, Flat, merge_pretrained
from hyperprompt.pretrained.orbax_tree import item_directory, read_orbax
from hyperprompt.pretrained.t5x_legacy import CHECKPOINT_FILE, read_t5x_legacy

FORMATS = ('hf', 'orbax', 't5x')


def detect_format(path: epath.PathLike) -> str:
  """One of FORMATS for the checkpoint at `path` (see the module docstring)."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'No checkpoint at {str(path)!r}.')
  if path.is_dir() and (path / 'config.json').exists():
    return 'hf'
  if path.is_dir():
    try:
      item_directory(path)
      return 'orbax'
    except FileNotFoundError:
      pass
    if (path / CHECKPOINT_FILE).exists():
      return 't5x'
  elif path.name == CHECKPOINT_FILE:
    return 't5x'
  raise ValueError(
      f'{str(path)!r} is not a checkpoint this project reads: expected a '
      'Hugging Face T5 directory (config.json), an orbax PyTree directory '
      '(_METADATA, possibly under state/, params/ or default/) or a t5x '
      "checkpoint directory (a msgpack 'checkpoint' file).")


def read_pretrained(path: epath.PathLike) -> Flat:
  """The parameters at `path` as flat arrays in our naming, any format."""
  reader = {'hf': read_hf, 'orbax': read_orbax, 't5x': read_t5x_legacy}
  return reader[detect_format(path)](path)


def load_pretrained(path: epath.PathLike,
                    template: Mapping[str, Any]) -> Dict[str, Any]:
  """Loads a checkpoint of any supported format into a tree like `template`.

  Args:
    path: a checkpoint (see `detect_format`).
    template: freshly initialised parameters; its conditioner parameters are
      kept where the checkpoint has none.

  Returns:
    The merged params tree (numpy arrays, template dtypes), scanned like
    `template`.
  """
  if scanning.is_scanned(template):
    return scanning.scan_params(
        load_pretrained(path, scanning.unscan_params(template)))
  if detect_format(path) == 'hf':
    return load_hf(path, template)  # Knows transformers' tied output layer.
  return merge_pretrained(template, read_pretrained(path), source=str(path))
