"""Train and eval steps (pure), optimizers and learning-rate schedules.

Everything here is a pure function of its inputs, so the runner can jit it
with shardings; I/O, logging and checkpoints live in runner.py.

Optimizers are optax GradientTransformations. `adafactor` is T5.1.1's setting
in t5x (factored second moments, decay rate 0.8, no momentum, update clipping
at 1.0, updates scaled by the parameter's RMS; fused in adafactor.py);
`adamw` is optax's, the usual alternative. Either can be
restricted to the conditioning parameters with `train='conditioning'`
(hyperprompt.freezing): the step then differentiates only those, and the
optimizer state covers only those.
"""
from typing import Any, Callable, Mapping, Optional, Tuple, Union

import flax
import gin
import jax
import jax.numpy as jnp
import optax

from hyperprompt import adafactor as adafactor_lib
from hyperprompt import freezing

Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, jax.Array]
# All parameters train, or a frozen part (freezing.Partial).
Optimizer = Union[optax.GradientTransformation, freezing.Partial]


# --- Learning-rate schedules -------------------------------------------------

@gin.configurable(module='hyperprompt.trainer')
def constant_schedule(learning_rate: float = 1e-3) -> optax.Schedule:
  """T5's fine-tuning schedule (1e-3 with Adafactor)."""
  return optax.constant_schedule(learning_rate)


@gin.configurable(module='hyperprompt.trainer')
def rsqrt_schedule(base_learning_rate: float = 1.0,
                   warmup_steps: int = 10_000) -> optax.Schedule:
  """T5's pre-training schedule: base / sqrt(max(step, warmup)).

  Constant base / sqrt(warmup) during warmup, then inverse square root decay.
  """
  def schedule(step):
    return base_learning_rate * jax.lax.rsqrt(
        jnp.maximum(step, warmup_steps).astype(jnp.float32))
  return schedule


@gin.configurable(module='hyperprompt.trainer')
def linear_decay_schedule(learning_rate: float = 1e-3, warmup_steps: int = 0,
                          decay_steps: int = gin.REQUIRED,
                          end_value: float = 0.0) -> optax.Schedule:
  """Linear warmup from 0, then linear decay to `end_value` at `decay_steps`."""
  return optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, warmup_steps),
       optax.linear_schedule(learning_rate, end_value,
                             max(decay_steps - warmup_steps, 1))],
      [warmup_steps])


@gin.configurable(module='hyperprompt.trainer')
def cosine_decay_schedule(learning_rate: float = 1e-3, warmup_steps: int = 0,
                          decay_steps: int = gin.REQUIRED,
                          end_value: float = 0.0) -> optax.Schedule:
  """Linear warmup from 0, then cosine decay to `end_value` at `decay_steps`."""
  return optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, warmup_steps, decay_steps, end_value)


# --- Optimizers --------------------------------------------------------------

@gin.configurable(module='hyperprompt.trainer')
def adafactor(learning_rate: optax.ScalarOrSchedule
              ) -> optax.GradientTransformation:
  """Adafactor as T5.1.1 trains with it (t5x's defaults for T5.1.1).

  `hyperprompt.adafactor`: optax.adafactor's numbers, fused per parameter.
  """
  return adafactor_lib.adafactor(learning_rate, decay_rate=0.8,
                                 clipping_threshold=1.0, min_param_scale=1e-3,
                                 eps=1e-30)


@gin.configurable(module='hyperprompt.trainer')
def adamw(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9,
          b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
          max_grad_norm: Optional[float] = 1.0
          ) -> optax.GradientTransformation:
  """AdamW, with optional global-norm gradient clipping first."""
  opt = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps,
                    weight_decay=weight_decay)
  if max_grad_norm is None:
    return opt
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)


@gin.configurable(module='hyperprompt.trainer')
def make_optimizer(params: Any,
                   optimizer_fn: Callable[..., optax.GradientTransformation]
                   = adafactor,
                   schedule_fn: Callable[[], optax.Schedule]
                   = constant_schedule,
                   train: str = 'all') -> Optimizer:
  """The run's optimizer: `optimizer_fn(schedule_fn())`, then freezing.

  Args:
    params: the parameter tree (arrays or shapes), for the freeze mask.
    optimizer_fn: `adafactor` or `adamw` (or any optax factory).
    schedule_fn: `constant_schedule`, `rsqrt_schedule`, ...
    train: 'all' (the paper's main setting), 'conditioning' (backbone
      frozen; only `params['conditioner']` is differentiated and updated)
      or 'backbone' (the conditioner frozen).

  Returns:
    The optax optimizer for 'all', else a `freezing.Partial` wrapping it.
  """
  return freezing.freeze(optimizer_fn(schedule_fn()), params, train=train)


# --- State and steps ---------------------------------------------------------

@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds besides the data position.

  `opt_state` is the optimizer's state for the trainable parameters only
  (all of them, or the trainable part of a `freezing.Partial`).
  """
  step: jax.Array            # int32 scalar
  params: Any
  opt_state: Any


def init_state(params: Any, optimizer: Optimizer) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def train_step(model, optimizer: Optimizer, state: TrainState, batch: Batch,
               dropout_rng: jax.Array) -> Tuple[TrainState, Metrics]:
  """One optimizer step on one global batch.

  The dropout key is folded with the step, so a resumed run draws the same
  dropout masks as an uninterrupted one. With a `freezing.Partial`
  optimizer the gradient is taken with respect to the trainable part only;
  the frozen part enters the loss as a constant, so no gradient is computed
  for it and 'grad_norm' spans the trainable parameters.
  """
  rng = jax.random.fold_in(dropout_rng, state.step)
  if isinstance(optimizer, freezing.Partial):
    trainable, frozen = freezing.split(state.params, optimizer.train)
    loss_fn = lambda t, b, r: model.loss_fn(freezing.merge(t, frozen), b, r)
    optimizer = optimizer.optimizer
  else:
    trainable, frozen, loss_fn = state.params, None, model.loss_fn
  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      trainable, batch, rng)
  updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
  params = optax.apply_updates(trainable, updates)
  if frozen is not None:
    params = freezing.merge(params, frozen)
  metrics = dict(metrics)
  metrics['grad_norm'] = optax.global_norm(grads)
  return TrainState(step=state.step + 1, params=params,
                    opt_state=opt_state), metrics
