"""seqio metric functions for GLUE, SuperGLUE and the synthetic suite.

Each metric is `fn(targets, predictions) -> {name: value}` on postprocessed
values (see postprocessors.py), with values in percent as the benchmarks
report them. Predictions that could not be parsed (label -1) always count as
wrong: for F1 and Matthews correlation they are replaced by a label that
differs from the target, so they can never be credited as a hit.

`glue_average` and `superglue_average` compute the benchmark scores as the
GLUE and SuperGLUE papers do: a task with two metrics scores their mean, and the
benchmark score is the mean over tasks.
"""
import collections
import re
import string
from typing import Mapping, Sequence

import numpy as np
import scipy.stats
import sklearn.metrics


def _as_wrong_when_invalid(targets, predictions, num_classes: int):
  """Targets, and predictions with out-of-range labels made wrong."""
  t = np.asarray(targets, dtype=np.int64)
  p = np.asarray(predictions, dtype=np.int64)
  valid = (p >= 0) & (p < num_classes)
  return t, np.where(valid, p, (t + 1) % num_classes)


def accuracy(targets, predictions) -> dict:
  """Share of predictions equal to their target (labels or strings)."""
  hits = [t == p for t, p in zip(targets, predictions, strict=True)]
  return {'accuracy': 100.0 * float(np.mean(hits))}


def exact_match(targets, predictions) -> dict:
  """Share of whole output sequences reproduced exactly."""
  return {'exact_match': accuracy(targets, predictions)['accuracy']}


def binary_f1(targets, predictions) -> dict:
  """F1 of the positive class (label 1), as GLUE reports for MRPC and QQP."""
  t, p = _as_wrong_when_invalid(targets, predictions, 2)
  return {'f1': 100.0 * sklearn.metrics.f1_score(t, p, pos_label=1,
                                                 zero_division=0.0)}


def macro_f1(targets, predictions, num_classes: int = 3) -> dict:
  """Unweighted mean of the per-class F1 scores (SuperGLUE's CB)."""
  t, p = _as_wrong_when_invalid(targets, predictions, num_classes)
  return {'macro_f1': 100.0 * sklearn.metrics.f1_score(
      t, p, labels=list(range(num_classes)), average='macro',
      zero_division=0.0)}


def matthews_corrcoef(targets, predictions) -> dict:
  """Matthews correlation of binary labels (CoLA)."""
  t, p = _as_wrong_when_invalid(targets, predictions, 2)
  return {'matthews_corrcoef':
          100.0 * sklearn.metrics.matthews_corrcoef(t, p)}


def _correlation(fn, targets, predictions) -> float:
  t = np.asarray(targets, dtype=np.float64)
  p = np.asarray(predictions, dtype=np.float64)
  if np.ptp(t) == 0 or np.ptp(p) == 0:
    return 0.0  # Undefined for a constant series; no linear relation shown.
  return 100.0 * float(fn(t, p)[0])


def pearson(targets, predictions) -> dict:
  return {'pearson': _correlation(scipy.stats.pearsonr, targets, predictions)}


def spearman(targets, predictions) -> dict:
  return {'spearman': _correlation(scipy.stats.spearmanr, targets,
                                   predictions)}


def multirc(targets: Sequence[Mapping], predictions) -> dict:
  """MultiRC: per-question exact match and F1a over all answer options.

  Targets are {"group": question id, "value": label} per answer option;
  exact match credits a question only if all of its options are right.
  """
  t = np.array([x['value'] for x in targets], dtype=np.int64)
  t, p = _as_wrong_when_invalid(t, predictions, 2)
  by_question = collections.defaultdict(list)
  for target, pred, value in zip(targets, p, t):
    by_question[target['group']].append(pred == value)
  return {
      'exact_match': 100.0 * float(np.mean(
          [all(hits) for hits in by_question.values()])),
      'f1a': 100.0 * sklearn.metrics.f1_score(t, p, pos_label=1,
                                              zero_division=0.0),
  }


def _normalize_answer(text: str) -> list[str]:
  """SQuAD normalisation: lower case, no punctuation/articles, word tokens."""
  text = ''.join(c for c in text.lower() if c not in set(string.punctuation))
  text = re.sub(r'\b(a|an|the)\b', ' ', text)
  return text.split()


def _token_f1(gold: list[str], pred: list[str]) -> float:
  common = sum((collections.Counter(gold) & collections.Counter(pred)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred), common / len(gold)
  return 2 * precision * recall / (precision + recall)


def record(targets: Sequence[Sequence[str]], predictions) -> dict:
  """ReCoRD: exact match and token F1, each the max over the gold answers."""
  em, f1 = [], []
  for answers, prediction in zip(targets, predictions, strict=True):
    pred = _normalize_answer(prediction)
    golds = [_normalize_answer(a) for a in answers]
    em.append(max(float(g == pred) for g in golds))
    f1.append(max(_token_f1(g, pred) for g in golds))
  return {'exact_match': 100.0 * float(np.mean(em)),
          'f1': 100.0 * float(np.mean(f1))}


# The metrics each benchmark scores a task by (GLUE paper, Wang et al. 2019,
# table 1; SuperGLUE paper, Wang et al. 2019, table 1). MNLI's two metrics are
# the accuracies on its matched and mismatched validation sets.
GLUE_METRICS = {
    'cola': ('matthews_corrcoef',),
    'sst2': ('accuracy',),
    'mrpc': ('accuracy', 'f1'),
    'qqp': ('accuracy', 'f1'),
    'stsb': ('pearson', 'spearman'),
    'mnli': ('accuracy_matched', 'accuracy_mismatched'),
    'qnli': ('accuracy',),
    'rte': ('accuracy',),
}
SUPERGLUE_METRICS = {
    'boolq': ('accuracy',),
    'cb': ('accuracy', 'macro_f1'),
    'copa': ('accuracy',),
    'multirc': ('exact_match', 'f1a'),
    'record': ('exact_match', 'f1'),
    'rte': ('accuracy',),
    'wic': ('accuracy',),
    'wsc': ('accuracy',),
}


def benchmark_average(task_scores: Mapping[str, Mapping[str, float]],
                      metrics: Mapping[str, Sequence[str]]) -> float:
  """Mean over tasks of the mean of each task's benchmark metrics.

  Args:
    task_scores: {task: {metric: value}}; extra metrics are ignored.
    metrics: {task: metric names the benchmark uses}; every task is required.
  """
  missing = [f'{task}/{m}' for task, names in metrics.items()
             for m in names if m not in task_scores.get(task, {})]
  if missing:
    raise ValueError(f'Scores missing for the benchmark average: {missing}. '
                     f'Expected {dict(metrics)}.')
  return float(np.mean([np.mean([task_scores[task][m] for m in names])
                        for task, names in metrics.items()]))


def glue_average(task_scores: Mapping[str, Mapping[str, float]]) -> float:
  """The GLUE score over this project's 8 GLUE tasks (no WNLI), keyed by
  short task name as in `GLUE_METRICS`."""
  return benchmark_average(task_scores, GLUE_METRICS)


def superglue_average(task_scores: Mapping[str, Mapping[str, float]]) -> float:
  """The SuperGLUE score over its 8 tasks, keyed as in `SUPERGLUE_METRICS`."""
  return benchmark_average(task_scores, SUPERGLUE_METRICS)
