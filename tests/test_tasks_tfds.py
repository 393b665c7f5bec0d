"""Every GLUE/SuperGLUE task gives batches from the real TFDS source.

TFDS's `mock_data` replaces the stored records with random examples built from
each dataset's feature spec (offline; glue and super_glue builders need no
downloaded metadata), so the TFDS source, formatting, tokenization, task ids
and the feature converter all run as in training. A small vocabulary (seqio's
test SentencePiece model) is bound in gin instead of T5's.
"""
import os

import gin
import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

import hyperprompt.tasks
from hyperprompt.feature_converter import TaskConditionedFeatureConverter

LENGTHS = {"inputs": 32, "targets": 6}
SPM = os.path.join(os.path.dirname(seqio.__file__), "test_data",
                   "sentencepiece", "sentencepiece.model")


@pytest.fixture(scope="module")
def small_vocabulary():
  vocabulary = seqio.SentencePieceVocabulary(SPM)
  with gin.unlock_config():
    gin.bind_parameter("hyperprompt.tasks.tokenizer.text_vocabulary."
                       "vocabulary", vocabulary)
  with tfds.testing.mock_data(num_examples=8):
    yield vocabulary
  gin.clear_config()


@pytest.mark.parametrize(
    "task", hyperprompt.tasks.task_vocabulary("hp_glue_superglue").names)
def test_task_batches_through_tfds(task, small_vocabulary):
  vocab = hyperprompt.tasks.task_vocabulary(task)
  ds = seqio.get_dataset(task, LENGTHS, TaskConditionedFeatureConverter(),
                         dataset_split="validation", shuffle=False,
                         batch_size=2)
  batch = next(ds.as_numpy_iterator())
  assert batch["encoder_input_tokens"].shape == (2, LENGTHS["inputs"])
  for key in ("decoder_target_tokens", "decoder_input_tokens",
              "decoder_loss_weights"):
    assert batch[key].shape == (2, LENGTHS["targets"])
  np.testing.assert_array_equal(batch["task_ids"], [vocab.id(task)] * 2)
  # Inputs start with the task's own prefix, in the small vocabulary.
  prefix = small_vocabulary.encode(task.rsplit("_", 1)[-1])
  np.testing.assert_array_equal(
      batch["encoder_input_tokens"][0][:len(prefix)], prefix)


def test_mixture_batches_mix_tasks_with_their_ids(small_vocabulary):
  del small_vocabulary
  vocab = hyperprompt.tasks.task_vocabulary("hp_glue")
  ds = seqio.get_dataset("hp_glue", LENGTHS,
                         TaskConditionedFeatureConverter(), "train",
                         shuffle=False, batch_size=8)
  ids = next(ds.as_numpy_iterator())["task_ids"]
  assert set(ids) <= set(range(len(vocab))) and len(set(ids)) > 1


def test_mnli_has_both_validation_sets(small_vocabulary):
  del small_vocabulary
  task = seqio.get_mixture_or_task("hp_glue_mnli")
  assert {"validation_matched", "validation_mismatched"} <= set(task.splits)
  ds = task.get_dataset(LENGTHS, "validation_mismatched", shuffle=False)
  assert next(ds.as_numpy_iterator())["task_id"].tolist() == [5]
