"""Prompt ensembling: the vote on crafted decodes, and one batched pass of a
conditioned model against decoding under each prompt separately."""
import jax
import numpy as np
import pytest

from hyperprompt import ensembling

import tiny_model as tm


def test_majority_vote_on_crafted_decodes():
  a, b, c = [5, 1, 0], [6, 7, 1], [8, 1, 0]
  tokens = np.array([
      [a, b, a],  # two of three agree, though b scores best
      [a, b, c],  # no majority: the best score wins (c)
  ], np.int32)
  scores = np.array([[-5.0, -0.1, -6.0], [-3.0, -2.0, -1.0]], np.float32)
  best, votes = ensembling.majority_vote(tokens, scores)
  np.testing.assert_array_equal(best, [a, c])
  np.testing.assert_array_equal(votes, [2, 1])
  # 2-2 tie: the pair with the higher total score (a: -3 > b: -4).
  tie = np.array([[a, b, b, a]], np.int32)
  best, votes = ensembling.majority_vote(
      tie, np.array([[-1.0, -2.0, -2.0, -2.0]], np.float32))
  np.testing.assert_array_equal(best, [a])
  np.testing.assert_array_equal(votes, [2])
  # Equal totals too: the lowest prompt index, deterministically.
  best, _ = ensembling.majority_vote(
      tie, np.array([[-2.0, -2.0, -2.0, -2.0]], np.float32))
  np.testing.assert_array_equal(best, [a])


def test_replicate_for_prompts_is_example_major():
  batch = {'encoder_input_tokens': np.array([[3, 1], [4, 1]]),
           'task_ids': np.array([0, 0])}
  out = ensembling.replicate_for_prompts(batch, [2, 0, 1])
  np.testing.assert_array_equal(out['encoder_input_tokens'][:, 0],
                                [3, 3, 3, 4, 4, 4])
  np.testing.assert_array_equal(out['task_ids'], [2, 0, 1, 2, 0, 1])


@pytest.fixture(scope='module')
def setup():
  model = tm.make_model(num_tasks=4)
  params = tm.random_params(model, seed=5)
  batch = tm.random_batch(batch_size=3, seed=4)
  return model, params, batch


def _predict_with_task(model, params, batch, task_id):
  with_task = dict(batch, task_ids=np.full(3, task_id, np.int32))
  return np.asarray(jax.jit(model.predict_batch)(params, with_task))


def test_two_identical_prompts_outvote_a_third(setup):
  model, params, batch = setup
  # Task 3 gets task 1's prompts: prompts [0, 1, 3] then have a 2-vote
  # majority for task 1's decode on every example.
  conditioner = dict(params['conditioner'])
  for name, table in conditioner.items():
    conditioner[name] = table.at[3].set(table[1])
  params = dict(params, conditioner=conditioner)
  by_task = {t: _predict_with_task(model, params, batch, t) for t in (0, 1)}
  # The prompts matter here, so the vote is not trivially unanimous.
  assert not np.array_equal(by_task[0], by_task[1])
  tokens = ensembling.predict_ensemble(model, params, batch, [0, 1, 3])
  np.testing.assert_array_equal(tokens, by_task[1])
  # Order of the prompts does not change the majority.
  tokens = ensembling.predict_ensemble(model, params, batch, [3, 0, 1])
  np.testing.assert_array_equal(tokens, by_task[1])


def test_ensembling_errors(setup):
  model, params, batch = setup
  with pytest.raises(ValueError, match='out of range'):
    ensembling.predict_ensemble(model, params, batch, [0, 4])
  with pytest.raises(ValueError, match='non-empty'):
    ensembling.predict_ensemble(model, params, batch, [])
  with pytest.raises(ValueError, match='task-conditioned'):
    ensembling.predict_ensemble(tm.make_model(), params, batch, [0])
