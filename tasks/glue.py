"""GLUE task definitions (WNLI and the diagnostic set are left out, as in T5).

Keyed by short name; mixtures.py registers them as seqio Tasks `hp_glue_<name>`.
Targets are the TFDS label names; predictions outside them count as wrong.
"""
import functools

from hyperprompt.tasks import local_files
from hyperprompt.tasks import metrics
from hyperprompt.tasks import postprocessors
from hyperprompt.tasks import preprocessors
from hyperprompt.tasks.definition import TaskDefinition
from hyperprompt.tasks.sources import BenchmarkSource
from hyperprompt.tasks.tokenizer import DEFERRED_VOCABULARY

TFDS_VERSION = '2.0.0'

# Training-set sizes: the `train` split sizes of TFDS `glue` 2.0.0 (TFDS
# catalog), which are the sizes of the official GLUE release (Wang et al. 2019).
NUM_TRAIN_EXAMPLES = {
    'cola': 8_551,
    'sst2': 67_349,
    'mrpc': 3_668,
    'qqp': 363_846,
    'stsb': 5_749,
    'mnli': 392_702,
    'qnli': 104_743,
    'rte': 2_490,
}

# (text fields in input order, label names in TFDS id order, metrics)
_CLASSIFICATION = {
    'cola': (('sentence',), ('unacceptable', 'acceptable'),
             [metrics.matthews_corrcoef]),
    'sst2': (('sentence',), ('negative', 'positive'), [metrics.accuracy]),
    'mrpc': (('sentence1', 'sentence2'), ('not_equivalent', 'equivalent'),
             [metrics.accuracy, metrics.binary_f1]),
    'qqp': (('question1', 'question2'), ('not_duplicate', 'duplicate'),
            [metrics.accuracy, metrics.binary_f1]),
    'mnli': (('premise', 'hypothesis'),
             ('entailment', 'neutral', 'contradiction'), [metrics.accuracy]),
    'qnli': (('question', 'sentence'), ('entailment', 'not_entailment'),
             [metrics.accuracy]),
    'rte': (('sentence1', 'sentence2'), ('entailment', 'not_entailment'),
            [metrics.accuracy]),
}

# MNLI's "validation" is its matched set; both sets are also splits.
_MNLI_SPLITS = {'train': 'train', 'validation': 'validation_matched',
                'validation_matched': 'validation_matched',
                'validation_mismatched': 'validation_mismatched'}


def _source(name: str) -> BenchmarkSource:
  splits = (_MNLI_SPLITS if name == 'mnli'
            else {'train': 'train', 'validation': 'validation'})
  return BenchmarkSource(
      'glue', f'glue/{name}:{TFDS_VERSION}', splits,
      functools.partial(local_files.read_glue, name))


def _classification(name: str) -> TaskDefinition:
  fields, labels, metric_fns = _CLASSIFICATION[name]
  return TaskDefinition(
      source=_source(name),
      preprocessors=[functools.partial(
          preprocessors.classification, prefix=name, fields=fields,
          label_names=labels)],
      vocabulary=DEFERRED_VOCABULARY,
      metric_fns=metric_fns,
      num_train_examples=NUM_TRAIN_EXAMPLES[name],
      postprocess_fn=functools.partial(postprocessors.label_to_id,
                                       label_names=labels),
  )


GLUE = {name: _classification(name) for name in _CLASSIFICATION}
GLUE['stsb'] = TaskDefinition(
    source=_source('stsb'),
    preprocessors=[preprocessors.stsb],
    vocabulary=DEFERRED_VOCABULARY,
    metric_fns=[metrics.pearson, metrics.spearman],
    num_train_examples=NUM_TRAIN_EXAMPLES['stsb'],
    postprocess_fn=postprocessors.string_to_float,
)
# The benchmark's order.
GLUE = {name: GLUE[name] for name in NUM_TRAIN_EXAMPLES}
