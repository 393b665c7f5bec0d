"""Three training steps of the tiny model on a given partitioner (used by the
mesh and multi-process tests, which run it in subprocesses)."""
import jax

from hyperprompt import train_state, trainer
import runner_tiny


def losses(partitioner, host_batches, conditioner=None):
  """Losses of consecutive train steps; host_batches are this host's rows.
  The tiny model has HyperPrompt-Global unless another `conditioner`."""
  model = runner_tiny.tiny_model(conditioner=conditioner)
  rows = sum(len(b['task_ids']) for b in host_batches[:1])
  shapes = train_state.input_shapes(model, runner_tiny.LENGTHS,
                                    rows * len(partitioner.processes))
  params, axes = train_state.init_params(model, shapes, partitioner, seed=0)
  optimizer = trainer.adafactor(1e-2)
  shardings = train_state.state_shardings(partitioner, optimizer, params,
                                          axes)
  state = train_state.jit_init_state(partitioner, optimizer,
                                     shardings)(params)
  step = train_state.jit_train_step(model, optimizer, partitioner, shardings)
  out = []
  for batch in host_batches:
    state, metrics = step(state, partitioner.global_batch(
        model.validate_batch(batch)), jax.random.PRNGKey(1))
    out.append(float(metrics['loss']))
  return out
