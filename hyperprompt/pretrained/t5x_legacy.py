"""t5x checkpoints in t5x's own (pre-orbax) format.

A checkpoint directory `checkpoint_<step>/` holds a msgpack file `checkpoint`
(flax.serialization) with

    {'version': 3, 'optimizer': {'target': <params>, 'state': <optimizer>}}

where every leaf is either a small array stored inline or, for arrays written
by TensorStore, the JSON spec of a zarr array beside the file:

    {'driver': 'zarr', 'kvstore': {'driver': 'file',
     'path': 'target.encoder.layers_0.attention.query.kernel'}, 'metadata': ..}

The path is relative to the checkpoint directory (the '/'-joined parameter
path with '.' for '/'). Checkpoints written to gs:// name a dummy bucket
instead (`{'driver': 'gcs', 'bucket': 't5x-dummy-bucket'}`, with the path on
the kvstore or, in older versions, on the spec itself); only the relative
name matters, since the checkpoint may have been copied anywhere. Parameters
are stored with our shapes (flat 2-D kernels) and names, so `target` needs no
renaming. Only `target` is read: the optimizer state is not needed to start
from pretrained weights.
"""
import asyncio
from typing import Any, Dict, Mapping

from etils import epath
from flax import serialization
import numpy as np
import tensorstore as ts

from hyperprompt.pretrained.merge import Flat

CHECKPOINT_FILE = 'checkpoint'


def checkpoint_file(path: epath.PathLike) -> epath.Path:
  """The msgpack file of a checkpoint given as its directory or the file."""
  path = epath.Path(path)
  return path / CHECKPOINT_FILE if path.is_dir() else path


def is_spec(leaf: Any) -> bool:
  """Whether a msgpack leaf is the TensorStore spec of an array on disk."""
  return isinstance(leaf, Mapping) and 'driver' in leaf and (
      'kvstore' in leaf or 'path' in leaf)


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
  """'/'-joined paths -> leaves, where a spec dict counts as a leaf."""
  flat = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, Mapping) and not is_spec(value):
      flat.update(_flatten(value, path + '/'))
    else:
      flat[path] = value
  return flat


def _relative_name(spec: Mapping[str, Any]) -> str:
  kvstore = spec.get('kvstore')
  if isinstance(kvstore, Mapping) and 'path' in kvstore:
    return kvstore['path']
  if 'path' in spec:
    return spec['path']
  raise ValueError(f'TensorStore spec without a path: {spec}')


def kvstore_url(path: epath.Path) -> str:
  """A TensorStore kvstore URL for a local or remote (gs://, s3://) path."""
  text = str(path)
  if '://' in text:
    return text
  return 'file://' + str(path.resolve())


def read_target(path: epath.PathLike) -> Dict[str, Any]:
  """The `target` tree of the msgpack, leaves being arrays or zarr specs."""
  file = checkpoint_file(path)
  if not file.exists():
    raise FileNotFoundError(f'No t5x checkpoint file at {str(file)!r}.')
  contents = serialization.msgpack_restore(file.read_bytes())
  if not isinstance(contents, Mapping):
    raise ValueError(f'{str(file)!r} is not a t5x msgpack checkpoint.')
  if 'optimizer' in contents:
    version = contents.get('version', 0)
    if version < 2:
      raise ValueError(
          f'{str(file)!r} is a t5x checkpoint of version {version}; versions '
          'before 2 are not supported (t5x itself refuses them).')
    contents = contents['optimizer']
  if 'target' not in contents:
    raise ValueError(
        f'{str(file)!r} has no `target` (parameters); top-level keys: '
        f'{sorted(contents)}.')
  return contents['target']


def read_t5x_legacy(path: epath.PathLike) -> Flat:
  """Reads the parameters of a legacy t5x checkpoint as flat arrays.

  Args:
    path: the checkpoint directory (`.../checkpoint_1000000`) or its
      `checkpoint` file; local or any path etils/TensorStore can open.

  Returns:
    '/'-joined parameter paths -> numpy arrays, in the stored dtype.
  """
  directory = checkpoint_file(path).parent
  leaves = _flatten(read_target(path))

  async def read_all():
    async def read(leaf):
      if not is_spec(leaf):
        return np.asarray(leaf)
      spec = {'driver': leaf['driver'],
              'kvstore': kvstore_url(directory / _relative_name(leaf))}
      array = await ts.open(spec, open=True, read=True)
      return await array.read()
    return await asyncio.gather(*(read(leaf) for leaf in leaves.values()))

  arrays = asyncio.run(read_all())
  return {name: np.asarray(array) for name, array in zip(leaves, arrays)}
