"""Evaluation with the tasks' seqio metrics, and each task's best checkpoint.

    evaluator = Evaluator(model, partitioner, mixture, lengths, batch_size)
    task_metrics = evaluator.evaluate(params)   # {task: {metric: value}}
    record_best(model_dir, step, task_metrics)  # MODEL_DIR/best_checkpoints.json

`sharded_outputs` runs a jitted (params, batch) function over an enumerated
dataset with each host computing only its share of the examples, and gathers
the outputs once; the evaluator (seqio.Evaluator's predict and score
functions) and `runner.infer` both use it.
"""
import json
import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
from jax.experimental import multihost_utils
import numpy as np
import seqio
import tensorflow as tf

from hyperprompt import atomic_files
from hyperprompt import data
from hyperprompt import models
from hyperprompt import partitioning

BEST_CHECKPOINTS_FILE = 'best_checkpoints.json'


def jit_predict(model: models.Model, partitioner: partitioning.Partitioner,
                out_shardings=None):
  """(params, global batch, rng=None) -> predicted tokens [batch, length],
  replicated (or with `out_shardings`, e.g. partitioner.data_sharding);
  `rng` is for sampling decoders."""
  return partitioner.jit(
      lambda params, batch, rng=None: model.predict_batch(params, batch, rng),
      in_shardings=None,
      out_shardings=out_shardings or partitioner.replicated)


def jit_score(model: models.Model, partitioner: partitioning.Partitioner,
              out_shardings=None):
  """(params, global batch) -> log-likelihood of the targets [batch],
  replicated (or with `out_shardings`)."""
  return partitioner.jit(lambda params, batch: model.score_batch(params,
                                                                 batch),
                         in_shardings=None,
                         out_shardings=out_shardings or partitioner.replicated)


def _own_rows(array: jax.Array) -> np.ndarray:
  """This host's rows of a batch-sharded array, in order (a row block held
  by several local devices, replicated over 'model', is taken once)."""
  blocks = {}
  for shard in array.addressable_shards:
    blocks.setdefault(shard.index[0].start or 0, shard.data)
  return np.concatenate([np.asarray(blocks[k]) for k in sorted(blocks)])


def sharded_outputs(fn: Callable, params, ds: tf.data.Dataset,
                    model: models.Model,
                    partitioner: partitioning.Partitioner,
                    batch_size: int, needs_targets: bool = True
                    ) -> List[Tuple[int, np.ndarray]]:
  """(index, output) of `fn` for every example of `ds`, sorted by index.

  `ds` is enumerated model features, (index, features), as seqio.Evaluator
  gives its predict and score functions. Host p of P takes examples p, p+P,
  ... and feeds them as its rows of each global batch of `batch_size` (zero
  rows pad the last batches, so every host runs the same number of the one
  compiled shape). `fn` must leave its output sharded over the batch
  (jit_predict/jit_score with partitioner.data_sharding): each host keeps
  the outputs of its own rows, and the (index, output) pairs of all hosts
  are gathered once, at the end. `needs_targets=False` (prediction)
  accepts examples without targets.
  """
  rows = partitioner.host_rows(batch_size)
  host_batch = rows.stop - rows.start
  local = list(ds.shard(jax.process_count(), jax.process_index())
               .as_numpy_iterator())
  most = int(np.max(multihost_utils.process_allgather(np.int32(len(local)))))
  specs = ds.element_spec[1]
  indices, outputs = [], []
  for start in range(0, most, host_batch):
    chunk = local[start:start + host_batch]
    batch = {k: np.zeros((host_batch,) + tuple(specs[k].shape),
                         specs[k].dtype.as_numpy_dtype)
             for k in models.MODEL_FEATURES if k in specs}
    for row, (_, features) in enumerate(chunk):
      for name, value in batch.items():
        value[row] = features[name]
    out = _own_rows(fn(params, partitioner.global_batch(
        model.validate_batch(batch, needs_targets=needs_targets))))
    indices += [int(index) for index, _ in chunk]
    outputs.append(out[:len(chunk)])
  if not outputs:
    return []
  # One gather: every host's pairs, padded to the same count (index -1).
  local_out = np.concatenate(outputs)
  padded_out = np.zeros((most,) + local_out.shape[1:], local_out.dtype)
  padded_out[:len(local_out)] = local_out
  padded_index = np.full((most,), -1, np.int64)
  padded_index[:len(indices)] = indices
  all_index = np.asarray(multihost_utils.process_allgather(
      padded_index)).reshape(-1)
  all_out = np.asarray(multihost_utils.process_allgather(padded_out)
                       ).reshape((-1,) + local_out.shape[1:])
  return sorted(((int(i), o) for i, o in zip(all_index, all_out) if i >= 0),
                key=lambda pair: pair[0])


class Evaluator:
  """Each task's seqio metrics, by seqio.Evaluator with our model's sharded
  predict and score functions.

  seqio.Evaluator (the one t5x uses) reads each task's eval split, applies
  the task's postprocess_fn and its predict and score metric functions.
  Every host decodes and scores only its share of the examples
  (`sharded_outputs`); the outputs are gathered once per task and function,
  so every host computes the same metrics.
  """

  def __init__(self, model: models.Model,
               partitioner: partitioning.Partitioner,
               mixture_or_task_name: str,
               task_feature_lengths: Mapping[str, int], batch_size: int,
               split: str = 'validation', num_examples: Optional[int] = None):
    self.model, self.partitioner = model, partitioner
    self.batch_size = batch_size
    self.evaluator = seqio.Evaluator(
        mixture_or_task_name, data.feature_converter(model),
        eval_split=split, use_cached=False,
        sequence_length=dict(task_feature_lengths),
        num_examples=num_examples, shuffle=False,
        async_compute_metrics=False)
    self._predict = jit_predict(model, partitioner,
                                partitioner.data_sharding)
    self._score = jit_score(model, partitioner, partitioner.data_sharding)

  def evaluate(self, params) -> Dict[str, Dict[str, float]]:
    """{task: {metric: value}} on the eval split."""
    def predict_fn(ds):
      return [(i, tokens.tolist()) for i, tokens in sharded_outputs(
          self._predict, params, ds, self.model, self.partitioner,
          self.batch_size)]

    def score_fn(ds):
      return [(i, float(score)) for i, score in sharded_outputs(
          self._score, params, ds, self.model, self.partitioner,
          self.batch_size)]

    # Progress: a large eval set is otherwise minutes of silence.
    logging.info('Evaluating: decoding and scoring every task...')
    metrics, _ = self.evaluator.evaluate(
        compute_metrics=True, predict_fn=predict_fn, score_fn=score_fn)
    return {task: {name: float(getattr(value, 'value', value))
                   for name, value in values.items()}
            for task, values in metrics.result().items()}


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
