"""Text-to-text formatting of GLUE/SuperGLUE examples, and the task-id stamp.

Every formatter reads one example in the TFDS feature format (`glue/*` 2.0.0,
`super_glue/*` 1.0.2; the local-file source produces the same format) and
writes `inputs` ("<task> <field>: <text> <field>: <text> ...") and `targets`
(the label as a word, or STS-B's score as text). Extra features kept for
evaluation are documented per formatter.
"""
from typing import Sequence

import gin
import seqio
import tensorflow as tf


@gin.configurable(module='hyperprompt.tasks.preprocessors')
def include_task_prefix(enabled: bool = True) -> bool:
  """Whether inputs start with the task's name, as in T5.

  HyperPrompt knows the task from `task_id`; turning the prefix off makes the
  id the model's only source of task identity.
  """
  return enabled


def _inputs(prefix: str, fields: Sequence[tuple[str, tf.Tensor]]) -> tf.Tensor:
  parts = [prefix] if include_task_prefix() else []
  for name, text in fields:
    parts += [f'{name}:', text]
  return tf.strings.join(parts, separator=' ')


@seqio.map_over_dataset
def classification(ex, prefix: str, fields: Sequence[str],
                   label_names: Sequence[str]):
  """Named text fields -> inputs; integer label -> its name as the target.

  Serves every GLUE/SuperGLUE task whose input is a set of text fields (CoLA,
  SST-2, MRPC, QQP, MNLI, QNLI, RTE, BoolQ, CB, COPA, WiC).
  """
  return {
      'inputs': _inputs(prefix, [(f, ex[f]) for f in fields]),
      'targets': tf.gather(tf.constant(label_names), ex['label']),
  }


@seqio.map_over_dataset
def stsb(ex):
  """STS-B: the 0-5 similarity score, rounded to the nearest 0.2, as text."""
  score = tf.round(tf.cast(ex['label'], tf.float32) * 5.0) / 5.0
  return {
      'inputs': _inputs('stsb', [('sentence1', ex['sentence1']),
                                 ('sentence2', ex['sentence2'])]),
      'targets': tf.strings.as_string(score, precision=1),
  }


@seqio.map_over_dataset
def multirc(ex):
  """MultiRC: one example per answer option, labelled True/False.

  Keeps `group` ("<paragraph>-<question>") so that metrics can regroup the
  options of one question (exact match needs all of them right).
  """
  return {
      'inputs': _inputs('multirc', [('question', ex['question']),
                                    ('answer', ex['answer']),
                                    ('paragraph', ex['paragraph'])]),
      'targets': tf.gather(tf.constant(['False', 'True']), ex['label']),
      'group': tf.strings.format(
          '{}-{}', (ex['idx']['paragraph'], ex['idx']['question'])),
  }


def record(ds: tf.data.Dataset) -> tf.data.Dataset:
  """ReCoRD: one example per gold answer, each keeping all `answers`.

  Input: the cloze query (with its "@placeholder"), the candidate entities and
  the passage, whose "@highlight" bullet markers become sentence breaks.
  Queries without answers (the unlabelled test split) are dropped. Keeps
  `answers` (all gold strings) for the max-over-answers metrics.
  """
  def explode(ex):
    passage = tf.strings.regex_replace(ex['passage'], r'\s*@highlight\s*',
                                       '. ')
    inputs = _inputs('record', [
        ('query', ex['query']),
        ('entities', tf.strings.reduce_join(ex['entities'], separator=', ')),
        ('passage', passage)])
    n = tf.size(ex['answers'])
    return tf.data.Dataset.from_tensors({
        'inputs': tf.fill([n], inputs),
        'targets': ex['answers'],
        'answers': tf.repeat(ex['answers'][tf.newaxis], n, axis=0),
    }).unbatch()
  return ds.flat_map(explode)


def _mark_span(words: tf.Tensor, start: tf.Tensor, span_text: tf.Tensor,
               mark: str) -> tf.Tensor:
  """Wraps words[start : start + len(span_text words)] in `mark`."""
  last_index = tf.size(words) - 1
  length = tf.size(tf.strings.split(span_text, ' '))
  first = tf.clip_by_value(start, 0, last_index)
  last = tf.clip_by_value(start + length - 1, first, last_index)
  words = tf.tensor_scatter_nd_update(
      words, [[first]], [tf.strings.join([mark, words[first]])])
  return tf.tensor_scatter_nd_update(
      words, [[last]], [tf.strings.join([words[last], mark])])


@seqio.map_over_dataset
def wsc(ex):
  """WSC: the text with the candidate noun phrase (span 1) in #...# and the
  pronoun (span 2) in *...*; the target says whether they co-refer.

  Span indices are word offsets into the space-split text, as in TFDS.
  """
  words = tf.strings.split(ex['text'], ' ')
  words = _mark_span(words, tf.cast(ex['span1_index'], tf.int32),
                     ex['span1_text'], '#')
  words = _mark_span(words, tf.cast(ex['span2_index'], tf.int32),
                     ex['span2_text'], '*')
  return {
      'inputs': _inputs('wsc', [('text', tf.strings.reduce_join(
          words, separator=' '))]),
      'targets': tf.gather(tf.constant(['False', 'True']), ex['label']),
  }


@seqio.map_over_dataset
def add_task_id(ex, task_id: int):
  """Stamps every example with its task's id: int32 `task_id` of shape [1].

  A length-1 sequence rather than a scalar, because seqio's Evaluator (which
  t5x uses too) measures every output feature's length as `shape[0]`.
  """
  return {**ex, 'task_id': tf.constant([task_id], tf.int32)}
