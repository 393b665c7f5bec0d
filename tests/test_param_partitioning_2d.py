"""2-D parameter partitioning (FSDP over 'data'): where parameters and their
Adafactor moments go, and training on 8 forced CPU devices with the losses of
the 1-D partitioning and of one device."""
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from hyperprompt import partitioning, trainer
from hyperprompt.layers import param_with_axes

TESTS = os.path.dirname(os.path.abspath(__file__))


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
  with pytest.raises(ValueError, match=r"kernel \(256, 384\).*3 ways.*'data'"):
    part.param_shardings(variables['params_axes'], variables['params'])


SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    import jax
    jax.config.update('jax_default_matmul_precision', 'highest')
    import numpy as np
    from hyperprompt import partitioning
    import runner_tiny, train_loop
    assert len(jax.devices()) == 8, jax.devices()
    batches = [runner_tiny.random_batch(8, seed=s) for s in range(3)]
    one = train_loop.losses(partitioning.Partitioner(
        devices=jax.devices()[:1]), batches)
    one_d = train_loop.losses(partitioning.Partitioner(num_partitions=2),
                              batches)
    two_d = train_loop.losses(partitioning.Partitioner(
        num_partitions=2, parameter_partitioning_dims=2), batches)
    print('LOSSES', one, one_d, two_d)
    np.testing.assert_allclose(two_d, one_d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(two_d, one, rtol=1e-5, atol=1e-5)
    print('OK')
''')


def test_2d_trains_like_1d_on_8_devices():
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = subprocess.run([sys.executable, '-c', SCRIPT.format(tests=TESTS)],
                        env=env, capture_output=True, text=True, timeout=600)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0 and 'OK' in out, out[-4000:]
