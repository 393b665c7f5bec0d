"""The small-scale study: every conditioner on the synthetic suite.

    python -m study.run            # the full study (make experiment)
    python -m study.run --quick    # every path once, small: minutes

Two settings, as the paper frames its claims:

- `scratch`: the tiny T5.1.1-shaped backbone (gin/models/sizes/tiny.gin)
  from random initialisation;
- `pretrained`: the same backbone first pretrained with T5's span corruption
  on a generated corpus without task labels (study.data.pretraining_corpus),
  one checkpoint that every method of this setting starts from.

In each, every conditioner that learns its conditioning
(hyperprompt.conditioning.registry: none, HyperPrompt share/sep/global,
prompt and prefix tuning, adapters, HyperFormer++, with the knobs of
gin/experiments/synthetic_small.gin) trains
in two regimes: `full` (backbone and conditioning) and `conditioning` (the
backbone frozen, only params['conditioner'] trains). In `scratch`, the frozen
backbone of the conditioning regime is None's fully trained one of the same
seed (a random backbone has nothing to steer); in `pretrained` it is the
pretrained checkpoint.

Learning rates: each (setting, regime, conditioner) tries every rate of its
regime's grid on the first `sweep_seeds` seeds. While the best rate (by
mean held-out score) is the smallest or largest tried, the sweep goes one
step further along the 1-3-10 ladder in that direction, up to `max_rates`
rates, so the rate chosen is bracketed by worse ones wherever the budget
allows (EXPERIMENTS.md counts where it is not). The chosen rate is then run
on the remaining seeds. Held-out examples come
from the suite's train split (study.data), and the best evaluation per task
is picked on them too; the test split (the seqio validation split) is only
reported. All replicas of a group (seeds x rates) train together: the train
step that train_state.jit_train_step jits (trainer.train_step) is vmapped
over them and compiled once; each replica's peak learning rate lives in its
optimizer state (optax.inject_hyperparams).

Accuracy is exact match per example: every target token, EOS included, is
the argmax under teacher forcing, which is exactly when greedy decoding
reproduces the target (checked once against `predict_batch`).

Results (with the git commit, dirty flag, machine and command) go to
study/results/results.json; `python -m study.report` writes the generated
sections of EXPERIMENTS.md and the PNGs from it.
"""
import argparse
import concurrent.futures
import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

STUDY_GIN = 'experiments/synthetic_small.gin'
SIZE_GIN = 'models/sizes/tiny.gin'
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'results')
SETTINGS = ('scratch', 'pretrained')
REGIMES = ('full', 'conditioning')
SCALE_SIZES = ('base', 'large', 'xxl')  # T5.1.1 (bench.workload).
SCALE_NUM_TASKS = 8  # GLUE or SuperGLUE, as in the paper.
# Offsets that keep the seeds of initialisation, batches and pretraining
# apart (numpy and jax draw from them independently).
BATCH_SEED, PRETRAIN_SEED = 1000, 5000


@dataclasses.dataclass(frozen=True)
class Settings:
  """How big the study is (README: how long each setting takes)."""
  seeds: int = 5
  sweep_seeds: int = 1  # The learning-rate sweep runs on seeds 0..this-1.
  # What fits about 35 minutes on 2 idle cores; copy and reverse need about
  # twice as many steps (EXPERIMENTS.md, Limits).
  steps: int = 600
  eval_every: int = 120
  batch_size: int = 32
  num_train: int = 5000  # Per task.
  num_heldout: int = 50  # Per task, from the train split: selection.
  num_test: int = 100  # Per task, the validation split: reported only.
  # AdamW peak rates (warmup, then cosine decay to 0), on the 1-3-10 ladder:
  # each regime's first grid; the sweep extends it at an edge (max_rates).
  full_rates: Tuple[float, ...] = (3e-4, 1e-3, 3e-3)
  conditioning_rates: Tuple[float, ...] = (1e-2, 3e-2, 1e-1)
  max_rates: int = 5
  warmup_steps: int = 60
  pretrain_steps: int = 4000
  pretrain_rate: float = 1e-3
  pretrain_examples: int = 128_000
  scale_counts: bool = True  # Parameter counts at T5 sizes (shapes only).

  def __post_init__(self):
    for rate in self.full_rates + self.conditioning_rates:
      if ladder(ladder_index(rate)) != rate:
        raise ValueError(f'Learning rate {rate:g} is not on the 1-3-10 '
                         'ladder (1e-3, 3e-3, 1e-2, ...).')
    if self.max_rates < max(len(self.full_rates),
                            len(self.conditioning_rates)):
      raise ValueError(f'max_rates={self.max_rates} is below a grid\'s '
                       'size.')

  def rates(self, regime: str) -> Tuple[float, ...]:
    return self.full_rates if regime == 'full' else self.conditioning_rates


def ladder_index(rate: float) -> int:
  """The position of `rate` on the 1-3-10 ladder (..., 1e-3: -6, 3e-3: -5,
  1e-2: -4, ...): 3 counts as half a decade."""
  return round(2 * np.log10(rate))


def ladder(index: int) -> float:
  """The ladder's rate at `index` (ladder_index's inverse)."""
  return float(f'{(3 if index % 2 else 1)}e{index // 2}')


FULL = Settings()
QUICK = Settings(seeds=2, sweep_seeds=1, steps=30, eval_every=15,
                 num_train=200, num_heldout=20, num_test=20,
                 full_rates=(3e-3, 1e-2), conditioning_rates=(3e-2, 1e-1),
                 max_rates=3, warmup_steps=5, pretrain_steps=30,
                 pretrain_examples=1000, scale_counts=False)


@dataclasses.dataclass(frozen=True)
class Group:
  """Replicas trained together: one (setting, regime, conditioner) at the
  given (seed, learning rate) pairs. stage: 'sweep' (one group per rate
  tried) or 'final'."""
  setting: str
  regime: str
  conditioner: str
  stage: str
  replicas: Tuple[Tuple[int, float], ...]


def sweep_group(settings: Settings, setting: str, regime: str,
                conditioner: str, rates: Sequence[float] = ()) -> Group:
  """The sweep's runs at `rates` (default: the regime's grid)."""
  return Group(setting, regime, conditioner, 'sweep', tuple(
      (s, r) for r in (rates or settings.rates(regime))
      for s in range(settings.sweep_seeds)))


def final_group(settings: Settings, setting: str, regime: str,
                conditioner: str, rate: float) -> Group:
  return Group(setting, regime, conditioner, 'final', tuple(
      (s, rate) for s in range(settings.sweep_seeds, settings.seeds)))


def groups_to_train(conditioners: Sequence[str]):
  """(setting, regime, conditioner) of every trained group: None has nothing
  to train with its backbone frozen."""
  return [(s, r, c) for s in SETTINGS for r in REGIMES for c in conditioners
          if not (r == 'conditioning' and c == 'none')]


# --- Selection (study.report recomputes it from the results) ------------------

def best_per_task(evaluations: Sequence[Mapping]) -> Dict[str, Mapping]:
  """Per task, the evaluation with the best held-out accuracy (the earliest
  among ties): {task: {'step', 'heldout', 'test'}}."""
  out = {}
  for task in evaluations[0]['heldout']:
    best = max(evaluations, key=lambda e: (e['heldout'][task], -e['step']))
    out[task] = {'step': best['step'], 'heldout': best['heldout'][task],
                 'test': best['test'][task]}
  return out


def heldout_score(run: Mapping) -> float:
  """Mean over tasks of the held-out accuracy at each task's best
  held-out evaluation: what learning rates are chosen by."""
  return float(np.mean([b['heldout'] for b in
                        best_per_task(run['evaluations']).values()]))


def select_rate(runs: Sequence[Mapping]) -> float:
  """The rate whose sweep runs have the best mean held-out score (the
  smallest rate among ties)."""
  rates = sorted({r['learning_rate'] for r in runs})
  means = {rate: np.mean([heldout_score(r) for r in runs
                          if r['learning_rate'] == rate]) for rate in rates}
  return max(rates, key=lambda rate: (means[rate], -rate))


def next_rate(settings: Settings, runs: Sequence[Mapping]) -> Optional[float]:
  """The rate the sweep of `runs` tries next: one ladder step beyond the
  selected rate when that is the smallest or largest tried and fewer than
  settings.max_rates were tried; else None (the sweep is done)."""
  rates = sorted({r['learning_rate'] for r in runs})
  best = select_rate(runs)
  if len(rates) >= settings.max_rates or best not in (rates[0], rates[-1]):
    return None
  return ladder(ladder_index(best) + (-1 if best == rates[0] else 1))


# --- Building blocks (imported lazily: workers are spawned processes) --------

def build_model(conditioner: str, num_tasks: int, size: str = SIZE_GIN,
                study_knobs: bool = True):
  """The EncoderDecoderModel of a size, a conditioner and the study's knobs."""
  # Gin locks its registry when a config is parsed, so every module with
  # configurables that the study uses is imported first.
  from hyperprompt import freezing, gin_cli, models, partitioning, train_state, trainer  # pylint: disable=g-import-not-at-top,unused-import
  from study import data  # pylint: disable=g-import-not-at-top
  from hyperprompt.conditioning import registry  # pylint: disable=g-import-not-at-top
  files = [size, registry.method(conditioner).gin_file]
  if study_knobs:
    files.append(STUDY_GIN)
  gin_cli.parse_gin(files, [f'NUM_TASKS = {num_tasks}'])
  module = gin_cli.transformer()
  return models.EncoderDecoderModel(module, data.VOCABULARY, data.VOCABULARY)


def input_shapes(model):
  from hyperprompt import train_state  # pylint: disable=g-import-not-at-top
  from hyperprompt.tasks import synthetic  # pylint: disable=g-import-not-at-top
  return train_state.input_shapes(model, synthetic.TASK_FEATURE_LENGTHS, 1)


def init_params(model, seed: int):
  from hyperprompt import partitioning, train_state  # pylint: disable=g-import-not-at-top
  return train_state.init_params(model, input_shapes(model),
                                 partitioning.Partitioner(), seed)[0]


def save_params(params, path: str) -> None:
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(params, sep='/')
  np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})


def load_flat(path: str) -> Dict[str, np.ndarray]:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def backbone_file(workdir: str, setting: str, seed: int, rate: float) -> str:
  """Where a frozen backbone is kept: None's fully trained one per (seed,
  rate) in `scratch`, the one pretrained checkpoint in `pretrained`."""
  if setting == 'pretrained':
    return os.path.join(workdir, 'pretrained.npz')
  return os.path.join(workdir, f'none_full_{seed}_{rate:g}.npz')


def optimizer(settings: Settings, params, regime: str, steps: int,
              rate=1.0):
  """AdamW (trainer.adamw) on a unit-peak warmup + cosine schedule, then
  scaled by the peak `rate`, which optax.inject_hyperparams keeps in the
  state: replicas with different rates share one compiled step. Without
  weight decay this is adamw(rate * schedule) exactly. Frozen per `regime`."""
  import optax  # pylint: disable=g-import-not-at-top
  from hyperprompt import freezing, trainer  # pylint: disable=g-import-not-at-top
  schedule = trainer.cosine_decay_schedule(
      1.0, warmup_steps=min(settings.warmup_steps, steps // 2),
      decay_steps=steps)
  chain = optax.chain(trainer.adamw(schedule),
                      optax.inject_hyperparams(optax.scale)(step_size=rate))
  return freezing.freeze(chain, params, 'all' if regime == 'full'
                         else 'conditioning')


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
  return fn


def evaluator(model, splits: Mapping[str, Mapping[str, np.ndarray]],
              tasks: Sequence[str]):
  """stacked params -> [{split: {task: accuracy}} per replica]."""
  import jax  # pylint: disable=g-import-not-at-top
  from study import data as data_lib  # pylint: disable=g-import-not-at-top
  fn = jax.jit(jax.vmap(exact_match_fn(model), in_axes=(0, None)))
  rows = {name: data_lib.task_rows(d) for name, d in splits.items()}

  def evaluate(params):
    correct = {name: np.asarray(fn(params, d)) for name, d in splits.items()}
    replicas = next(iter(correct.values())).shape[0]
    return [{name: {tasks[t]: float(c[r, i].mean())
                    for t, i in rows[name].items()}
             for name, c in correct.items()} for r in range(replicas)]
  return evaluate


def train_replicas(model, params, regime: str, rates: Sequence[float],
                   batches, settings: Settings, steps: int, evaluate=None,
                   eval_every: int = 0):
  """Trains stacked `params` ([replicas, ...] leaves) for `steps`, replica i
  at peak rate rates[i] on batches[i]; every `eval_every` steps records each
  replica's training loss and cross-entropy (means over the steps since the
  last record) and `evaluate`'s accuracies. A replica whose loss turns
  non-finite is recorded as it is (its accuracy drops), not stopped: its
  group's other replicas go on. Returns (params, evaluations per replica)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from hyperprompt import trainer  # pylint: disable=g-import-not-at-top
  unstacked = jax.tree.map(lambda x: x[0], params)
  opt = optimizer(settings, unstacked, regime, steps)
  init = jax.jit(jax.vmap(lambda p, rate: trainer.init_state(
      p, optimizer(settings, unstacked, regime, steps, rate))))
  state = init(params, jnp.asarray(rates, jnp.float32))
  step_fn = jax.jit(jax.vmap(functools.partial(trainer.train_step, model,
                                               opt)), donate_argnums=(0,))
  # The study runs without dropout; the key is still an argument.
  keys = jnp.stack([jax.random.PRNGKey(0)] * len(rates))
  evaluations = [[] for _ in rates]
  sums, since = 0.0, 0  # Of [replicas, 2] losses, kept on the device.
  for step in range(1, steps + 1):
    state, metrics = step_fn(state, next(batches), keys)
    sums, since = sums + jnp.stack([metrics['loss'],
                                    metrics['cross_ent_loss']], -1), since + 1
    if eval_every and (step % eval_every == 0 or step == steps):
      losses = np.asarray(sums) / since
      sums, since = 0.0, 0
      accuracy = (evaluate(state.params) if evaluate else
                  [{} for _ in rates])
      for i, ((loss, cross_ent), acc) in enumerate(zip(losses, accuracy)):
        evaluations[i].append({'step': step, 'loss': float(loss),
                               'cross_ent_loss': float(cross_ent), **acc})
  return state.params, evaluations


def stack(trees):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda *x: np.stack(x), *trees)


def replica(params, index: int):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: np.asarray(x[index]), params)


def counts(model) -> Dict[str, float]:
  from hyperprompt import params as params_lib  # pylint: disable=g-import-not-at-top
  module = model.module
  return params_lib.parameter_counts(module.config, module.conditioner)


@functools.lru_cache(maxsize=4)
def suite(tasks: tuple, split: str, num: int, num_train: int):
  from study import data  # pylint: disable=g-import-not-at-top
  return data.features(tasks, split, num, num_train=num_train)


# --- Jobs ---------------------------------------------------------------------

def run_group(group: Group, settings: Settings, workdir: str) -> List[dict]:
  """Trains one group (in a worker process); one result per replica."""
  start, cpu_start = time.time(), time.process_time()
  from hyperprompt.pretrained import merge  # pylint: disable=g-import-not-at-top
  from hyperprompt.tasks import synthetic  # pylint: disable=g-import-not-at-top
  from study import data  # pylint: disable=g-import-not-at-top
  tasks = tuple(synthetic.TASKS)
  model = build_model(group.conditioner, len(tasks))
  inits = []
  for seed, rate in group.replicas:
    params = init_params(model, seed)
    if group.setting == 'pretrained' or group.regime == 'conditioning':
      path = backbone_file(workdir, group.setting, seed, rate if (
          group.regime == 'full') else _none_rate(workdir, group.setting))
      params = merge.merge_pretrained(params, load_flat(path), path)
    inits.append(params)
  splits = {'heldout': suite(tasks, 'heldout', settings.num_heldout,
                             settings.num_train),
            'test': suite(tasks, 'test', settings.num_test, 0)}
  train_data = suite(tasks, 'train', settings.num_train, 0)
  batches = data.replica_batches(train_data, settings.batch_size, [
      BATCH_SEED + seed for seed, _ in group.replicas])
  rates = [rate for _, rate in group.replicas]
  params, evaluations = train_replicas(
      model, stack(inits), group.regime, rates, batches, settings,
      settings.steps, evaluator(model, splits, tasks), settings.eval_every)
  seconds = time.time() - start
  cpu_seconds = time.process_time() - cpu_start
  model_counts = counts(model)
  model_counts['trainable'] = (model_counts['total'] if group.regime == 'full'
                               else model_counts['conditioning'])
  out = []
  for i, (seed, rate) in enumerate(group.replicas):
    result = {'setting': group.setting, 'regime': group.regime,
              'conditioner': group.conditioner, 'stage': group.stage,
              'seed': seed, 'learning_rate': rate, 'tasks': list(tasks),
              'steps': settings.steps, 'params': model_counts,
              'evaluations': evaluations[i],
              'group_seconds': seconds, 'group_cpu_seconds': cpu_seconds,
              'group_size': len(group.replicas)}
    trained = replica(params, i)
    if (group.setting, group.regime, group.conditioner) == (
        'scratch', 'full', 'none'):
      save_params(trained, backbone_file(workdir, 'scratch', seed, rate))
    if group.regime == 'full' and group.conditioner == 'hyperprompt_global':
      result['attention_mass'] = attention_mass(model, trained,
                                                splits['test'], tasks)
      if group.setting == 'scratch' and group.stage == 'final' and i == 0:
        result['greedy_check'] = greedy_check(model, trained, splits['test'])
    out.append(result)
  return out


def _none_rate(workdir: str, setting: str) -> float:
  """The rate selected for None's full runs (scratch), which the
  conditioning regime's backbones were trained at; unused when pretrained."""
  if setting == 'pretrained':
    return 0.0
  with open(os.path.join(workdir, 'none_rate.json')) as f:
    return json.load(f)['rate']


def attention_mass(model, params, data, tasks) -> Dict[str, dict]:
  """Per task: the measured attention mass on the prompts per layer
  (hyperprompt.analyze) and, beside it, what uniform attention over the
  same visible keys would give (uniform_mass)."""
  from hyperprompt import analyze  # pylint: disable=g-import-not-at-top
  from study import data as data_lib  # pylint: disable=g-import-not-at-top
  prompt_length = model.module.conditioner.prompt_length
  out = {}
  for task_id, rows in data_lib.task_rows(data).items():
    batch = {k: v[rows] for k, v in data.items()}
    measured = analyze.attention_mass(model.module, params,
                                      [(batch, len(rows))])
    out[tasks[task_id]] = {
        'measured': measured,
        'uniform': uniform_mass(batch, prompt_length),
        'prompt_length': prompt_length}
  return out


def uniform_mass(batch: Mapping[str, np.ndarray],
                 prompt_length: int) -> Dict[str, float]:
  """The mass uniform attention puts on `prompt_length` prompt keys:
  l / (l + visible keys), averaged like analyze's measurement (over real
  queries, then examples). An encoder query sees every real input token;
  decoder query i (causal) sees target positions 0..i."""
  l = float(prompt_length)
  encoder_keys = (batch['encoder_input_tokens'] > 0).sum(-1)
  encoder = l / (l + encoder_keys)
  real = batch['decoder_target_tokens'] > 0
  visible = np.arange(1, real.shape[1] + 1)[None, :]
  decoder = ((l / (l + visible)) * real).sum(-1) / real.sum(-1)
  return {'encoder_self': float(encoder.mean()),
          'decoder_self': float(decoder.mean())}


def greedy_check(model, params, data) -> Dict[str, int]:
  """Greedy decoding (predict_batch) vs the teacher-forced exact match."""
  import jax  # pylint: disable=g-import-not-at-top
  teacher_forced = np.asarray(jax.jit(exact_match_fn(model))(params, data))
  predictions = np.asarray(jax.jit(model.predict_batch)(params, data))
  targets = data['decoder_target_tokens']
  # Compare up to and including EOS: what the postprocessed output is.
  length = (targets > 0).sum(-1)
  greedy = np.array([np.array_equal(p[:n], t[:n])
                     for p, t, n in zip(predictions, targets, length)])
  return {'examples': int(len(greedy)), 'greedy_exact': int(greedy.sum()),
          'teacher_forced_exact': int(teacher_forced.sum()),
          'agree': int((greedy == teacher_forced).sum())}


def pretrain(settings: Settings, workdir: str) -> dict:
  """Span-corruption pretraining of the plain backbone (in a worker);
  saves it for the `pretrained` setting. Returns its loss curve and the
  loss a model would sit at that learned only the format
  (data.unstructured_floor)."""
  start, cpu_start = time.time(), time.process_time()
  from study import data  # pylint: disable=g-import-not-at-top
  model = build_model('none', 1)
  corpus = data.pretraining_corpus(settings.pretrain_examples, PRETRAIN_SEED,
                                   model.module.config.vocab_size)
  batches = data.replica_batches(corpus, settings.batch_size,
                                 [PRETRAIN_SEED])
  params, (losses,) = train_replicas(
      model, stack([init_params(model, PRETRAIN_SEED)]), 'full',
      [settings.pretrain_rate], batches, settings, settings.pretrain_steps,
      eval_every=max(settings.pretrain_steps // 20, 1))
  save_params(replica(params, 0), backbone_file(workdir, 'pretrained', 0, 0))
  return {'steps': settings.pretrain_steps,
          'examples': settings.pretrain_examples,
          'learning_rate': settings.pretrain_rate, 'losses': losses,
          'unstructured_floor': data.unstructured_floor(corpus),
          'seconds': time.time() - start,
          'cpu_seconds': time.process_time() - cpu_start}


def scale_counts() -> List[dict]:
  """hyperprompt.params.overhead_table at T5.1.1 Base, Large and XXL with 8
  tasks: each method with its default knobs (not the study's small ones)."""
  from bench import workload  # pylint: disable=g-import-not-at-top
  from hyperprompt import params as params_lib  # pylint: disable=g-import-not-at-top
  return params_lib.overhead_table(
      {size: workload.t5_config(size) for size in SCALE_SIZES},
      [SCALE_NUM_TASKS])


def conditioner_names() -> List[str]:
  """Every method that learns its conditioning, 'none' first
  (hyperprompt.conditioning.registry: the files of gin/models/conditioners)."""
  from hyperprompt.conditioning import registry  # pylint: disable=g-import-not-at-top
  return list(registry.names(learned=True))


# --- Orchestration ------------------------------------------------------------

def _worker_init(single_threaded: bool, cache_dir: str):
  if single_threaded:
    # One core's worth of threads per worker when several share the cores.
    os.environ.setdefault('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=false '
                          'intra_op_parallelism_threads=1')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  # Groups of one conditioner and regime compile the same programs: the
  # persistent cache compiles them once for all workers.
  os.environ['JAX_COMPILATION_CACHE_DIR'] = cache_dir
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'


def provenance(argv: Sequence[str]) -> dict:
  """What made the results: commit, dirty tree, machine, command, load."""
  from bench import machine  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  git = lambda *a: subprocess.run(['git', '-C', root, *a], check=True,
                                  capture_output=True, text=True).stdout
  return {
      'commit': git('rev-parse', 'HEAD').strip(),
      'dirty': bool(git('status', '--porcelain', '--untracked-files=no')
                    .strip()),
      'command': ' '.join(['python -m study.run', *argv]),
      'cpu': machine.cpu_model(), 'cores': os.cpu_count(),
      'platform': platform.platform(),
      'python': platform.python_version(),
      'load_before': list(os.getloadavg()),
      'busy_before': machine.busy_processes(),
      'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
  }


def _key(group_or_run) -> str:
  g = group_or_run
  get = (lambda k: g[k]) if isinstance(g, dict) else (
      lambda k: getattr(g, k))
  return f'{get("setting")}/{get("regime")}/{get("conditioner")}'


def run_study(settings: Settings, workdir: str, workers: int) -> dict:
  """Trains every group, sweeps first, respecting what each needs; returns
  the results (without provenance)."""
  start = time.time()
  conditioners = conditioner_names()
  runs, selected, extra = [], {}, {}
  sweeps = {}  # key -> its sweep's runs so far.
  done = set()
  none_key = 'scratch/full/none'

  def needs(job):
    kind, group = job
    if kind in ('pretrain', 'scale'):
      return set()
    need = {'pretrain'} if group.setting == 'pretrained' else set()
    if group.setting == 'scratch' and group.regime == 'conditioning':
      need.add(f'{group.stage}:{none_key}')
    return need

  # Longest chains first: pretraining, then None's scratch runs (every
  # scratch conditioning-only run needs their backbones).
  pending = [('pretrain', None)]
  if settings.scale_counts:
    pending.append(('scale', None))
  trained = groups_to_train(conditioners)
  trained.sort(key=lambda k: (k != ('scratch', 'full', 'none'),
                              k[0] != 'scratch', k[1] != 'full'))
  pending += [('sweep', sweep_group(settings, *k)) for k in trained]
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=context, initializer=_worker_init,
      initargs=(workers > 1, os.path.join(workdir, 'xla_cache'))) as pool:
    running = {}
    while pending or running:
      for job in list(pending):
        if len(running) >= workers:
          break
        if needs(job) <= done:
          pending.remove(job)
          kind, group = job
          if kind == 'pretrain':
            future = pool.submit(pretrain, settings, workdir)
          elif kind == 'scale':
            future = pool.submit(scale_counts)
          else:
            future = pool.submit(run_group, group, settings, workdir)
          running[future] = job
      finished, _ = concurrent.futures.wait(
          running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in finished:
        kind, group = running.pop(future)
        result = future.result()
        if kind in ('pretrain', 'scale'):
          extra[kind] = result
          done.add(kind)
          label = kind
        else:
          runs += result
          key = _key(group)
          label = f'{group.stage} {key} x{len(group.replicas)}'
          if group.stage == 'final':
            done.add(f'final:{key}')
            rate = None
          else:
            sweeps[key] = sweeps.get(key, []) + result
            rate = next_rate(settings, sweeps[key])
          if rate is not None:
            # Jumps the queue: its group's final runs wait on it.
            pending.insert(0, ('sweep', sweep_group(
                settings, group.setting, group.regime, group.conditioner,
                [rate])))
            label += f', best rate at an edge: next {rate:g}'
          elif group.stage == 'sweep':
            done.add(f'sweep:{key}')
            selected[key] = select_rate(sweeps[key])
            if key == none_key:
              with open(os.path.join(workdir, 'none_rate.json'), 'w') as f:
                json.dump({'rate': selected[key]}, f)
            if settings.seeds > settings.sweep_seeds:
              pending.insert(0, ('final', final_group(
                  settings, group.setting, group.regime, group.conditioner,
                  selected[key])))
            else:
              done.add(f'final:{key}')
        print(f'[{time.time() - start:6.0f}s] {label}', flush=True)
  return {
      'settings': dataclasses.asdict(settings),
      'conditioners': conditioners,
      'selected_rates': selected,
      'pretrain': extra.get('pretrain'),
      'scale_counts': extra.get('scale'),
      'runs': sorted(runs, key=lambda r: (r['setting'], r['regime'],
                                          r['conditioner'], r['seed'],
                                          r['learning_rate'])),
      'wall_seconds': time.time() - start,
      'workers': workers,
  }


def main(argv: Optional[List[str]] = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(prog='python -m study.run',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='2 seeds, 2 rates, a few dozen steps: a smoke run')
  parser.add_argument('--output_dir', default=None,
                      help='results.json and PNGs (default study/results, or '
                      '/tmp/hyperprompt_study_quick with --quick)')
  parser.add_argument('--markdown', default=None,
                      help='the report (default EXPERIMENTS.md, or '
                      '<output_dir>/EXPERIMENTS.md with --quick)')
  parser.add_argument('--workers', type=int, default=2,
                      help='parallel training processes')
  args = parser.parse_args(argv)
  output_dir = args.output_dir or ('/tmp/hyperprompt_study_quick'
                                   if args.quick else RESULTS_DIR)
  os.makedirs(output_dir, exist_ok=True)
  results_path = os.path.join(output_dir, 'results.json')
  origin = provenance(argv)
  import jax  # pylint: disable=g-import-not-at-top
  origin['jax'] = jax.__version__
  # Intermediate params and the compilation cache: not results.
  with tempfile.TemporaryDirectory(prefix='hyperprompt_study_') as workdir:
    results = run_study(QUICK if args.quick else FULL, workdir, args.workers)
  origin['load_after'] = list(os.getloadavg())
  results['provenance'] = origin
  with open(results_path, 'w') as f:
    json.dump(results, f, indent=1)
  from study import report  # pylint: disable=g-import-not-at-top
  markdown = args.markdown or (os.path.join(output_dir, 'EXPERIMENTS.md')
                               if args.quick else report.EXPERIMENTS_MD)
  report.write(results_path, markdown, output_dir)
  print(f'Wrote {results_path}, {markdown} and the charts in {output_dir}.')


if __name__ == '__main__':
  main()
