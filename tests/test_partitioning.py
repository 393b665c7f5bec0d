"""Partitioning: logical rules, shardings of params and optimizer state, and
training on a 4x2 mesh giving the one-device losses (two processes: see
test_evaluation_hosts.py)."""
import os
import subprocess
import sys
import textwrap

import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

from hyperprompt import partitioning, trainer
from hyperprompt.layers import param_with_axes

TESTS = os.path.dirname(os.path.abspath(__file__))


def _spec(partitioner, axes, shape):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class One(nn.Module):
    @nn.compact
    def __call__(self):
      return param_with_axes('w', nn.initializers.zeros, shape, axes=axes)

  variables = jax.eval_shape(lambda: One().init(jax.random.PRNGKey(0)))
  return partitioner.param_shardings(variables['params_axes'],
                                     variables['params'])['w'].spec


def test_logical_rules_map_model_axes_and_replicate_unknown_names():
  devices = [jax.devices()[0]] * 1
  part = partitioning.Partitioner(devices=devices)
  assert _spec(part, ('embed', 'mlp'), (4, 6)) == P(None, 'model')
  assert _spec(part, ('joined_kv', 'embed'), (4, 6)) == P('model', None)
  assert _spec(part, ('vocab', 'embed'), (4, 6)) == P('model', None)
  # A conditioner's own names are replicated, not an error.
  assert _spec(part, ('brand_new_axis', 'tasks'), (4, 6)) == P(None, None)
  # A repeated name is split once.
  assert _spec(part, ('mlp', 'mlp'), (4, 6)) == P('model', None)


def test_every_conditioner_axis_name_has_a_rule():
  """Each logical name a conditioner's parameters use is in the rules (the
  conditioning/axes.py table or the backbone's), not left to the fallback."""
  sys.path.insert(0, TESTS)
  import conditioning_models  # pylint: disable=g-import-not-at-top
  from hyperprompt.network import Transformer  # pylint: disable=g-import-not-at-top
  ruled = {name for name, _ in partitioning.LOGICAL_AXIS_RULES}
  tokens = np.ones((1, 4), np.int32)
  used = set()
  for make in conditioning_models.CONDITIONERS.values():
    module = Transformer(conditioning_models.CONFIG, make())
    axes = jax.eval_shape(lambda m=module: m.init(
        jax.random.PRNGKey(0), tokens, tokens, tokens, np.zeros(1, np.int32),
        enable_dropout=False))['params_axes']['conditioner']
    used |= {name for spec in jax.tree.leaves(
        axes, is_leaf=lambda x: hasattr(x, 'names')) for name in spec.names}
  assert used and used <= ruled, sorted(used - ruled)


def test_adafactor_factored_moments_follow_their_parameter():
  part = partitioning.Partitioner(devices=[jax.devices()[0]])
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class Two(nn.Module):
    @nn.compact
    def __call__(self):
      return (param_with_axes('k', nn.initializers.zeros, (256, 384),
                              axes=('embed', 'mlp')),
              param_with_axes('s', nn.initializers.zeros, (256,),
                              axes=('embed',)))

  variables = jax.eval_shape(lambda: Two().init(jax.random.PRNGKey(0)))
  params, axes = variables['params'], variables['params_axes']
  opt_state = jax.eval_shape(trainer.adafactor(1e-3).init, params)
  shardings = part.state_shardings(opt_state, axes, params)
  # T5.1.1 Adafactor: the [256, 384] kernel has row [256] and column [384]
  # second moments and no full [256, 384] moment; no momentum.
  flat = {jax.tree_util.keystr(p): (l.shape, s.spec) for (p, l), s in zip(
      jax.tree_util.tree_leaves_with_path(opt_state),
      jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(
          x, jax.sharding.Sharding)))}
  kernel = {k: v for k, v in flat.items() if "['k']" in k}
  assert sorted(shape for shape, _ in kernel.values()) == [(1,), (256,),
                                                          (384,)]
  by_shape = {shape: spec for shape, spec in kernel.values()}
  assert by_shape[(384,)] == P('model')  # v_col keeps the 'mlp' dim.
  assert by_shape[(256,)] == P(None)     # v_row keeps 'embed'.
  assert not any(shape == (256, 384) for shape, _ in flat.values())


def test_num_partitions_must_divide_devices():
  with pytest.raises(ValueError, match='must divide'):
    partitioning.Partitioner(num_partitions=3, devices=jax.devices()[:1] * 2)


MESH_SCRIPT = textwrap.dedent('''
    import os, sys
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
    mesh = train_loop.losses(partitioning.Partitioner(num_partitions=2),
                             batches)
    # 2-D parameter partitioning (FSDP over 'data') on the same mesh.
    two_d = train_loop.losses(partitioning.Partitioner(
        num_partitions=2, parameter_partitioning_dims=2), batches)
    print('LOSSES', one, mesh, two_d)
    np.testing.assert_allclose(mesh, one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(two_d, mesh, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(two_d, one, rtol=1e-5, atol=1e-5)
    assert dict(partitioning.Partitioner(num_partitions=2).mesh.shape) == {{
        'data': 4, 'model': 2}}
    # Adapters: their width is split over 'data' with 1-D partitioning too
    # (conditioning/axes.py) and each layer gathers its own.
    from hyperprompt.conditioning.adapters import Adapters
    adapters = lambda: Adapters(num_tasks=runner_tiny.NUM_TASKS, bottleneck=4)
    one = train_loop.losses(partitioning.Partitioner(
        devices=jax.devices()[:1]), batches, adapters())
    mesh = train_loop.losses(partitioning.Partitioner(num_partitions=2),
                             batches, adapters())
    print('ADAPTER LOSSES', one, mesh)
    np.testing.assert_allclose(mesh, one, rtol=1e-5, atol=1e-5)
    print('OK')
''')


def _run(script, env_extra, timeout=240):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3',
             **env_extra)
  return subprocess.Popen([sys.executable, '-c', script], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def test_4x2_mesh_1d_and_2d_train_like_one_device():
  proc = _run(MESH_SCRIPT.format(tests=TESTS),
              {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0 and 'OK' in out, out[-4000:]
