"""The train, eval and infer loops.

    train(model, model_dir, mixture_or_task_name, ...)   # gin: runs/train.gin
    evaluate(model, model_dir, ...)                       # gin: runs/eval.gin
    infer(model, model_dir, ..., output_file)             # gin: runs/infer.gin

The state and the step are built by `train_state`, evaluation is
`evaluation.Evaluator`, state is saved by `checkpoints.Checkpointer`; the
loop's logs are `history`, its loss check `pending_metrics`, its clean stop on
signals `preemption`, and its saved gin config `operative_config`.
"""
import json
import logging
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf

from hyperprompt import atomic_files
from hyperprompt import checkpoints
from hyperprompt import data
from hyperprompt import evaluation
from hyperprompt import history as history_lib
from hyperprompt import models
from hyperprompt import operative_config
from hyperprompt import partitioning
from hyperprompt import pending_metrics
from hyperprompt import preemption as preemption_lib
from hyperprompt import train_state
from hyperprompt import trainer
from hyperprompt.conditioning import precomputed
from hyperprompt.tasks import mixtures

# Dropout key implementations train() accepts (jax.random.key's `impl`).
PRNG_IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')


# --- Train --------------------------------------------------------------------

@gin.configurable(module='hyperprompt.runner', denylist=['train_batches'])
def train(*,
          model: models.Model,
          model_dir: str = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          train_steps: int = gin.REQUIRED,
          batch_size: int = gin.REQUIRED,
          partitioner: Callable[[], partitioning.Partitioner]
          = partitioning.Partitioner,
          make_optimizer: Callable[..., Any] = trainer.make_optimizer,
          initial_checkpoint_path: Optional[str] = None,
          checkpoint_period: int = 1000,
          keep_checkpoints: int = 3,
          eval_period: Optional[int] = None,
          eval_split: str = 'validation',
          eval_num_examples: Optional[int] = None,
          eval_batch_size: Optional[int] = None,
          log_period: int = 10,
          seed: int = 0,
          data_seed: int = 0,
          plot: bool = True,
          prng_impl: str = 'threefry2x32',
          train_batches: Optional[Callable[[int], Any]] = None
          ) -> trainer.TrainState:
  """Trains (or resumes training) until `train_steps`.

  Args:
    model: a models.Model (an EncoderDecoderModel).
    model_dir: checkpoints, TensorBoard events, best_checkpoints.json,
      history and curves go here (local or gs://).
    mixture_or_task_name: a seqio mixture or task from hyperprompt.tasks.
    task_feature_lengths: {'inputs': ..., 'targets': ...}.
    train_steps: total steps, including those of a resumed checkpoint.
    batch_size: global batch size (all hosts together).
    partitioner: builds the mesh (gin: Partitioner.num_partitions).
    make_optimizer: (params) -> optax transformation (gin: trainer.*).
    initial_checkpoint_path: pretrained backbone (ignored when resuming).
    checkpoint_period: steps between checkpoints.
    keep_checkpoints: latest checkpoints kept (plus each task's best).
    eval_period: steps between evaluations with the tasks' metrics; None
      evaluates only at the end, 0 never.
    eval_split, eval_num_examples, eval_batch_size: evaluation data.
    log_period: steps between progress lines.
    seed: parameter initialisation and dropout.
    data_seed: shuffling and mixing of the training data.
    plot: write MODEL_DIR/curves.png at the end.
    prng_impl: the dropout key's PRNG implementation, one of PRNG_IMPLS
      (t5x offers the same choice). 'threefry2x32' is JAX's default; 'rbg'
      draws the random bits with XLA's RngBitGenerator and 'unsafe_rbg' also
      derives keys with it, cheaper where random bits are costly (TPU);
      BENCHMARKS.md has its effect on the benchmark machine. Each
      implementation draws different masks: resuming with the same
      implementation is deterministic, switching mid-run changes every later
      step.
    train_batches: tests only: `skip -> iterator of host batches` replacing
      the seqio pipeline.

  Returns:
    The final TrainState.
  """
  if prng_impl not in PRNG_IMPLS:
    raise ValueError(f'Unknown prng_impl {prng_impl!r}; choose one of '
                     f'{PRNG_IMPLS}.')
  tf.config.set_visible_devices([], 'GPU')  # tf.data only; keep accelerators.
  partitioner = partitioner()
  # Checked before anything is traced or compiled.
  rows = partitioner.host_rows(batch_size)
  task_vocabulary = mixtures.task_vocabulary(mixture_or_task_name)
  _check_model_tasks(model, task_vocabulary)
  tf.io.gfile.makedirs(model_dir)
  input_shapes = train_state.input_shapes(model, task_feature_lengths,
                                          batch_size)
  params_abstract, params_axes = train_state.abstract_params(
      model, input_shapes, partitioner)
  optimizer = make_optimizer(params_abstract)
  shardings = train_state.state_shardings(partitioner, optimizer,
                                          params_abstract, params_axes)
  ckpt = checkpoints.Checkpointer(model_dir, task_vocabulary,
                                  keep=keep_checkpoints,
                                  batch_size=batch_size)
  if ckpt.latest_step() is not None:
    operative_config.check_matches(model_dir)
    state, batches_consumed = ckpt.restore(train_state.abstract_state(
        optimizer, params_abstract, shardings))
    last_saved = int(state.step)
  else:
    params, _ = train_state.init_params(model, input_shapes, partitioner,
                                        seed, initial_checkpoint_path)
    state = train_state.jit_init_state(partitioner, optimizer,
                                       shardings)(params)
    batches_consumed, last_saved = 0, None
  # After the restore: a refused checkpoint leaves MODEL_DIR as it was.
  operative_config.write(model_dir)
  for best in evaluation.best_steps(model_dir):
    ckpt.keep_step(best)

  step_fn = train_state.jit_train_step(model, optimizer, partitioner,
                                       shardings)
  # A typed key: trainer.train_step's fold_in then uses its implementation.
  dropout_rng = jax.random.key(seed + 1, impl=prng_impl)
  host_batch_size = rows.stop - rows.start
  data_iterator = None  # This host's tf.data iterator, saved with the state.
  if train_batches is None:
    dataset = data.train_dataset(
        mixture_or_task_name, task_feature_lengths, host_batch_size,
        partitioner.shard_info(), model=model, seed=data_seed)
    data_iterator = iter(dataset)
    if batches_consumed and not ckpt.restore_data_iterator(
        last_saved, data_iterator):
      logging.warning('Checkpoint %d has no data iterator state (written by '
                      'an older version): skipping %d batches to resume.',
                      last_saved, batches_consumed)
      data_iterator = iter(dataset.skip(batches_consumed))
    batches = data.as_numpy_batches(data_iterator)
  else:
    batches = train_batches(batches_consumed)

  evaluator = None
  if eval_period != 0:
    evaluator = evaluation.Evaluator(
        model, partitioner, mixture_or_task_name, task_feature_lengths,
        eval_batch_size or batch_size, split=eval_split,
        num_examples=eval_num_examples)
  history = history_lib.History(model_dir)
  preemption = preemption_lib.Preemption()
  pending = pending_metrics.PendingMetrics(model_dir)
  step = int(state.step)
  # The ETA counts from the end of the first step's compilation.
  start_step, start_time = None, None
  window_time, window_tokens, window_steps = time.time(), 0, 0
  logging.info('Training from step %d to %d, global batch %d on a %s mesh.',
               step, train_steps, batch_size, dict(partitioner.mesh.shape))
  if step < train_steps:
    logging.info('Compiling the train step (the first step waits for it)...')
  try:
    while step < train_steps:
      host_batch = model.validate_batch(next(batches))
      window_tokens += _num_tokens(host_batch) * jax.process_count()
      state, metrics = step_fn(state, partitioner.global_batch(host_batch),
                               dropout_rng)
      batches_consumed += 1
      step += 1
      window_steps += 1
      if start_step is None:  # The call returns once compiled.
        start_step, start_time = step, time.time()
      # A background save that failed stops training now, not a period later.
      ckpt.check_for_errors()
      # The previous step, which this one's dispatch did not wait for.
      pending.check(last_saved)
      pending.put(step, metrics)

      if step % log_period == 0 or step == train_steps:
        metrics = pending.check(last_saved)
        now = time.time()
        steps_per_s = window_steps / max(now - window_time, 1e-9)
        eta = '?'  # Until a step has run after the compilation.
        if step > start_step:
          rate = (step - start_step) / max(now - start_time, 1e-9)
          eta = _duration((train_steps - step) / max(rate, 1e-9))
        logging.info(
            'step %d/%d  loss %.4f  acc %.3f  %.2f steps/s  %.0f tokens/s  '
            'ETA %s', step, train_steps, float(metrics['loss']),
            float(metrics.get('accuracy', float('nan'))), steps_per_s,
            window_tokens / max(now - window_time, 1e-9), eta)
        history.write(step, {
            **{f'train/{k}': v for k, v in metrics.items()},
            'train/steps_per_second': steps_per_s,
            'train/tokens_per_second':
                window_tokens / max(now - window_time, 1e-9)})
        window_time, window_tokens, window_steps = time.time(), 0, 0

      evaluate_now = evaluator is not None and (
          (eval_period and step % eval_period == 0) or step == train_steps)
      if step % checkpoint_period == 0 or step == train_steps or evaluate_now:
        pending.check(last_saved)
        ckpt.save(state, batches_consumed, data_iterator)
        last_saved = step
      if evaluate_now:
        task_metrics = evaluator.evaluate(state.params)
        history.write(step, {f'eval/{task}/{name}': v
                             for task, values in task_metrics.items()
                             for name, v in values.items()})
        for info in evaluation.record_best(model_dir, step,
                                           task_metrics).values():
          ckpt.keep_step(info['step'])
        logging.info('eval at step %d: %s', step, task_metrics)
      if preemption.stop_requested():
        if last_saved != step:
          pending.check(last_saved)
          ckpt.save(state, batches_consumed, data_iterator)
          last_saved = step
        logging.warning('Stopped by %s after step %d; checkpoint saved.',
                        preemption.signal_name, step)
        break
  except BaseException:
    # The error in flight is the one to report; closing may fail again (a
    # failed save re-raises) and must not replace it.
    _finish(preemption, ckpt, history, plot, model_dir, quietly=True)
    raise
  _finish(preemption, ckpt, history, plot, model_dir)
  if preemption.signal_name == 'Ctrl-C':
    # Not finished: a non-zero exit (130) for scripts, after the save.
    raise KeyboardInterrupt(f'Stopped by Ctrl-C after step {step}; '
                            'checkpoint saved.')
  return state


def _finish(preemption, ckpt, history, plot: bool, model_dir: str,
            quietly: bool = False) -> None:
  """Restores the signal handlers, waits for saves, closes the logs."""
  preemption.restore()
  steps = [ckpt.close, history.close]
  if plot and jax.process_index() == 0:
    steps.append(lambda: history_lib.plot_curves(model_dir))
  for close in steps:
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except
      if not quietly:
        raise
      logging.warning('While stopping: %s: %s', type(e).__name__, e)


def _num_tokens(batch) -> int:
  return int((batch['encoder_input_tokens'] > 0).sum() +
             (batch['decoder_target_tokens'] > 0).sum())


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def _check_model_tasks(model, task_vocabulary):
  num_tasks = model.num_tasks
  if num_tasks is not None and num_tasks != len(task_vocabulary):
    raise ValueError(
        f'The model conditions on {num_tasks} tasks but the mixture has '
        f'{len(task_vocabulary)}: {list(task_vocabulary.names)}. Set the '
        "conditioner's num_tasks to the mixture's task count in gin.")
  conditioner = getattr(getattr(model, 'module', None), 'conditioner', None)
  if isinstance(conditioner, precomputed.Precomputed) and conditioner.path:
    precomputed.check_task_names(conditioner.path, task_vocabulary.names)


# --- Eval and infer -----------------------------------------------------------

def _restored_params(model, model_dir, checkpoint_step, mixture_or_task_name,
                     task_feature_lengths, batch_size, partitioner):
  """(params restored onto their shardings, step)."""
  step = checkpoints.latest_step(model_dir) if checkpoint_step is None else (
      checkpoint_step)
  if step is None:
    raise FileNotFoundError(
        f'No checkpoint in {checkpoints.checkpoint_dir(model_dir)}; train '
        'first or set MODEL_DIR to a trained run.')
  task_vocabulary = mixtures.task_vocabulary(mixture_or_task_name)
  _check_model_tasks(model, task_vocabulary)
  shapes = train_state.input_shapes(model, task_feature_lengths, batch_size)
  abstract, _ = train_state.abstract_params(model, shapes, partitioner)
  conditioner = model.module.conditioner
  serving = isinstance(conditioner, precomputed.Precomputed) and bool(
      conditioner.path)
  # Serving exported prefixes replaces the run's conditioner on purpose.
  operative_config.check_matches(model_dir, with_conditioner=not serving)
  if serving:
    stored = checkpoints.restore_params(model_dir, step,
                                        task_vocabulary=task_vocabulary)
    if not set(stored.get('conditioner', {})) <= set(precomputed.NAMES):
      return _backbone_and_prefix_file(model, stored, shapes, partitioner,
                                       abstract, model_dir), step
  return checkpoints.restore_params(model_dir, step, abstract,
                                    task_vocabulary), step


def _backbone_and_prefix_file(model, stored, shapes, partitioner, abstract,
                              model_dir):
  """Serving exported prefixes: the run's backbone, the file's prefixes.

  `stored` is a checkpoint of the run the prefixes were exported from (its
  conditioner is a hypernetwork or prefix-tuning MLP); the backbone comes
  from it, the conditioner is Precomputed's, initialised from PREFIX_FILE.
  """
  backbone = {k: v for k, v in stored.items() if k != 'conditioner'}
  expected = {k: v for k, v in abstract.items() if k != 'conditioner'}
  if jax.tree.structure(backbone) != jax.tree.structure(expected) or any(
      a.shape != b.shape for a, b in zip(jax.tree.leaves(backbone),
                                         jax.tree.leaves(expected))):
    raise ValueError(
        f'The checkpoint in {model_dir} is not a backbone of this model (its '
        'parameters differ in names or shapes); pass the size file the run '
        'was trained with.')
  params, _ = train_state.init_params(model, shapes, partitioner, seed=0)
  params = dict(params)
  for name, subtree in backbone.items():
    params[name] = jax.tree.map(
        lambda v, a: jax.device_put(np.asarray(v), a.sharding), subtree,
        abstract[name])
  logging.info('Serving the backbone of %s with the prefixes of %s.',
               model_dir, model.module.conditioner.path)
  return params


@gin.configurable(module='hyperprompt.runner')
def evaluate(*,
             model: models.Model,
             model_dir: str = gin.REQUIRED,
             mixture_or_task_name: str = gin.REQUIRED,
             task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
             batch_size: int = gin.REQUIRED,
             checkpoint_step: Optional[int] = None,
             split: str = 'validation',
             num_examples: Optional[int] = None,
             partitioner: Callable[[], partitioning.Partitioner]
             = partitioning.Partitioner) -> Dict[str, Dict[str, float]]:
  """Evaluates a checkpoint of MODEL_DIR (default: latest) with each task's
  seqio metrics; writes MODEL_DIR/eval_<step>.json."""
  partitioner = partitioner()
  params, step = _restored_params(model, model_dir, checkpoint_step,
                                  mixture_or_task_name, task_feature_lengths,
                                  batch_size, partitioner)
  evaluator = evaluation.Evaluator(model, partitioner, mixture_or_task_name,
                                   task_feature_lengths, batch_size,
                                   split=split, num_examples=num_examples)
  results = evaluator.evaluate(params)
  for task, values in sorted(results.items()):
    logging.info('%s: %s', task, values)
  if jax.process_index() == 0:
    path = os.path.join(model_dir, f'eval_{step}.json')
    text = json.dumps(results, indent=1, sort_keys=True)
    try:
      atomic_files.write_text(path, text)
    except Exception as e:  # pylint: disable=broad-except
      # The metrics took the whole evaluation to compute: never lose them.
      print(text, flush=True)
      raise OSError(f'Could not write {path} ({type(e).__name__}: {e}); the '
                    'results are printed above.') from e
  return results


@gin.configurable(module='hyperprompt.runner')
def infer(*,
          model: models.Model,
          model_dir: str = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          batch_size: int = gin.REQUIRED,
          output_file: Optional[str] = None,
          checkpoint_step: Optional[int] = None,
          split: str = 'validation',
          num_examples: Optional[int] = None,
          seed: int = 0,
          partitioner: Callable[[], partitioning.Partitioner]
          = partitioning.Partitioner) -> str:
  """Writes one JSON line {inputs, prediction, task} per example.

  Every task of the mixture (or the task) is run over `split` in order.
  Default output: MODEL_DIR/infer_<split>_<step>.jsonl, written atomically.
  Sampling decoders (decoding.temperature_sample) draw from `seed`: batch i
  uses fold_in(PRNGKey(seed), i), so a run is reproducible. Targets are not
  needed.
  """
  partitioner = partitioner()
  params, step = _restored_params(model, model_dir, checkpoint_step,
                                  mixture_or_task_name, task_feature_lengths,
                                  batch_size, partitioner)
  output_file = output_file or os.path.join(
      model_dir, f'infer_{split}_{step}.jsonl')
  # Each host decodes its share; every host gets all predictions once.
  predict = evaluation.jit_predict(model, partitioner,
                                   partitioner.data_sharding)
  key, batch_index = jax.random.PRNGKey(seed), iter(range(1 << 62))

  def predict_with_rng(params, batch):
    return predict(params, batch, jax.random.fold_in(key, next(batch_index)))
  converter = data.feature_converter(model)
  lines = []
  for task in seqio.get_subtasks(seqio.get_mixture_or_task(
      mixture_or_task_name)):
    ds = seqio.get_dataset(task.name, task_feature_lengths,
                           dataset_split=split, shuffle=False, num_epochs=1,
                           feature_converter=converter, use_cached=False)
    if num_examples is not None:
      ds = ds.take(num_examples)
    ds = ds.cache()  # Read once: sharded_outputs and the inputs below.
    in_vocab = task.output_features['inputs'].vocabulary
    out_vocab = task.output_features['targets'].vocabulary
    predictions = dict(evaluation.sharded_outputs(
        predict_with_rng, params, ds.enumerate(), model, partitioner,
        batch_size, needs_targets=False))
    for index, features in enumerate(ds.as_numpy_iterator()):
      lines.append({
          'inputs': in_vocab.decode(features['encoder_input_tokens'].tolist()),
          'prediction': out_vocab.decode(predictions[index].tolist()),
          'task': task.name})
  if jax.process_index() == 0:
    atomic_files.write_text(output_file,
                            ''.join(json.dumps(line) + '\n' for line in lines))
  logging.info('Wrote %d predictions to %s.', len(lines), output_file)
  return output_file
