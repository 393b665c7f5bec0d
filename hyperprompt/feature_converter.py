"""seqio feature converter for task-conditioned encoder-decoders.

Like seqio.EncDecFeatureConverter (padded, never packed), plus the model feature
`task_ids` (int32, one per example) taken from the task feature `task_id` that
hyperprompt.tasks stamps on every example. Task feature lengths are the usual
{"inputs": ..., "targets": ...}, so t5x gin configs need no change.

    {"inputs": [7, 8, 1], "targets": [3, 9, 1], "task_id": [2]}
    -> {"encoder_input_tokens": [7, 8, 1, 0], "decoder_target_tokens": [3, 9, 1],
        "decoder_input_tokens": [0, 3, 9], "decoder_loss_weights": [1, 1, 1],
        "task_ids": 2}                      (lengths inputs=4, targets=3)
"""
from typing import Mapping

import seqio
import tensorflow as tf


class TaskConditionedFeatureConverter(seqio.EncDecFeatureConverter):
  """EncDec features plus `task_ids` (int32 [batch] once batched)."""

  MODEL_FEATURES = {
      **seqio.EncDecFeatureConverter.MODEL_FEATURES,
      'task_ids': seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0),
  }

  def __init__(self, pack: bool = False, **kwargs):
    if pack:
      raise ValueError(
          'TaskConditionedFeatureConverter cannot pack: packing puts several '
          'examples, possibly of different tasks, into one row, but task '
          'conditioning (prompts chosen by task_ids) is one task per row. '
          'Use pack=False (in gin: TaskConditionedFeatureConverter.pack = '
          'False).')
    super().__init__(pack=False, **kwargs)

  def __call__(self, ds: tf.data.Dataset,
               task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    # seqio.Evaluator passes a length for every output feature, `task_id`
    # included; it has no length to trim or pad to, so it is dropped here and
    # the usual {"inputs", "targets"} lengths work everywhere.
    lengths = {k: v for k, v in task_feature_lengths.items() if k != 'task_id'}
    return super().__call__(ds, lengths)

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]
                        ) -> tf.data.Dataset:
    spec = ds.element_spec.get('task_id')
    if spec is None:
      raise ValueError(
          "The dataset has no 'task_id' feature, which task conditioning "
          'needs. Use a task or mixture registered by hyperprompt.tasks (its '
          'add_task_id preprocessor stamps the id), or add an int32 '
          "'task_id' of shape [1] yourself. Features present: "
          f'{sorted(ds.element_spec)}.')
    if spec.dtype != tf.int32 or spec.shape.as_list() != [1]:
      raise ValueError(f"'task_id' must be int32 of shape [1], got {spec}.")
    return super()._convert_features(ds, task_feature_lengths)

  def _convert_example(self, features):
    return {**super()._convert_example(features),
            'task_ids': features['task_id'][0]}

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                ) -> Mapping[str, int]:
    # seqio needs an entry per model feature; rank-0 features skip the length
    # check, and 1 says "one id per example".
    return {**super().get_model_feature_lengths(task_feature_lengths),
            'task_ids': 1}
