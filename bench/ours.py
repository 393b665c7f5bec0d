"""Our training step and greedy decoding, on the runner's own code path.

The state and step are built by `train_state`, as `runner.train` builds them
(partitioner shardings, state donated), with the runner's default optimizer
(Adafactor). Compilations are counted with a `jax.monitoring` listener on
XLA's backend-compile event, so "no recompilation after the first step" is
measured, not assumed.
"""
from typing import Dict, Tuple

import jax
import numpy as np
import seqio

from bench import flops as flops_lib
from bench import timing
from hyperprompt import models
from hyperprompt import network
from hyperprompt import partitioning
from hyperprompt import train_state
from hyperprompt import trainer
from hyperprompt.conditioning import (adapters, hyperformer, hyperprompt,
                                      none, placement, prefix_tuning,
                                      prompt_tuning, registry)
from hyperprompt.config import T5Config

# Benchmark rows beyond the methods of gin/models/conditioners/ (each with
# its code defaults; HyperPrompt and prefix tuning use l = 16): a method with
# other settings, as (method, overrides, what differs, for tables).
VARIANTS = {
    'prefix_tuning_decoder': ('prefix_tuning', {'placement': 'decoder'},
                              "decoder self-attention only (PEFT's "
                              'placement)'),
}


def conditioner_names() -> Tuple[str, ...]:
  """Every conditioner the benchmarks run: the methods that learn their
  conditioning (conditioning.registry), then VARIANTS."""
  return registry.names(learned=True) + tuple(VARIANTS)


def make_conditioner(name: str, num_tasks: int):
  """The Conditioner of `name`, a registry method or one of VARIANTS."""
  if name in VARIANTS:
    method, overrides, _ = VARIANTS[name]
    return registry.conditioner(method, num_tasks, **overrides)
  return registry.conditioner(name, num_tasks)


def display_name(name: str) -> str:
  """How tables and charts name conditioner `name`."""
  if name in VARIANTS:
    method, _, what = VARIANTS[name]
    return f'{registry.display_name(method)}, {what}'
  return registry.display_name(name)


# Decoding never stops at an end-of-sequence token, like `min_new_tokens` in
# transformers' generate: both sides decode exactly the same number of tokens.
NO_EOS = -1


class CompileCounter:
  """Counts XLA backend compilations in this process."""
  EVENT = '/jax/core/compile/backend_compile_duration'

  def __init__(self):
    self.count = 0
    self.seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event, duration, **kwargs):
    del kwargs
    if event == self.EVENT:
      self.count += 1
      self.seconds += duration


def conditioned(cfg: T5Config, conditioner,
                num_tasks: int) -> flops_lib.Conditioned:
  """What `conditioner` changes in the backbone's FLOPs, from its fields."""
  if isinstance(conditioner, none.NoConditioning):
    return flops_lib.Conditioned()
  T, d, hd = num_tasks, cfg.emb_dim, cfg.joined_kv
  if isinstance(conditioner, (hyperprompt.HyperPrompt,
                              prefix_tuning.PrefixTuning)):
    sites = placement.prompt_sites(cfg, conditioner.placement,
                                   conditioner.cross_attention)
    M = len(sites)
    stacks = {(s.stack, s.kind) for s in sites}
    if isinstance(conditioner, hyperprompt.HyperPromptGlobal):
      l, b = conditioner.prompt_length, conditioner.bottleneck
      tp, t = conditioner.task_embed_dim, conditioner.layer_task_dim
      ops = 2 * T * M * (2 * tp * t + t * t)  # h_t
      # Key and value: P_tau @ H_D per task, I @ that per site, U = I @ H_U,
      # ReLU(.) @ U (hyperprompt.py: D is never formed).
      ops += 2 * (2 * T * l * d * t * b + 2 * T * M * l * t * b +
                  2 * T * M * t * b * hd + 2 * T * M * l * b * hd)
    elif isinstance(conditioner, hyperprompt.HyperPrompt):
      l, b = conditioner.prompt_length, conditioner.bottleneck
      # Key and value: ReLU(P_tau @ D) @ U for every task and site.
      ops = 2 * (2 * T * M * l * b * (d + hd))
    else:
      l, k, hidden = (conditioner.prompt_length, conditioner.prompt_dim,
                      conditioner.hidden_dim)
      ops = 2 * T * l * (k * hidden + hidden * 2 * M * hd)
    return flops_lib.Conditioned(
        encoder_prefix=l if ('encoder', 'self') in stacks else 0,
        decoder_prefix=l if ('decoder', 'self') in stacks else 0,
        cross_prefix=l if ('decoder', 'cross') in stacks else 0,
        conditioner_flops=ops)
  if isinstance(conditioner, prompt_tuning.PromptTuning):
    return flops_lib.Conditioned(input_prompts=conditioner.prompt_length)
  if isinstance(conditioner, (adapters.Adapters, hyperformer.HyperFormer)):
    if conditioner.placement != 'both':
      raise NotImplementedError('FLOPs are counted for placement="both".')
    ops = 0
    if isinstance(conditioner, hyperformer.HyperFormer):
      L = len(placement.conditioned_layers(cfg, conditioner.placement))
      tp, hidden, t, r = (conditioner.task_embed_dim,
                          conditioner.projector_hidden_dim,
                          conditioner.layer_task_dim, conditioner.bottleneck)
      generated = 2 * d * r + r + 3 * d
      ops = 2 * T * L * (3 * tp * hidden + hidden * t + t * generated)
    return flops_lib.Conditioned(adapter_dim=conditioner.bottleneck,
                                 conditioner_flops=ops)
  raise ValueError(f'No FLOP model for {type(conditioner).__name__}.')


def step_flops(cfg: T5Config, conditioner, num_tasks: int, train_params: str,
               batch: int, inputs: int, targets: int) -> int:
  """Analytic matmul FLOPs of our training step (bench/flops.py)."""
  cond = conditioned(cfg, conditioner, num_tasks)
  if train_params == 'conditioning':
    return flops_lib.frozen_backbone_step_flops(cfg, batch, inputs, targets,
                                                cond)
  if train_params != 'all':
    raise ValueError(f'No FLOP model for train_params={train_params!r}.')
  return flops_lib.train_step_flops(cfg, batch, inputs, targets, cond)


def state_bytes(state) -> Dict[str, int]:
  """Bytes of a TrainState's parameters and optimizer state."""
  count = lambda tree: int(sum(x.size * x.dtype.itemsize
                               for x in jax.tree.leaves(tree)))
  return {'params': count(state.params), 'opt_state': count(state.opt_state)}


def build_model(cfg: T5Config, conditioner_name: str, num_tasks: int):
  if conditioner_name not in conditioner_names():
    raise ValueError(f'Unknown conditioner {conditioner_name!r}; choose from '
                     f'{", ".join(conditioner_names())}.')
  conditioner = make_conditioner(conditioner_name, num_tasks)
  vocabulary = seqio.PassThroughVocabulary(cfg.vocab_size, eos_id=NO_EOS)
  module = network.Transformer(cfg, conditioner)
  return models.EncoderDecoderModel(module, vocabulary, vocabulary), \
      conditioner


def init_params(model, batch, partitioner):
  """(params, params_axes) for batches shaped like `batch`, seed 0."""
  shapes = {k: batch[k].shape for k in models.INPUT_FEATURES}
  return train_state.init_params(model, shapes, partitioner, seed=0)


def train_step(model, optimizer, params, params_axes, partitioner):
  """(initial state, jitted step) as runner.train builds them."""
  shardings = train_state.state_shardings(partitioner, optimizer, params,
                                          params_axes)
  state = train_state.jit_init_state(partitioner, optimizer,
                                     shardings)(params)
  return state, train_state.jit_train_step(model, optimizer, partitioner,
                                           shardings)


def train(cfg: T5Config, conditioner_name: str, batch: Dict[str, np.ndarray],
          *, num_tasks: int, warmup: int = 2, steps: int = 5,
          train_params: str = 'all',
          prng_impl: str = 'threefry2x32') -> Dict:
  """Times `trainer.train_step` (`train_job`) alone."""
  return timing.run(train_job(cfg, conditioner_name, batch,
                              num_tasks=num_tasks, train_params=train_params,
                              prng_impl=prng_impl), warmup, steps)


def train_job(cfg: T5Config, conditioner_name: str,
              batch: Dict[str, np.ndarray], *, num_tasks: int,
              train_params: str = 'all',
              prng_impl: str = 'threefry2x32') -> timing.Timed:
  """`trainer.train_step` ready to time; its result has XLA's FLOPs and
  memory of the step.

  Args:
    train_params: 'all' (full fine-tuning) or 'conditioning' (frozen
      backbone, as PEFT trains).
    prng_impl: the dropout key's implementation (runner.train's
      `prng_impl`).
  """
  counter = CompileCounter()
  model, conditioner = build_model(cfg, conditioner_name, num_tasks)
  partitioner = partitioning.Partitioner()
  batch = model.validate_batch(batch)
  params, params_axes = init_params(model, batch, partitioner)
  optimizer = trainer.make_optimizer(params, train=train_params)
  state, step_fn = train_step(model, optimizer, params, params_axes,
                              partitioner)
  device_batch = partitioner.global_batch(batch)
  rng = jax.random.key(0, impl=prng_impl)
  compiled = step_fn.lower(state, device_batch, rng).compile()
  cost = compiled.cost_analysis()
  memory = compiled.memory_analysis()

  # What the steps change, and the compile count when the first ended.
  live = {'state': state, 'compiles_first': None}

  def step():
    live['state'], live['metrics'] = jax.block_until_ready(
        step_fn(live['state'], device_batch, rng))
    if live['compiles_first'] is None:
      live['compiles_first'] = counter.count

  n_params = sum(x.size for x in jax.tree.leaves(params))
  n_cond = sum(x.size for x in jax.tree.leaves(params.get('conditioner', {})))
  return timing.Timed(step, lambda times: {
      **timing.summary(times),
      'loss': float(live['metrics']['loss']),
      # Initialisation and the step itself, all before the first step ends.
      'compiles_until_first_step': live['compiles_first'],
      'compiles_after_first_step': counter.count - live['compiles_first'],
      'compile_seconds': counter.seconds,
      'xla_flops': float(cost['flops']),
      'analytic_flops': step_flops(
          cfg, conditioner, num_tasks, train_params,
          *batch['decoder_target_tokens'].shape[:1],
          batch['encoder_input_tokens'].shape[1],
          batch['decoder_target_tokens'].shape[1]),
      'state_bytes': state_bytes(live['state']),
      'xla_memory_bytes': {
          'arguments': memory.argument_size_in_bytes,
          'outputs': memory.output_size_in_bytes,
          'aliased': memory.alias_size_in_bytes,
          'temporaries': memory.temp_size_in_bytes,
      },
      'params': int(n_params),
      'conditioner_params': int(n_cond),
  })


def decode_step_flops(decoder_params, cache, batch: int) -> int:
  """Matmul FLOPs of one cached decode step: each weight matrix the step
  uses times the batch's rows (the cross-attention keys' and values'
  projections ran once, at cache creation), and the attention logits and
  values over every cached key (written or not, as the step computes them).
  """
  def used(path):
    names = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
    cached_once = ('encoder_decoder_attention' in names and
                   names[-2] in ('key', 'value'))
    return names[-1] == 'kernel' and not cached_once
  weights = sum(x.size for path, x in
                jax.tree_util.tree_flatten_with_path(decoder_params)[0]
                if used(path))
  # cached_key [batch, heads, head_dim, length]: logits and values, 2 each.
  keys = sum(x.size for path, x in
             jax.tree_util.tree_flatten_with_path(cache)[0]
             if path[-1] == jax.tree_util.DictKey('cached_key'))
  return 2 * batch * weights + 4 * keys


def decode(cfg: T5Config, conditioner_name: str,
           batch: Dict[str, np.ndarray], *, num_tasks: int,
           warmup: int = 1, steps: int = 3) -> Dict:
  """Times greedy decoding (`decode_job`) alone."""
  return timing.run(decode_job(cfg, conditioner_name, batch,
                               num_tasks=num_tasks), warmup, steps)


def decode_job(cfg: T5Config, conditioner_name: str,
               batch: Dict[str, np.ndarray], *,
               num_tasks: int) -> timing.Timed:
  """Greedy `predict_batch` (cache, one conditioner call per decode) ready
  to time; a step is a whole decode.

  Its result also has what a decode must read and compute, for the
  roofline: the decoder's parameters and the cache are read once per
  generated position, and each position multiplies every decoder weight
  matrix by the batch's rows and attends over the cache (at batch 8 reading
  bounds a step, at batch 64 computing does); the encoder runs once.
  """
  if cfg.logits_via_embedding:
    raise NotImplementedError('The decoding roofline counts logits_dense; '
                              'a tied output layer is not counted.')
  counter = CompileCounter()
  model, _ = build_model(cfg, conditioner_name, num_tasks)
  partitioner = partitioning.Partitioner()
  batch = model.validate_batch(batch)
  params, _ = init_params(model, batch, partitioner)
  features = {k: batch[k] for k in models.INPUT_FEATURES}
  with partitioner.context():
    predict = jax.jit(model.predict_batch)
    device_batch = partitioner.global_batch(features)
  # The last decode's tokens, and the compile count when the first ended.
  live = {'compiles_first': None}

  def step():
    with partitioner.context():
      live['tokens'] = jax.block_until_ready(predict(params, device_batch))
    if live['compiles_first'] is None:
      live['compiles_first'] = counter.count

  cache = jax.eval_shape(
      lambda p, b: model.module.apply(
          {'params': p}, b['encoder_input_tokens'], b['decoder_input_tokens'],
          task_ids=b['task_ids'], enable_dropout=False, decode=True,
          mutable=['cache'])[1], params, features)
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize
                            for x in jax.tree.leaves(tree))
  encoder_params = sum(x.size for x in jax.tree.leaves(params['encoder']))
  return timing.Timed(step, lambda times: {
      **timing.summary(times),
      'bytes_per_position': nbytes(params['decoder']) + nbytes(cache),
      'flops_per_position': decode_step_flops(params['decoder'], cache,
                                              len(features['task_ids'])),
      # Matmul FLOPs of the encoder pass (projections and MLP).
      'encoder_flops': 2 * encoder_params * features[
          'encoder_input_tokens'].size,
      'generated_length': int(live['tokens'].shape[1]),
      'all_generated': bool(np.all(np.asarray(live['tokens']) != 0)),
      'compiles_after_first_call': counter.count - live['compiles_first'],
  })
