"""SuperGLUE task definitions (the diagnostic sets AX-b/AX-g are left out).

Keyed by short name; mixtures.py registers them as `hp_superglue_<name>`.
"""
import functools

from hyperprompt.tasks import local_files
from hyperprompt.tasks import metrics
from hyperprompt.tasks import postprocessors
from hyperprompt.tasks import preprocessors
from hyperprompt.tasks.definition import TaskDefinition
from hyperprompt.tasks.sources import BenchmarkSource
from hyperprompt.tasks.tokenizer import DEFERRED_VOCABULARY

TFDS_VERSION = '1.0.2'

# Training-set sizes: the `train` split sizes of TFDS `super_glue` 1.0.2 (TFDS
# catalog), i.e. the official release (Wang et al. 2019, table 1) counted in
# TFDS examples: MultiRC per answer option, ReCoRD per query.
NUM_TRAIN_EXAMPLES = {
    'boolq': 9_427,
    'cb': 250,
    'copa': 400,
    'multirc': 27_243,
    'record': 100_730,
    'rte': 2_490,
    'wic': 5_428,
    'wsc': 554,
}

_BOOL = ('False', 'True')
# (text fields in input order, label names in TFDS id order, metrics)
_CLASSIFICATION = {
    'boolq': (('question', 'passage'), _BOOL, [metrics.accuracy]),
    'cb': (('premise', 'hypothesis'),
           ('entailment', 'contradiction', 'neutral'),
           [metrics.accuracy, metrics.macro_f1]),
    'copa': (('premise', 'question', 'choice1', 'choice2'),
             ('choice1', 'choice2'), [metrics.accuracy]),
    'rte': (('premise', 'hypothesis'), ('entailment', 'not_entailment'),
            [metrics.accuracy]),
    'wic': (('sentence1', 'sentence2', 'word'), _BOOL, [metrics.accuracy]),
}


def _source(name: str) -> BenchmarkSource:
  # TFDS's `wsc.fixed` corrects span offsets of the original release.
  tfds_config = 'wsc.fixed' if name == 'wsc' else name
  return BenchmarkSource(
      'super_glue', f'super_glue/{tfds_config}:{TFDS_VERSION}',
      {'train': 'train', 'validation': 'validation'},
      functools.partial(local_files.read_super_glue, name))


def _definition(name, preprocessor, metric_fns, postprocess_fn):
  return TaskDefinition(
      source=_source(name), preprocessors=[preprocessor],
      vocabulary=DEFERRED_VOCABULARY, metric_fns=metric_fns,
      num_train_examples=NUM_TRAIN_EXAMPLES[name],
      postprocess_fn=postprocess_fn)


def _classification(name: str) -> TaskDefinition:
  fields, labels, metric_fns = _CLASSIFICATION[name]
  return _definition(
      name, functools.partial(preprocessors.classification, prefix=name,
                              fields=fields, label_names=labels),
      metric_fns,
      functools.partial(postprocessors.label_to_id, label_names=labels))


_SPECIAL = {
    'multirc': _definition('multirc', preprocessors.multirc,
                           [metrics.multirc], postprocessors.multirc),
    'record': _definition('record', preprocessors.record, [metrics.record],
                          postprocessors.record),
    'wsc': _definition('wsc', preprocessors.wsc, [metrics.accuracy],
                       functools.partial(postprocessors.label_to_id,
                                         label_names=_BOOL)),
}

# The benchmark's order.
SUPERGLUE = {name: _SPECIAL[name] if name in _SPECIAL
             else _classification(name) for name in NUM_TRAIN_EXAMPLES}
