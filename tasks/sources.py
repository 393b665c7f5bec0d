"""Where GLUE/SuperGLUE examples come from: TFDS, or local release files.

The choice is made in gin each time a dataset is built, so it holds whatever
the import order:

    hyperprompt.tasks.sources.local_data_dirs.glue = "/data/glue_data"
    hyperprompt.tasks.sources.local_data_dirs.super_glue = "/data/SuperGLUE"

With no directory set for a benchmark, its tasks read TFDS (`glue/<task>`,
`super_glue/<task>`), which downloads and prepares the data on first use.
"""
from typing import Callable, Mapping, Optional

import gin
import seqio
import tensorflow as tf


@gin.configurable(module='hyperprompt.tasks.sources')
def local_data_dirs(glue: Optional[str] = None,
                    super_glue: Optional[str] = None) -> dict:
  """Folders of the unpacked GLUE/SuperGLUE releases; None means use TFDS."""
  return {'glue': glue, 'super_glue': super_glue}


class BenchmarkSource(seqio.DataSource):
  """A TFDS dataset that can instead be read from local files.

  Args:
    benchmark: "glue" or "super_glue" (the key of `local_data_dirs`).
    tfds_name: e.g. "glue/rte:2.0.0".
    splits: seqio split name -> TFDS split name.
    read_local: (root, TFDS split) -> dataset in the TFDS feature format.
  """

  def __init__(self, benchmark: str, tfds_name: str, splits: Mapping[str, str],
               read_local: Callable[[str, str], tf.data.Dataset]):
    super().__init__(splits=tuple(splits))
    self._benchmark = benchmark
    self._split_map = dict(splits)
    self._read_local = read_local
    self._tfds_name = tfds_name
    self._tfds = seqio.TfdsDataSource(tfds_name, splits=self._split_map)

  def _local_root(self) -> Optional[str]:
    return local_data_dirs()[self._benchmark]

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def _tfds_failed(self, split: str, error: Exception) -> RuntimeError:
    return RuntimeError(
        f'TFDS cannot provide {self._tfds_name} split {split!r} '
        f"({type(error).__name__}: {' '.join(str(error).split())[:200]}). "
        f'Without network access, unpack the {self._benchmark} release and '
        f'set --gin.hyperprompt.tasks.sources.local_data_dirs.{self._benchmark}'
        '=\\"/path/to/it\\" (hyperprompt/tasks/sources.py).')

  def list_shards(self, split: str):
    if self._local_root() is not None:
      return [split]
    try:
      shards = self._tfds.list_shards(split)
    except Exception as e:  # pylint: disable=broad-except
      raise self._tfds_failed(split, e) from e
    if not shards:
      raise self._tfds_failed(split, ValueError('no files for the split'))
    return shards

  def get_dataset(self, split: str = 'train', shuffle: bool = True,
                  seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *,
                  sequence_length=None, use_cached=False, num_epochs=1):
    del sequence_length, use_cached, num_epochs  # Applied by the Task.
    root = self._local_root()
    if root is None:
      try:
        return self._tfds.get_dataset(split, shuffle=shuffle, seed=seed,
                                      shard_info=shard_info)
      except Exception as e:  # pylint: disable=broad-except
        raise self._tfds_failed(split, e) from e
    # Local files are read in order; the Task shuffles examples afterwards.
    ds = self._read_local(root, self._split_map[split])
    if shard_info is not None:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds
