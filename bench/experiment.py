"""The small-scale study: every conditioner on the synthetic suite.

    python -m bench.experiment            # the full study (make experiment)
    python -m bench.experiment --quick    # a smoke run of every path, minutes
    python -m bench.experiment --report_only   # rewrite the report from JSON

For each of 3 seeds, on the 9 synthetic tasks (hyperprompt.tasks.synthetic:
same inputs for every task, only the task id says what to output), with the
tiny T5.1.1-shaped backbone (gin/models/sizes/tiny.gin) and each method's
knobs from gin/experiments/synthetic_small.gin:

- full tuning (the paper's main setting): backbone and conditioning trained
  together from random initialisation, for every conditioner (none,
  HyperPrompt share/sep/global, prompt and prefix tuning, adapters,
  HyperFormer++);
- conditioning-only tuning: tuning only the conditioning of a random
  backbone is meaningless, so the backbone is the one trained multi-task
  WITHOUT conditioning on the whole suite (task-blind: the full-tuning run of
  the `none` conditioner, same seed), frozen while only the conditioning
  parameters train;
- new-task adaptation: HyperPrompt-Global trained (fully) on 8 tasks, then
  the 9th task added by training only its task embedding and global prompt
  (hyperprompt.new_task), compared with Global trained on all 9 from the
  start; once for each held-out task of `Settings.new_tasks`;
- the attention mass on the prompts, per layer (hyperprompt.analyze), of the
  fully tuned Global model of the first seed.

Accuracy is exact match per validation example: every target token,
EOS included, is the argmax under teacher forcing, which is exactly when
greedy decoding reproduces the target (the study checks this once against
`predict_batch`). Like the paper (T5's convention: a checkpoint every 2000
steps, the best per task), each task's score is its best over the run's
evaluations; the final-step scores are reported too.

Results go to <output_dir>/results.json; EXPERIMENTS.md and the PNGs are
generated from it by bench/experiment_report.py.
"""
import argparse
import concurrent.futures
import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

STUDY_GIN = 'experiments/synthetic_small.gin'
SIZE_GIN = 'models/sizes/tiny.gin'
CONDITIONERS = ('none', 'hyperprompt_share', 'hyperprompt_sep',
                'hyperprompt_global', 'prompt_tuning', 'prefix_tuning',
                'adapters', 'hyperformer')
SCALE_SIZES = ('t5_1_1_base', 't5_1_1_large', 't5_1_1_xxl')
SCALE_NUM_TASKS = 8  # GLUE or SuperGLUE, as in the paper.


@dataclasses.dataclass(frozen=True)
class Settings:
  """How big the study is. FULL took 41.6 minutes on 2 CPU cores shared
  with other jobs, at nice 19 (EXPERIMENTS.md); QUICK takes 5-8 minutes."""
  seeds: int = 3
  steps: int = 1000
  adapt_steps: int = 300
  eval_every: int = 100
  batch_size: int = 64
  num_train: int = 5000  # Per task.
  num_validation: int = 200  # Per task.
  learning_rate: float = 3e-3  # AdamW, warmup then cosine decay.
  conditioning_learning_rate: float = 1e-2
  adapt_learning_rate: float = 0.1
  warmup_steps: int = 100
  # Held out, then added: `first` recombines what the 8 others teach (copy's
  # first digit); `last_odd` must invert a rule only `last_even` knows.
  new_tasks: Tuple[str, ...] = ('first', 'last_odd')
  scale_counts: bool = True  # Parameter counts at T5 sizes (shapes only).


FULL = Settings()
QUICK = Settings(seeds=1, steps=40, adapt_steps=20,
                 eval_every=20, num_train=200, num_validation=40,
                 warmup_steps=5, new_tasks=('first',), scale_counts=False)


@dataclasses.dataclass(frozen=True)
class Job:
  """One training run. kind: 'full', 'conditioning',
  'new_task_base', 'new_task' or 'scale' (parameter counts only);
  `task` is the held-out task of the new_task jobs."""
  kind: str
  conditioner: str = 'none'
  seed: int = 0
  task: str = ''


def study_jobs(settings: Settings) -> List[List[Job]]:
  """Two phases; a job of phase 2 needs a phase-1 job's saved params."""
  seeds = range(settings.seeds)
  # The long shape-only job first, so that it overlaps the training runs.
  first = [Job('scale')] if settings.scale_counts else []
  first += [Job('full', c, s) for s in seeds for c in CONDITIONERS]
  first += [Job('new_task_base', 'hyperprompt_global', s, t) for s in seeds
            for t in settings.new_tasks]
  second = [Job('conditioning', c, s) for s in seeds
            for c in CONDITIONERS if c != 'none']
  second += [Job('new_task', 'hyperprompt_global', s, t) for s in seeds
             for t in settings.new_tasks]
  return [first, second]


# --- Building blocks (imported lazily: workers are spawned processes) --------

def build_model(conditioner: str, num_tasks: int, size: str = SIZE_GIN,
                study_knobs: bool = True):
  """The EncoderDecoderModel of a size, a conditioner and the study's knobs."""
  from hyperprompt import gin_cli, models  # pylint: disable=g-import-not-at-top
  from bench import synthetic_data  # pylint: disable=g-import-not-at-top
  files = [size, f'models/conditioners/{conditioner}.gin']
  if study_knobs:
    files.append(STUDY_GIN)
  gin_cli.parse_gin(files, [f'NUM_TASKS = {num_tasks}'])
  module = gin_cli.transformer()
  vocabulary = synthetic_data.VOCABULARY
  return models.EncoderDecoderModel(module, vocabulary, vocabulary)


def _input_shapes():
  from bench import synthetic_data  # pylint: disable=g-import-not-at-top
  return {'encoder_input_tokens': (1, synthetic_data.INPUT_LENGTH),
          'decoder_input_tokens': (1, synthetic_data.TARGET_LENGTH),
          'task_ids': (1,)}


def init_params(model, seed: int):
  from hyperprompt import partitioning, train_state  # pylint: disable=g-import-not-at-top
  return train_state.init_params(model, _input_shapes(),
                                 partitioning.Partitioner(), seed)[0]


def save_params(params, path: str) -> None:
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(params, sep='/')
  np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})


def _params_file(workdir: str, job: Job) -> str:
  """Where the task-blind backbone and the new-task bases are kept."""
  return os.path.join(workdir, f'{job.kind}_{job.task or "all"}_{job.seed}.npz')


def load_flat(path: str) -> Dict[str, np.ndarray]:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def load_params(path: str):
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  return traverse_util.unflatten_dict(load_flat(path), sep='/')


def exact_match_fn(model):
  """jitted (params, features) -> [n] bool: every target token (EOS
  included) is the teacher-forced argmax, i.e. greedy decoding is exact."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def fn(params, batch):
    logits = model.module.apply(
        {'params': params}, batch['encoder_input_tokens'],
        batch['decoder_input_tokens'], batch['decoder_target_tokens'],
        batch['task_ids'], enable_dropout=False)
    targets = batch['decoder_target_tokens']
    right = (jnp.argmax(logits, -1) == targets) | (targets == 0)
    return jnp.all(right, axis=-1)
  return jax.jit(fn)


def evaluator(model, data, task_names):
  """params -> {task: exact-match accuracy} on the validation features."""
  from bench import synthetic_data  # pylint: disable=g-import-not-at-top
  fn = exact_match_fn(model)
  rows = synthetic_data.task_rows(data)
  features = {k: data[k] for k in ('encoder_input_tokens',
                                   'decoder_input_tokens',
                                   'decoder_target_tokens', 'task_ids')}
  def evaluate(params):
    correct = np.asarray(fn(params, features))
    return {task_names[t]: float(correct[i].mean()) for t, i in rows.items()}
  return evaluate


def train(model, params, optimizer, batches, steps: int, evaluate,
          eval_every: int):
  """Runs `steps` of the train_state step (runner.train's); returns
  (params, evaluations)."""
  import jax  # pylint: disable=g-import-not-at-top
  from hyperprompt import partitioning, train_state  # pylint: disable=g-import-not-at-top
  partitioner = partitioning.Partitioner()
  abstract, params_axes = train_state.abstract_params(model, _input_shapes(),
                                                      partitioner)
  shardings = train_state.state_shardings(partitioner, optimizer, abstract,
                                          params_axes)
  state = train_state.jit_init_state(partitioner, optimizer, shardings)(
      jax.device_put(params, shardings.params))
  step_fn = train_state.jit_train_step(model, optimizer, partitioner,
                                       shardings)
  dropout_rng = jax.random.PRNGKey(0)  # The study runs without dropout.
  evaluations = []
  for step in range(1, steps + 1):
    state, metrics = step_fn(state, partitioner.global_batch(
        model.validate_batch(next(batches))), dropout_rng)
    if step % eval_every == 0 or step == steps:
      loss = float(metrics['loss'])
      if not np.isfinite(loss):
        raise FloatingPointError(f'Loss is {loss} at step {step}.')
      evaluations.append({'step': step, 'loss': loss,
                          'accuracy': evaluate(state.params)})
  return state.params, evaluations


def _optimizer(settings: Settings, learning_rate: float, steps: int):
  from hyperprompt import trainer  # pylint: disable=g-import-not-at-top
  schedule = trainer.cosine_decay_schedule(
      learning_rate, warmup_steps=min(settings.warmup_steps, steps // 2),
      decay_steps=steps)
  return trainer.adamw(schedule)


def _counts(model) -> Dict[str, float]:
  from hyperprompt import params as params_lib  # pylint: disable=g-import-not-at-top
  module = model.module
  return params_lib.parameter_counts(module.config, module.conditioner)


@functools.lru_cache(maxsize=4)
def _data(tasks: tuple, split: str, num: int):
  from bench import synthetic_data  # pylint: disable=g-import-not-at-top
  return synthetic_data.features(tasks, split, num)


# --- Jobs ---------------------------------------------------------------------

def run_job(job: Job, settings: Settings, workdir: str) -> Dict[str, Any]:
  """Runs one job (in a worker process); returns its JSON-able result."""
  start = time.time()
  # Gin locks its registry when a config is parsed (build_model), so every
  # module with configurables is imported first.
  from hyperprompt import freezing, models, trainer  # pylint: disable=g-import-not-at-top,unused-import
  result = {'kind': job.kind, 'conditioner': job.conditioner,
            'seed': job.seed, 'task': job.task}
  if job.kind == 'scale':
    result['counts'] = scale_counts()
  elif job.kind == 'new_task':
    result.update(_run_new_task(job, settings, workdir))
  else:
    result.update(_run_training(job, settings, workdir))
  result['seconds'] = time.time() - start
  return result


def _run_training(job: Job, settings: Settings, workdir: str) -> dict:
  from bench import synthetic_data  # pylint: disable=g-import-not-at-top
  from hyperprompt import freezing  # pylint: disable=g-import-not-at-top
  from hyperprompt.pretrained import merge  # pylint: disable=g-import-not-at-top
  from hyperprompt.tasks import synthetic  # pylint: disable=g-import-not-at-top
  tasks = tuple(synthetic.TASKS)
  if job.kind == 'new_task_base':
    tasks = tuple(t for t in tasks if t != job.task)
  model = build_model(job.conditioner, len(tasks))
  params = init_params(model, job.seed)
  steps, learning_rate, train_what = (settings.steps, settings.learning_rate,
                                      'all')
  if job.kind == 'conditioning':
    backbone = load_flat(_params_file(
        workdir, dataclasses.replace(job, kind='full', conditioner='none')))
    params = merge.merge_pretrained(params, backbone,
                                    f'the task-blind backbone, seed {job.seed}')
    learning_rate, train_what = settings.conditioning_learning_rate, (
        'conditioning')
  optimizer = freezing.freeze(_optimizer(settings, learning_rate, steps),
                              params, train_what)
  train_data = _data(tasks, 'train', settings.num_train)
  valid_data = _data(tasks, 'validation', settings.num_validation)
  batches = synthetic_data.train_batches(train_data, settings.batch_size,
                                         seed=1000 + job.seed)
  params, evaluations = train(model, params, optimizer, batches, steps,
                              evaluator(model, valid_data, tasks),
                              settings.eval_every)
  counts = _counts(model)
  counts['trainable'] = (counts['conditioning'] if train_what ==
                         'conditioning' else counts['total'])
  out = {'tasks': list(tasks), 'steps': steps, 'params': counts,
         'evaluations': evaluations}
  if job.kind == 'new_task_base' or (job.kind, job.conditioner) == (
      'full', 'none'):
    save_params(params, _params_file(workdir, job))
  if job.kind == 'full' and job.conditioner == 'hyperprompt_global' and (
      job.seed == 0):
    out['attention_mass'] = _attention_mass(model, params, valid_data, tasks)
    out['greedy_check'] = _greedy_check(model, params, valid_data)
  return out


def _attention_mass(model, params, data, tasks) -> Dict[str, dict]:
  """Per task, the attention mass on the prompts per layer."""
  from bench import synthetic_data  # pylint: disable=g-import-not-at-top
  from hyperprompt import analyze  # pylint: disable=g-import-not-at-top
  out = {}
  for task_id, rows in synthetic_data.task_rows(data).items():
    batch = {k: v[rows] for k, v in data.items()}
    out[tasks[task_id]] = analyze.attention_mass(model.module, params,
                                                 [(batch, len(rows))])
  return out


def _greedy_check(model, params, data) -> Dict[str, int]:
  """Greedy decoding (predict_batch) vs the teacher-forced exact match."""
  import jax  # pylint: disable=g-import-not-at-top
  teacher_forced = np.asarray(exact_match_fn(model)(params, data))
  predictions = np.asarray(jax.jit(model.predict_batch)(params, data))
  targets = data['decoder_target_tokens']
  # Compare up to and including EOS: what the postprocessed output is.
  length = (targets > 0).sum(-1)
  greedy = np.array([np.array_equal(p[:n], t[:n])
                     for p, t, n in zip(predictions, targets, length)])
  return {'examples': int(len(greedy)), 'greedy_exact': int(greedy.sum()),
          'teacher_forced_exact': int(teacher_forced.sum()),
          'agree': int((greedy == teacher_forced).sum())}


def _run_new_task(job: Job, settings: Settings, workdir: str) -> dict:
  """Adds the held-out task to the 8-task Global model; trains its rows."""
  import jax  # pylint: disable=g-import-not-at-top
  from bench import synthetic_data  # pylint: disable=g-import-not-at-top
  from hyperprompt import models, network, new_task  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from hyperprompt.tasks import synthetic  # pylint: disable=g-import-not-at-top
  old_tasks = tuple(t for t in synthetic.TASKS if t != job.task)
  tasks = old_tasks + (job.task,)
  base = build_model(job.conditioner, len(old_tasks))
  params = load_params(_params_file(
      workdir, dataclasses.replace(job, kind='new_task_base')))
  config = base.module.config
  conditioner, params, per_task = new_task.add_tasks(
      config, base.module.conditioner, params, 1,
      jax.random.PRNGKey(10_000 + job.seed))
  model = models.EncoderDecoderModel(
      network.Transformer(config, conditioner), base.input_vocabulary,
      base.output_vocabulary)
  optimizer = new_task.only_new_rows(
      _optimizer(settings, settings.adapt_learning_rate,
                 settings.adapt_steps), params, per_task, len(old_tasks))
  train_data = dict(_data((job.task,), 'train', settings.num_train))
  train_data['task_ids'] = np.full_like(train_data['task_ids'],
                                        len(old_tasks))
  valid_data = _data(tasks, 'validation', settings.num_validation)
  batches = synthetic_data.train_batches(train_data, settings.batch_size,
                                         seed=2000 + job.seed)
  evaluate = evaluator(model, valid_data, tasks)
  before = evaluate(params)
  trained, evaluations = train(model, params, optimizer, batches,
                               settings.adapt_steps, evaluate,
                               settings.eval_every)
  # Everything but the new rows must be bit-for-bit what it was.
  unchanged = all(
      np.array_equal(np.asarray(a)[:len(old_tasks)] if a.shape != b.shape
                     else np.asarray(a), np.asarray(b))
      for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(
          _old_view(params, per_task, len(old_tasks)))))
  flat = traverse_util.flatten_dict(params['conditioner'])
  num_trained = int(sum(np.prod(np.shape(flat[p])[1:]) for p in per_task))
  return {'tasks': list(tasks), 'new_task': job.task,
          'steps': settings.adapt_steps, 'before': before,
          'evaluations': evaluations, 'others_unchanged': bool(unchanged),
          'trained_parameters': num_trained,
          'per_task_parameters': sorted('/'.join(p) for p in per_task)}


def _old_view(params, per_task, num_old):
  """params with the per-task leaves cut to the old tasks' rows, so a
  leaf-by-leaf comparison checks the old rows (and everything else)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(params['conditioner'])
  for path in per_task:
    flat[path] = np.asarray(flat[path])[:num_old]
  return dict(params, conditioner=traverse_util.unflatten_dict(flat))


def scale_counts() -> Dict[str, Dict[str, dict]]:
  """Parameter counts (shapes only) at T5 sizes with 8 tasks, each method
  with this project's default knobs (not the study's small ones)."""
  out = {}
  for size in SCALE_SIZES:
    out[size] = {}
    for conditioner in CONDITIONERS[1:]:
      model = build_model(conditioner, SCALE_NUM_TASKS,
                          size=f'models/sizes/{size}.gin', study_knobs=False)
      out[size][conditioner] = _counts(model)
  return out


# --- Orchestration ------------------------------------------------------------

def _worker_init(single_threaded: bool, cache_dir: str):
  if single_threaded:
    # One core's worth of threads per worker when several share the cores.
    os.environ.setdefault('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=false '
                          'intra_op_parallelism_threads=1')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  # The seeds of a method compile the same programs: the persistent cache
  # compiles them once for all workers (compilation is most of a short run).
  os.environ['JAX_COMPILATION_CACHE_DIR'] = cache_dir
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'


def run_study(settings: Settings, workdir: str, workers: int) -> dict:
  start = time.time()
  runs = []
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=context, initializer=_worker_init,
      initargs=(workers > 1, os.path.join(workdir, 'xla_cache'))) as pool:
    for phase in study_jobs(settings):
      futures = {pool.submit(run_job, job, settings, workdir): job
                 for job in phase}
      for future in concurrent.futures.as_completed(futures):
        result = future.result()
        runs.append(result)
        print(f'[{time.time() - start:6.0f}s] {result["kind"]:>13} '
              f'{result["conditioner"]:<18} {result["task"]:<8} seed '
              f'{result["seed"]} ({result["seconds"]:.0f}s)', flush=True)
  import jax  # pylint: disable=g-import-not-at-top
  return {
      'settings': dataclasses.asdict(settings),
      'conditioners': list(CONDITIONERS),
      'runs': sorted(runs, key=lambda r: (r['kind'], r['conditioner'],
                                          r['task'], r['seed'])),
      'wall_seconds': time.time() - start,
      'workers': workers,
      'command': 'python -m bench.experiment ' + ' '.join(sys.argv[1:]),
      'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                  'python': platform.python_version(),
                  'jax': jax.__version__,
                  'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},
  }


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m bench.experiment',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='1 seed, a few dozen steps: a smoke run')
  parser.add_argument('--output_dir', default=None,
                      help='results.json and PNGs (default bench/experiment, '
                      'or /tmp/hyperprompt_experiment_quick with --quick)')
  parser.add_argument('--markdown', default=None,
                      help='the report (default EXPERIMENTS.md, or '
                      '<output_dir>/EXPERIMENTS.md with --quick)')
  parser.add_argument('--workers', type=int, default=2,
                      help='parallel training processes')
  parser.add_argument('--seeds', type=int, default=None)
  parser.add_argument('--steps', type=int, default=None,
                      help='steps of every full and conditioning-only run')
  parser.add_argument('--report_only', action='store_true',
                      help='regenerate the report from results.json')
  args = parser.parse_args(argv)
  output_dir = args.output_dir or ('/tmp/hyperprompt_experiment_quick'
                                   if args.quick else 'bench/experiment')
  markdown = args.markdown or (os.path.join(output_dir, 'EXPERIMENTS.md')
                               if args.quick else 'EXPERIMENTS.md')
  results_path = os.path.join(output_dir, 'results.json')
  os.makedirs(output_dir, exist_ok=True)
  if not args.report_only:
    settings = QUICK if args.quick else FULL
    overrides = {k: v for k, v in (('seeds', args.seeds),
                                   ('steps', args.steps)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    # Intermediate params and the compilation cache: not results.
    with tempfile.TemporaryDirectory(prefix='hyperprompt_study_') as workdir:
      results = run_study(settings, workdir, args.workers)
    with open(results_path, 'w') as f:
      json.dump(results, f, indent=1)
  with open(results_path) as f:
    results = json.load(f)
  from bench import experiment_report  # pylint: disable=g-import-not-at-top
  experiment_report.write(results, markdown, output_dir, results_path)
  print(f'Wrote {results_path}, {markdown} and the charts in {output_dir}.')


if __name__ == '__main__':
  main()
