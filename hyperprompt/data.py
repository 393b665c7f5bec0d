"""Input pipelines for the runner: deterministic, per-host, resumable.

Training data is a seqio mixture or task, converted to model features,
shuffled with a fixed seed, repeated, and batched per host; every host reads
its own shard (seqio ShardInfo by process index). Each host's tf.data iterator
state (shuffle buffers, mixture sampler, position) is saved with every
checkpoint (checkpoints.Checkpointer), so a resumed run continues where the
iterator stopped without re-reading what came before, and sees the batches an
uninterrupted run would.
"""
from typing import Iterator, Mapping, Optional

import gin
import numpy as np
import seqio
import tensorflow as tf

from hyperprompt.feature_converter import TaskConditionedFeatureConverter


def feature_converter(model=None) -> seqio.FeatureConverter:
  cls = getattr(model, 'FEATURE_CONVERTER_CLS',
                TaskConditionedFeatureConverter)
  return cls(pack=False)


def model_feature_lengths(task_feature_lengths: Mapping[str, int],
                          model=None) -> Mapping[str, int]:
  return feature_converter(model).get_model_feature_lengths(
      task_feature_lengths)


@gin.configurable(module='hyperprompt.data')
def train_dataset(mixture_or_task_name: str,
                  task_feature_lengths: Mapping[str, int],
                  host_batch_size: int,
                  shard_info: seqio.ShardInfo,
                  model=None,
                  split: str = 'train',
                  seed: int = 0,
                  shuffle: bool = True) -> tf.data.Dataset:
  """Endless batches of model features for this host, always the same
  sequence for the same arguments (so a saved iterator state fits it)."""
  ds = seqio.get_dataset(
      mixture_or_task_name, task_feature_lengths, dataset_split=split,
      shuffle=shuffle, num_epochs=None,
      feature_converter=feature_converter(model), shard_info=shard_info,
      seed=seed, use_cached=False)
  ds = ds.batch(host_batch_size, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def as_numpy_batches(iterator: tf.data.Iterator) -> Iterator[dict]:
  """The iterator's batches as NumPy, read one at a time (a checkpoint of
  `iterator` is then exactly at the batches handed out)."""
  for batch in iterator:
    yield {k: v.numpy() for k, v in batch.items()}


def padded_batches(ds: tf.data.Dataset, batch_size: int,
                   features: Optional[tuple] = None
                   ) -> Iterator[tuple[dict, int]]:
  """Fixed-size batches (the last one zero-padded) and their real size.

  Evaluation and inference run every example, so the last batch is padded to
  keep one compiled shape; padded rows are dropped from the outputs.
  """
  for batch in ds.batch(batch_size).as_numpy_iterator():
    if features is not None:
      batch = {k: batch[k] for k in features}
    n = len(next(iter(batch.values())))
    yield {k: np.pad(np.asarray(v), [(0, batch_size - n)] +
                     [(0, 0)] * (np.ndim(v) - 1))
           for k, v in batch.items()}, n
