"""A task's recipe, and its registration as a seqio Task with a task id.

A `TaskDefinition` is everything about a task except its id. The id depends
on the mixture (it is the task's index in the mixture's task vocabulary), so a
definition becomes a seqio Task only when a mixture registers it, under the
mixture's name: see mixtures.build_mixture. Every example then carries the
id, also when the task is evaluated on its own (as t5x's evaluator does).
"""
import dataclasses
import functools
from typing import Callable, Optional, Sequence

import seqio
import tensorflow as tf

from hyperprompt.tasks import preprocessors
from hyperprompt.tasks.task_vocab import TaskVocabulary


@dataclasses.dataclass(frozen=True)
class TaskDefinition:
  """A text-to-text task without its id.

  Attributes:
    source: the raw examples.
    preprocessors: raw example -> {"inputs": text, "targets": text, ...}.
    vocabulary: tokenizes inputs and targets.
    metric_fns: seqio metric functions on postprocessed values.
    num_train_examples: size of the training split, for mixing rates.
    postprocess_fn: decoded text -> the values the metrics compare.
  """
  source: seqio.DataSource
  preprocessors: Sequence[Callable]
  vocabulary: seqio.Vocabulary
  metric_fns: Sequence[Callable]
  num_train_examples: int
  postprocess_fn: Optional[Callable] = None


def register_task(name: str, definition: TaskDefinition,
                  task_vocabulary: TaskVocabulary) -> seqio.Task:
  """Registers `definition` as seqio Task `name` with its id in the vocabulary.

  Examples get an int32 `task_id` feature (an output feature, so a seqio
  Mixture keeps it); inputs and targets are tokenized and end with EOS.
  """
  text = seqio.Feature(definition.vocabulary, add_eos=True)
  task_id = seqio.Feature(
      seqio.PassThroughVocabulary(size=len(task_vocabulary)),
      add_eos=False, dtype=tf.int32, rank=1)
  return seqio.TaskRegistry.add(
      name,
      source=definition.source,
      preprocessors=[
          *definition.preprocessors,
          functools.partial(preprocessors.add_task_id,
                            task_id=task_vocabulary.id(name)),
          seqio.preprocessors.tokenize,
          seqio.CacheDatasetPlaceholder(),
          seqio.preprocessors.append_eos_after_trim,
      ],
      output_features={'inputs': text, 'targets': text, 'task_id': task_id},
      postprocess_fn=definition.postprocess_fn,
      metric_fns=definition.metric_fns,
  )
