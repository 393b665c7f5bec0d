"""runner.train checks each step's loss one step late, which changes nothing
it trains or saves, and takes the dropout key's PRNG implementation from gin,
which changes only the dropout masks. The reference is a plain loop of the
train_state step on the same batches; for threefry with the key the runner
used before `prng_impl` existed (jax.random.PRNGKey(seed + 1))."""
import os
import sys

import jax
import numpy as np
import pytest

from hyperprompt import checkpoints, history, partitioning, train_state
from hyperprompt import trainer
from hyperprompt.tasks import mixtures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runner_tiny  # pylint: disable=g-import-not-at-top,wrong-import-position

DROPOUT = 0.2  # Dropout masks must matter for the PRNG checks.
STEPS = 4


def _optimizer(params):
  del params
  return trainer.adamw(1e-3)


def _batches(skip):
  for i in range(skip, 100):
    yield runner_tiny.random_batch(8, seed=i)


@pytest.fixture(scope='module')
def initial_params():
  model = runner_tiny.tiny_model(DROPOUT)
  shapes = train_state.input_shapes(model, runner_tiny.LENGTHS, 8)
  return train_state.init_params(model, shapes, partitioning.Partitioner(),
                                 seed=0)


def _plain_loop(initial, dropout_rng):
  """({step: params}, {step: loss}) of STEPS steps, no runner."""
  params, axes = initial
  model = runner_tiny.tiny_model(DROPOUT)
  optimizer = _optimizer(params)
  partitioner = partitioning.Partitioner()
  shardings = train_state.state_shardings(partitioner, optimizer, params,
                                          axes)
  state = train_state.jit_init_state(partitioner, optimizer,
                                     shardings)(params)
  step = train_state.jit_train_step(model, optimizer, partitioner, shardings)
  params_at, losses = {}, {}
  for i, batch in zip(range(STEPS), _batches(0)):
    state, metrics = step(state, partitioner.global_batch(
        model.validate_batch(batch)), dropout_rng)
    params_at[i + 1] = jax.device_get(state.params)
    losses[i + 1] = float(metrics['loss'])
  return params_at, losses


@pytest.fixture(scope='module')
def threefry(initial_params):
  return _plain_loop(initial_params, jax.random.PRNGKey(1))


@pytest.fixture(scope='module')
def unsafe_rbg(initial_params):
  return _plain_loop(initial_params, jax.random.key(1, impl='unsafe_rbg'))


def _train(model_dir, **kwargs):
  return runner_tiny.train(model=runner_tiny.tiny_model(DROPOUT),
                           model_dir=model_dir, train_batches=_batches,
                           make_optimizer=_optimizer, **kwargs)


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a),
               jax.device_get(b))


def test_late_checks_keep_the_state_checkpoints_and_logged_loss(
    tmp_path, threefry):
  params_at, losses = threefry
  model_dir = str(tmp_path / 'run')
  # Logging only at the end: every other step is checked one step late.
  state = _train(model_dir, train_steps=STEPS, checkpoint_period=2,
                 log_period=1000)
  assert int(state.step) == STEPS
  _assert_same(state.params, params_at[STEPS])
  assert checkpoints.Checkpointer(
      model_dir, mixtures.task_vocabulary(runner_tiny.MIXTURE)
  ).all_steps() == [2, 4]
  for step in (2, 4):
    _assert_same(checkpoints.restore_params(model_dir, step), params_at[step])
  logged = [(r['step'], r['train/loss']) for r in history.read_history(
      model_dir) if 'train/loss' in r]
  assert logged == [(STEPS, pytest.approx(losses[STEPS], rel=1e-6))]


def test_unsafe_rbg_trains_and_resumes_bit_identically(
    tmp_path, threefry, unsafe_rbg):
  rbg_params, rbg_losses = unsafe_rbg
  assert all(np.isfinite(list(rbg_losses.values())))
  # Other dropout masks from the first step on.
  assert not np.array_equal(rbg_params[1]['decoder']['logits_dense']['kernel'],
                            threefry[0][1]['decoder']['logits_dense']['kernel'])
  model_dir = str(tmp_path / 'rbg')
  _train(model_dir, train_steps=2, prng_impl='unsafe_rbg')
  state = _train(model_dir, train_steps=STEPS, prng_impl='unsafe_rbg',
                 log_period=1000)
  _assert_same(state.params, rbg_params[STEPS])


def test_unknown_prng_impl_fails_before_any_work(tmp_path):
  model_dir = tmp_path / 'never'
  with pytest.raises(ValueError, match="'threefry'.*'unsafe_rbg'"):
    _train(str(model_dir), train_steps=1, prng_impl='threefry')
  assert not model_dir.exists()
