"""The sharded train state and the jitted train step, built in one place.

Like t5x's `TrainStateInitializer` and `Trainer._partitioned_train_step`: the
runner, the benchmarks, the study and the tests all build the state and the
step here, so "jitted exactly as runner.train jits it" holds by construction.

    shapes = input_shapes(model, task_feature_lengths, batch_size)
    params, params_axes = init_params(model, shapes, partitioner, seed)
    optimizer = make_optimizer(params)
    shardings = state_shardings(partitioner, optimizer, params, params_axes)
    state = jit_init_state(partitioner, optimizer, shardings)(params)
    step = jit_train_step(model, optimizer, partitioner, shardings)
    state, metrics = step(state, partitioner.global_batch(host_batch), rng)
"""
from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from hyperprompt import data
from hyperprompt import partitioning
from hyperprompt import trainer

Shapes = Mapping[str, Tuple[int, ...]]


def input_shapes(model, task_feature_lengths: Mapping[str, int],
                 batch_size: int) -> Shapes:
  """{feature: shape} of the model's inputs for a batch of `batch_size`."""
  lengths = data.model_feature_lengths(task_feature_lengths, model)
  return {
      'encoder_input_tokens': (batch_size, lengths['encoder_input_tokens']),
      'decoder_input_tokens': (batch_size, lengths['decoder_input_tokens']),
      'task_ids': (batch_size,),
  }


def _input_types(shapes: Shapes):
  return {k: jnp.int32 for k in shapes}


def abstract_params(model, shapes: Shapes,
                    partitioner: partitioning.Partitioner):
  """(params as ShapeDtypeStructs with shardings, params_axes)."""
  variables = jax.eval_shape(
      lambda: model.get_initial_variables(
          jax.random.PRNGKey(0), shapes, _input_types(shapes)))
  params_axes = variables['params_axes']
  shardings = partitioner.param_shardings(params_axes, variables['params'])
  params = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      variables['params'], shardings)
  return params, params_axes


def init_params(model, shapes: Shapes, partitioner: partitioning.Partitioner,
                seed: int, initial_checkpoint_path: Optional[str] = None):
  """(params, params_axes): fresh parameters created sharded (never whole on
  one host), or a pretrained backbone loaded into them."""
  abstract, params_axes = abstract_params(model, shapes, partitioner)
  shardings = jax.tree.map(lambda a: a.sharding, abstract)
  init = partitioner.jit(
      lambda rng: model.get_initial_variables(
          rng, shapes, _input_types(shapes))['params'],
      in_shardings=None, out_shardings=shardings)
  params = init(jax.random.PRNGKey(seed))
  if initial_checkpoint_path:
    params = load_pretrained(initial_checkpoint_path, params, shardings)
  return params, params_axes


def load_pretrained(path: str, params, shardings):
  """Loads a pretrained backbone into `params` (conditioner stays fresh)."""
  from hyperprompt import pretrained  # pylint: disable=g-import-not-at-top
  # The freshly initialised params are the template: whatever the checkpoint
  # lacks (the conditioner) keeps its initial values.
  loaded = pretrained.load_pretrained(path, jax.device_get(params))
  return jax.tree.map(lambda v, sh: jax.device_put(np.asarray(v), sh),
                      loaded, shardings)


def state_shardings(partitioner: partitioning.Partitioner,
                    optimizer: trainer.Optimizer, params: Any,
                    params_axes: Mapping[str, Any]) -> trainer.TrainState:
  """A TrainState of shardings; `params` are sharded arrays or abstract
  params (whatever has `.sharding`): their shardings are kept."""
  abstract = jax.eval_shape(lambda p: trainer.init_state(p, optimizer),
                            params)
  opt_shardings = partitioner.state_shardings(abstract.opt_state, params_axes,
                                              params)
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  return trainer.TrainState(step=partitioner.replicated,
                            params=param_shardings, opt_state=opt_shardings)


def abstract_state(optimizer: trainer.Optimizer, params: Any,
                   shardings: trainer.TrainState) -> trainer.TrainState:
  """The state as ShapeDtypeStructs with `shardings` (a restore target)."""
  return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      jax.eval_shape(lambda p: trainer.init_state(p, optimizer), params),
      shardings)


def jit_init_state(partitioner: partitioning.Partitioner,
                   optimizer: trainer.Optimizer,
                   shardings: trainer.TrainState):
  """params -> TrainState at step 0, laid out on `shardings`."""
  return partitioner.jit(lambda p: trainer.init_state(p, optimizer),
                         in_shardings=(shardings.params,),
                         out_shardings=shardings)


def jit_train_step(model, optimizer: trainer.Optimizer,
                   partitioner: partitioning.Partitioner,
                   shardings: trainer.TrainState):
  """(state, global batch, dropout key) -> (state, metrics): trainer.train_step
  with the state on `shardings`, the batch split over 'data' and metrics
  replicated. The input state is donated (its buffers become the output's):
  do not use it after the call."""
  return partitioner.jit(
      lambda state, batch, rng: trainer.train_step(model, optimizer, state,
                                                   batch, rng),
      in_shardings=(shardings, partitioner.data_sharding, None),
      out_shardings=(shardings, partitioner.replicated),
      donate_argnums=(0,))
