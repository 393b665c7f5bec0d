"""orbax PyTree checkpoints: t5x's orbax format, ours, and plain ones.

An orbax PyTree checkpoint is a directory with a `_METADATA` file (and, with
OCDBT, `manifest.ocdbt` and data files). Where the parameters sit depends on
who wrote it:

  t5x (orbax)    checkpoint_<step>/state/   tree {'target': params, 'state': ..}
  hyperprompt    <step>/params/             tree = params
  flax/others    any directory              tree = params, or {'params': ..}

`item_directory` finds the PyTree directory below a step directory, and
`read_orbax` restores only the parameter subtree (never the optimizer state)
as host numpy arrays.
"""
from typing import Any, Dict, Mapping, Sequence, Tuple

from etils import epath
from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp

from hyperprompt.pretrained.merge import Flat

METADATA_FILE = '_METADATA'
# Sub-directories that hold the PyTree item of a multi-item step directory:
# t5x's 'state', hyperprompt.checkpoints' 'params', orbax's default item.
ITEM_NAMES = ('state', 'params', 'default')
# Where the parameters sit inside the tree, tried in order ('' = the root):
# t5x's train state keeps them in 'target', flax TrainStates in 'params'.
PARAMS_KEYS: Tuple[str, ...] = ('target', 'params', '')
# A key every T5 parameter tree has at its root.
_BACKBONE_KEY = 'token_embedder'


def item_directory(path: epath.PathLike) -> epath.Path:
  """The PyTree directory at `path` or in one of its ITEM_NAMES children."""
  # orbax reads no metadata from a relative directory (it returns None), so a
  # local relative path is made absolute; gs:// and the like already are.
  path = epath.Path(path)
  if not path.is_absolute():
    path = path.resolve()
  if (path / METADATA_FILE).exists():
    return path
  for name in ITEM_NAMES:
    if (path / name / METADATA_FILE).exists():
      return path / name
  raise FileNotFoundError(
      f'{str(path)!r} is not an orbax PyTree checkpoint: no {METADATA_FILE} '
      f'in it or in its sub-directories {ITEM_NAMES}.')


def _tree_metadata(directory: epath.Path) -> Mapping[str, Any]:
  metadata = ocp.PyTreeCheckpointer().metadata(directory)
  # orbax >= 0.11.x wraps the tree in StepMetadata.item_metadata.tree; older
  # versions return the tree itself.
  item = getattr(metadata, 'item_metadata', metadata)
  return getattr(item, 'tree', item)


def params_key(tree: Mapping[str, Any],
               candidates: Sequence[str] = PARAMS_KEYS) -> str:
  """The first of `candidates` whose subtree holds the T5 parameters."""
  for key in candidates:
    subtree = tree.get(key) if key else tree
    if isinstance(subtree, Mapping) and _BACKBONE_KEY in subtree:
      return key
  raise ValueError(
      f'Found no T5 parameters (a subtree with {_BACKBONE_KEY!r}) under any '
      f'of {list(candidates)} in the checkpoint; top-level keys: '
      f'{sorted(tree)}.')


def read_orbax(path: epath.PathLike) -> Flat:
  """Reads the parameters of an orbax PyTree checkpoint as flat arrays.

  Args:
    path: the PyTree directory or a step directory holding one (see
      `item_directory`); local or any path etils/TensorStore can open.

  Returns:
    '/'-joined parameter paths -> numpy arrays, in the stored dtype.
  """
  directory = item_directory(path)
  tree = _tree_metadata(directory)
  key = params_key(tree)
  subtree = tree[key] if key else tree
  item = {key: subtree} if key else subtree
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  restored = ocp.PyTreeCheckpointer().restore(
      directory, args=ocp.args.PyTreeRestore(
          item=item, restore_args=restore_args, partial_restore=True))
  params = restored[key] if key else restored
  return {name: np.asarray(value) for name, value in
          traverse_util.flatten_dict(params, sep='/').items()}
