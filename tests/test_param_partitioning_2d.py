"""2-D parameter partitioning (FSDP over 'data'): where parameters and their
Adafactor moments go. Training with it on 8 forced CPU devices is compared
with 1-D and one device in test_partitioning's mesh test."""
import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P
import pytest

from hyperprompt import partitioning, trainer
from hyperprompt.conditioning.axes import PARAMETER_EMBED
from hyperprompt.layers import param_with_axes


class _Params(nn.Module):

  @nn.compact
  def __call__(self):
    return (param_with_axes('kernel', nn.initializers.zeros, (256, 384),
                            axes=('embed', 'mlp')),
            param_with_axes('scale', nn.initializers.zeros, (256,),
                            axes=('embed',)),
            param_with_axes('stacked', nn.initializers.zeros, (3, 256, 384),
                            axes=('layers', 'embed', 'joined_kv')))


def test_embed_goes_over_data_for_params_and_moments():
  """The placement is read off the specs, checked against the rule: 'embed'
  over 'data', the 1-D rules otherwise; activations keep the 1-D rules."""
  # One device repeated gives a mesh shape without needing 8 devices here.
  part = partitioning.Partitioner(num_partitions=1,
                                  devices=jax.devices()[:1] * 4,
                                  parameter_partitioning_dims=2)
  variables = jax.eval_shape(lambda: _Params().init(jax.random.PRNGKey(0)))
  params, axes = variables['params'], variables['params_axes']
  specs = jax.tree.map(lambda s: s.spec,
                       part.param_shardings(axes, params))
  assert specs == {'kernel': P('data', 'model'), 'scale': P('data'),
                   'stacked': P(None, 'data', 'model')}
  opt = jax.eval_shape(trainer.adafactor(1e-3).init, params)
  moments = part.state_shardings(opt, axes, params)
  assert moments.v_row['kernel'].spec == P('data')  # [256]
  assert moments.v_col['kernel'].spec == P('model')  # [384]
  assert moments.v['scale'].spec == P('data')
  assert dict(part.rules)['embed'] is None  # Activations: 1-D.
  # Parameters used as values in the layers (per-task adapter weights) keep
  # their parameters' split: 'data' here, replicated with 1-D partitioning.
  assert dict(part.rules)[PARAMETER_EMBED] == 'data'
  one_d = partitioning.Partitioner(devices=jax.devices()[:1])
  assert dict(one_d.rules)[PARAMETER_EMBED] is None


def test_bad_dims_and_indivisible_embed_are_clear_errors():
  with pytest.raises(ValueError, match='parameter_partitioning_dims must be'):
    partitioning.Partitioner(devices=jax.devices()[:1],
                             parameter_partitioning_dims=3)
  part = partitioning.Partitioner(devices=jax.devices()[:1] * 3,
                                  parameter_partitioning_dims=2)
  variables = jax.eval_shape(lambda: _Params().init(jax.random.PRNGKey(0)))
  with pytest.raises(ValueError, match=r"kernel \(256, 384\).*3 ways.*'data'"):
    part.param_shardings(variables['params_axes'], variables['params'])

