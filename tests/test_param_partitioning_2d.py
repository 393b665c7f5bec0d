"""2-D parameter partitioning (FSDP over 'data'): where parameters and their
Adafactor moments go, and the adapters' weights, split over 'data' with 1-D
partitioning too. Training with it on 8 forced CPU devices is compared with
1-D and one device in test_partitioning's mesh test."""
import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P
import pytest

from hyperprompt import partitioning, trainer
from hyperprompt.conditioning.adapters import Adapters
from hyperprompt.config import T5Config
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


def test_bad_dims_and_indivisible_embed_are_clear_errors():
  with pytest.raises(ValueError, match='parameter_partitioning_dims must be'):
    partitioning.Partitioner(devices=jax.devices()[:1],
                             parameter_partitioning_dims=3)
  part = partitioning.Partitioner(devices=jax.devices()[:1] * 3,
                                  parameter_partitioning_dims=2)
  variables = jax.eval_shape(lambda: _Params().init(jax.random.PRNGKey(0)))
  with pytest.raises(ValueError, match=r"kernel \(256, 384\).*3 ways.*'data'"
                     r".*quotient"):
    part.param_shardings(variables['params_axes'], variables['params'])
  # The 'model' axis is num_partitions itself: 384 does not split 5 ways.
  part = partitioning.Partitioner(num_partitions=5,
                                  devices=jax.devices()[:1] * 5)
  with pytest.raises(ValueError, match=r"kernel \(256, 384\).*5 ways over "
                     r"mesh axis 'model'. Choose num_partitions dividing"):
    part.param_shardings(variables['params_axes'], variables['params'])


def _adapters(emb_dim):
  config = T5Config(vocab_size=8, emb_dim=emb_dim, num_heads=2, head_dim=4,
                    num_encoder_layers=2, num_decoder_layers=1, mlp_dim=8)
  module = Adapters(num_tasks=3, bottleneck=4)
  return jax.eval_shape(lambda: module.init(
      jax.random.PRNGKey(0), jax.numpy.zeros((2,), jax.numpy.int32), config))


@pytest.mark.parametrize('dims', [1, 2])
def test_adapter_width_goes_over_data_with_1d_and_2d(dims):
  """The adapters' [tasks, layers, d, r] weights split d over 'data' like
  FSDP, also where the backbone is 1-D (issue 13), and so do their
  (unfactored) second moments; r and the tasks and layers stay whole."""
  part = partitioning.Partitioner(num_partitions=2,
                                  devices=jax.devices()[:1] * 8,
                                  parameter_partitioning_dims=dims)
  variables = _adapters(emb_dim=16)
  params, axes = variables['params'], variables['params_axes']
  assert params['down'].shape == (3, 3, 16, 4)
  specs = jax.tree.map(lambda s: s.spec, part.param_shardings(axes, params))
  assert specs == {'down': P(None, None, 'data', None),
                   'down_bias': P(None, None, None),
                   'up': P(None, None, None, 'data'),
                   'up_bias': P(None, None, 'data')}
  opt = jax.eval_shape(trainer.adafactor(1e-3).init, params)
  moments = part.state_shardings(opt, axes, params)
  assert jax.tree.map(lambda s: s.spec, moments.v) == specs
  # Each layer's per-task weights keep that split until the layer gathers
  # them (interface.apply_adapter's constraint uses the activation rules).
  assert dict(part.rules)['adapter_embed'] == 'data'


def test_adapter_width_not_dividing_data_is_a_clear_error():
  part = partitioning.Partitioner(devices=jax.devices()[:1] * 3)
  variables = _adapters(emb_dim=16)
  with pytest.raises(ValueError, match=r"down \(3, 3, 16, 4\).*"
                     r"adapter_embed.*3 ways over mesh axis 'data'.*"
                     r"quotient \(the 'data' axis\)"):
    part.param_shardings(variables['params_axes'], variables['params'])
