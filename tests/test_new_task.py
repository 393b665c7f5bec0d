"""Adding a task to a trained HyperPrompt-Global model: only its rows train."""
import functools

import flax
import jax
import numpy as np
import optax
import pytest

from hyperprompt import new_task
from hyperprompt.conditioning.hyperprompt import HyperPromptGlobal
from hyperprompt.conditioning.prompt_tuning import PromptTuning
from hyperprompt.config import T5Config
from hyperprompt.network import Transformer

CONFIG = T5Config(vocab_size=32, emb_dim=8, num_heads=2, head_dim=3,
                  num_encoder_layers=2, num_decoder_layers=2, mlp_dim=16,
                  dropout_rate=0.0, relative_attention_num_buckets=8,
                  relative_attention_max_distance=16)
TOKENS = np.array([[3, 4, 5, 1], [6, 7, 1, 0], [8, 1, 0, 0], [9, 9, 1, 0]],
                  np.int32)
TARGETS = np.array([[9, 1, 0], [10, 11, 1], [12, 1, 0], [4, 1, 0]], np.int32)
DECODER_INPUTS = np.pad(TARGETS[:, :-1], [(0, 0), (1, 0)])


@functools.lru_cache(maxsize=1)
def _trained_global(num_tasks=3):
  model = Transformer(CONFIG, HyperPromptGlobal(
      num_tasks=num_tasks, prompt_length=2, bottleneck=4, task_embed_dim=5,
      layer_task_dim=6))
  init = jax.jit(lambda rng: model.init(
      rng, TOKENS, DECODER_INPUTS, TARGETS, np.zeros(4, np.int32),
      enable_dropout=False))
  return model, init(jax.random.PRNGKey(0))['params']


def _flat(params):
  return flax.traverse_util.flatten_dict(params, sep='/')


def _logits(model, params, task_ids):
  apply = jax.jit(lambda p, ids: model.apply(
      {'params': p}, TOKENS, DECODER_INPUTS, TARGETS, ids,
      enable_dropout=False))
  return np.asarray(apply(params, task_ids))


def test_global_grows_only_by_task_embedding_and_prompt_rows():
  model, params = _trained_global()
  conditioner, extended, per_task = new_task.add_tasks(
      CONFIG, model.conditioner, params, 1, jax.random.PRNGKey(1))
  # METHOD.md 3: the cost grows with T only through k_tau and P_tau.
  assert per_task == {('task_embedding',), ('task_prompts',)}
  assert conditioner.num_tasks == 4
  before, after = _flat(params), _flat(extended)
  for name, value in before.items():
    grown = after[name]
    np.testing.assert_array_equal(grown[:len(value)], value)
    assert grown.shape[0] == value.shape[0] + (
        1 if name.split('/')[-1] in ('task_embedding', 'task_prompts') else 0)
  # The old tasks' outputs are exactly those of the trained model.
  larger = Transformer(CONFIG, conditioner)
  old_ids = np.array([0, 1, 2, 1], np.int32)
  np.testing.assert_array_equal(_logits(larger, extended, old_ids),
                                _logits(model, params, old_ids))


def test_update_changes_only_the_new_rows():
  model, params = _trained_global()
  conditioner, params, per_task = new_task.add_tasks(
      CONFIG, model.conditioner, params, 1, jax.random.PRNGKey(1))
  larger = Transformer(CONFIG, conditioner)
  # Weight decay would move every parameter if the mask leaked.
  optimizer = new_task.only_new_rows(optax.adamw(0.1, weight_decay=0.5),
                                     params, per_task, num_old_tasks=3)
  task_ids = np.array([3, 0, 3, 2], np.int32)  # New and old tasks mixed.

  def loss(p):
    logits = larger.apply({'params': p}, TOKENS, DECODER_INPUTS, TARGETS,
                          task_ids, enable_dropout=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                           TARGETS).mean()

  grads = jax.jit(jax.grad(loss))(params)
  # Every parameter has a gradient, so a zero update is the mask's doing.
  assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
  updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params),
                                         params)
  new = optax.apply_updates(params, updates)

  before, after = _flat(params), _flat(new)
  for name in before:
    old_value, new_value = np.asarray(before[name]), np.asarray(after[name])
    if name in ('conditioner/task_embedding', 'conditioner/task_prompts'):
      np.testing.assert_array_equal(new_value[:3], old_value[:3])
      assert np.all(new_value[3] != old_value[3])
    else:
      np.testing.assert_array_equal(new_value, old_value, err_msg=name)


def test_prompt_tuning_rows_and_errors():
  # The backbone plays no part: the conditioner's params are enough.
  conditioner = PromptTuning(num_tasks=2, prompt_length=3)
  params = {'conditioner': conditioner.init(
      jax.random.PRNGKey(0), np.zeros(1, np.int32), CONFIG)['params']}
  _, extended, per_task = new_task.add_tasks(CONFIG, conditioner, params, 2,
                                             jax.random.PRNGKey(1))
  assert per_task == {('prompts',)}
  assert extended['conditioner']['prompts'].shape == (4, 3, CONFIG.emb_dim)
  with pytest.raises(ValueError, match='num_new_tasks'):
    new_task.add_tasks(CONFIG, conditioner, params, 0, jax.random.PRNGKey(1))
  with pytest.raises(ValueError, match='different parameters'):
    new_task.add_tasks(CONFIG, PromptTuning(num_tasks=2, prompt_length=3),
                       {'conditioner': {'other': np.zeros(2)}}, 1,
                       jax.random.PRNGKey(1))
