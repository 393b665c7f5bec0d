"""The fused Adafactor gives optax.adafactor's updates and state (T5.1.1)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperprompt import adafactor

# Factored with the largest dim last, first, in 3-D; full moments for a
# matrix below the factoring size, a vector, and an all-zero parameter
# (whose RMS falls back to the minimum scale).
SHAPES = {'wide': (160, 256), 'tall': (300, 128), 'cube': (3, 130, 200),
          'small': (64, 32), 'vector': (300,), 'zeros': (200, 130)}


def _tree(seed, scale=1.0):
  keys = jax.random.split(jax.random.PRNGKey(seed), len(SHAPES))
  tree = {name: scale * jax.random.normal(k, shape)
          for k, (name, shape) in zip(keys, SHAPES.items())}
  if scale == 1.0:
    tree['zeros'] = jnp.zeros(SHAPES['zeros'])
  return tree


def _optax_t5():
  return optax.adafactor(
      learning_rate=optax.linear_schedule(1e-2, 1e-3, 5),
      min_dim_size_to_factor=128, decay_rate=0.8, decay_offset=0,
      multiply_by_parameter_scale=True, clipping_threshold=1.0,
      momentum=None, eps=1e-30, factored=True)


def test_updates_and_state_equal_optax_over_steps():
  ours = adafactor.adafactor(optax.linear_schedule(1e-2, 1e-3, 5))
  ref = _optax_t5()
  params_ours = params_ref = _tree(0)
  state_ours, state_ref = ours.init(params_ours), ref.init(params_ref)
  for step in range(4):
    # Gradients of very different scales, so clipping acts on some steps.
    grads = _tree(step + 1, scale=10.0 ** (step - 2))
    upd_ours, state_ours = jax.jit(ours.update)(grads, state_ours,
                                               params_ours)
    upd_ref, state_ref = jax.jit(ref.update)(grads, state_ref, params_ref)
    for name in SHAPES:
      np.testing.assert_allclose(upd_ours[name], upd_ref[name], rtol=2e-5,
                                 atol=1e-12, err_msg=f'{name} step {step}')
    params_ours = optax.apply_updates(params_ours, upd_ours)
    params_ref = optax.apply_updates(params_ref, upd_ref)
  # optax's state is a chain; its first element holds the moments.
  moments = state_ref[0]
  assert jax.tree.structure(state_ours) == jax.tree.structure(moments)
  for a, b in zip(jax.tree.leaves(state_ours), jax.tree.leaves(moments)):
    np.testing.assert_allclose(a, b, rtol=2e-5)
  assert int(state_ours.count) == 4


def test_factored_moments_have_optax_shapes():
  state = adafactor.adafactor(1e-3).init(_tree(0))
  # [300, 128]: the row moment drops the largest dim (300), the column
  # moment the other; 3-D drops the two largest in turn.
  assert state.v_row['tall'].shape == (128,)
  assert state.v_col['tall'].shape == (300,)
  assert state.v_row['cube'].shape == (3, 130)
  assert state.v_col['cube'].shape == (3, 200)
  assert state.v['small'].shape == (64, 32)
  assert state.v['vector'].shape == (300,)
  assert state.v['wide'].shape == (1,)  # Placeholder: factored instead.


def test_update_needs_params():
  opt = adafactor.adafactor(1e-3)
  params = _tree(0)
  with pytest.raises(ValueError, match='pass params'):
    opt.update(params, opt.init(params))


def test_scanned_stack_is_updated_layer_by_layer():
  """`encoder/layers` holds 3 layers stacked on axis 0: each layer's update
  and moments are those of the same layer as its own parameter (optax on
  the unstacked tree), including the factoring and the per-layer RMS."""
  shapes = {'kernel': (130, 200), 'scale': (64,)}
  keys = iter(jax.random.split(jax.random.PRNGKey(3), 12))
  layers = [{n: (i + 1.0) * jax.random.normal(next(keys), s)
             for n, s in shapes.items()} for i in range(3)]
  stacked = {'encoder': {'layers': jax.tree.map(lambda *x: jnp.stack(x),
                                                *layers)}}
  unrolled = {'encoder': {f'layers_{i}': l for i, l in enumerate(layers)}}
  grads = lambda tree, s: jax.tree.map(lambda p: s * jnp.cos(p), tree)
  ours = adafactor.adafactor(optax.linear_schedule(1e-2, 1e-3, 5))
  ref = _optax_t5()
  state, state_ref = ours.init(stacked), ref.init(unrolled)
  assert state.v_row['encoder']['layers']['kernel'].shape == (3, 130)
  for step in range(3):
    g_scale = 10.0 ** (step - 1)
    updates, state = ours.update(grads(stacked, g_scale), state, stacked)
    updates_ref, state_ref = ref.update(grads(unrolled, g_scale), state_ref,
                                        unrolled)
    for i in range(3):
      jax.tree.map(
          lambda a, b: np.testing.assert_allclose(a[i], b, rtol=2e-5,
                                                  atol=1e-7),
          updates['encoder']['layers'],
          updates_ref['encoder'][f'layers_{i}'])
    stacked = optax.apply_updates(stacked, updates)
    unrolled = optax.apply_updates(unrolled, updates_ref)
