"""Evaluation with the tasks' seqio metrics, and each task's best checkpoint.

    evaluator = Evaluator(model, partitioner, mixture, lengths, batch_size)
    task_metrics = evaluator.evaluate(params)   # {task: {metric: value}}
    record_best(model_dir, step, task_metrics)  # MODEL_DIR/best_checkpoints.json

`batch_outputs` runs a jitted (params, batch) function over a dataset in
fixed-size, sharded batches; the evaluator and `runner.infer` both use it.
"""
import json
import logging
import os
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np
import seqio
import tensorflow as tf

from hyperprompt import atomic_files
from hyperprompt import data
from hyperprompt import models
from hyperprompt import partitioning

BEST_CHECKPOINTS_FILE = 'best_checkpoints.json'


def jit_predict(model: models.Model, partitioner: partitioning.Partitioner):
  """(params, global batch, rng=None) -> predicted tokens [batch, length],
  replicated; `rng` is for sampling decoders."""
  return partitioner.jit(
      lambda params, batch, rng=None: model.predict_batch(params, batch, rng),
      in_shardings=None, out_shardings=partitioner.replicated)


def jit_score(model: models.Model, partitioner: partitioning.Partitioner):
  """(params, global batch) -> log-likelihood of the targets [batch],
  replicated."""
  return partitioner.jit(lambda params, batch: model.score_batch(params,
                                                                 batch),
                         in_shardings=None,
                         out_shardings=partitioner.replicated)


def batch_outputs(fn: Callable, params, ds: tf.data.Dataset,
                  model: models.Model, partitioner: partitioning.Partitioner,
                  batch_size: int, needs_targets: bool = True
                  ) -> Iterator[tuple]:
  """Yields (batch, outputs) of `fn` over every example of `ds`, in order.

  `ds` holds model features; batches of the global `batch_size` are padded
  (one compiled shape) and checked by `model.validate_batch`; each host feeds
  its rows. Both the batch (host numpy) and the outputs (numpy, replicated)
  are cut to the real examples.
  """
  rows = partitioner.host_rows(batch_size)
  for batch, n in data.padded_batches(ds, batch_size,
                                      features=models.MODEL_FEATURES):
    batch = model.validate_batch(batch, needs_targets=needs_targets)
    host = {k: v[rows] for k, v in batch.items()}
    out = np.asarray(jax.device_get(fn(params,
                                       partitioner.global_batch(host))))
    yield {k: v[:n] for k, v in batch.items()}, out[:n]


class Evaluator:
  """Each task's seqio metrics, via our model's predict and score functions.

  Does what seqio.Evaluator does (decode, postprocess targets and
  predictions with the task's postprocess_fn, apply its predict and score
  metric functions) on our sharded, partitioned batches. Every host runs the
  whole eval set; each contributes its rows of every global batch, and
  outputs come back replicated.
  """

  def __init__(self, model: models.Model,
               partitioner: partitioning.Partitioner,
               mixture_or_task_name: str,
               task_feature_lengths: Mapping[str, int], batch_size: int,
               split: str = 'validation', num_examples: Optional[int] = None):
    self.model, self.partitioner = model, partitioner
    self.batch_size = batch_size
    self.tasks = [t for t in seqio.get_subtasks(
        seqio.get_mixture_or_task(mixture_or_task_name))
                  if t.predict_metric_fns or t.score_metric_fns]
    converter = data.feature_converter(model)
    self.examples, self.features = {}, {}
    for task in self.tasks:
      ds = task.get_dataset(dict(task_feature_lengths), split=split,
                            shuffle=False, num_epochs=1, use_cached=False)
      if num_examples is not None:
        ds = ds.take(num_examples)
      ds = ds.cache()
      self.examples[task.name] = list(ds.as_numpy_iterator())
      self.features[task.name] = converter(ds, task_feature_lengths)
    self._predict = jit_predict(model, partitioner)
    self._score = jit_score(model, partitioner)

  def _run(self, fn, params, ds) -> list:
    return [row for _, out in batch_outputs(fn, params, ds, self.model,
                                             self.partitioner,
                                             self.batch_size)
            for row in out.tolist()]

  def evaluate(self, params) -> Dict[str, Dict[str, float]]:
    """{task: {metric: value}} on the eval split."""
    results = {}
    for task in self.tasks:
      examples = self.examples[task.name]
      # Progress: a large eval set is minutes of silence otherwise.
      logging.info('Evaluating %s (%d examples)...', task.name, len(examples))
      vocab = task.output_features['targets'].vocabulary
      targets = [task.postprocess_fn(_target_text(ex, vocab), example=ex,
                                     is_target=True) for ex in examples]
      values = {}
      if task.predict_metric_fns:
        tokens = self._run(self._predict, params, self.features[task.name])
        predictions = [task.postprocess_fn(vocab.decode(t), example=ex,
                                           is_target=False)
                       for t, ex in zip(tokens, examples)]
        for metric_fn in task.predict_metric_fns:
          values.update(metric_fn(targets, predictions))
      if task.score_metric_fns:
        scores = self._run(self._score, params, self.features[task.name])
        for metric_fn in task.score_metric_fns:
          values.update(metric_fn(targets, scores))
      results[task.name] = {k: float(v) for k, v in values.items()}
    return results


def _target_text(example, vocab) -> str:
  if 'targets_pretokenized' in example:
    text = example['targets_pretokenized']
    return text.decode('utf-8') if isinstance(text, bytes) else text
  return vocab.decode(example['targets'].tolist())


# --- Best checkpoints ---------------------------------------------------------

def record_best(model_dir: str, step: int,
                task_metrics: Mapping[str, Mapping[str, float]]
                ) -> Dict[str, Any]:
  """Updates MODEL_DIR/best_checkpoints.json with this evaluation.

  As T5 (and the paper) report, each task's score is its best over the
  evaluated checkpoints; a task with several metrics is scored by their mean.
  Returns the updated {task: {'step', 'score', 'metrics'}}.
  """
  path = os.path.join(model_dir, BEST_CHECKPOINTS_FILE)
  best = {}
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      best = json.load(f)
  for task, values in task_metrics.items():
    if not values:
      continue
    score = float(np.mean(list(values.values())))
    if task not in best or score > best[task]['score']:
      best[task] = {'step': int(step), 'score': score, 'metrics': dict(values)}
  if jax.process_index() == 0:
    atomic_files.write_text(path, json.dumps(best, indent=1, sort_keys=True))
  return best


def best_steps(model_dir: str) -> Sequence[int]:
  """The steps some task scored best at, per best_checkpoints.json
  (ascending; empty before the first evaluation)."""
  path = os.path.join(model_dir, BEST_CHECKPOINTS_FILE)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    return sorted({info['step'] for info in json.load(f).values()})
