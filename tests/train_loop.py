"""Three training steps of the tiny model on a given partitioner (used by the
mesh and multi-process tests, which run it in subprocesses)."""
import jax

from hyperprompt import runner, trainer
import runner_tiny


def losses(partitioner, host_batches):
  """Losses of consecutive train steps; host_batches are this host's rows."""
  model = runner_tiny.tiny_model()
  rows = sum(len(b['task_ids']) for b in host_batches[:1])
  shapes = runner._input_shapes(model, runner_tiny.LENGTHS,
                                rows * len(partitioner.processes))
  params, axes = runner.init_params(model, shapes, partitioner, seed=0)
  optimizer = trainer.adafactor(1e-2)
  shardings = runner._state_shardings(partitioner, optimizer, params, axes)
  state = partitioner.jit(lambda p: trainer.init_state(p, optimizer),
                          in_shardings=(shardings.params,),
                          out_shardings=shardings)(params)
  step = partitioner.jit(
      lambda s, b, r: trainer.train_step(model, optimizer, s, b, r),
      in_shardings=(shardings, partitioner.data_sharding, None),
      out_shardings=(shardings, partitioner.replicated))
  out = []
  for batch in host_batches:
    state, metrics = step(state, partitioner.global_batch(
        model.validate_batch(batch)), jax.random.PRNGKey(1))
    out.append(float(metrics['loss']))
  return out
