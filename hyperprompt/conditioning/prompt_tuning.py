"""Prompt tuning (Lester et al. 2021), one soft prompt per task.

Each task has `prompt_length` learned vectors [p, d], prepended to the
encoder's input embeddings (`Conditioning.input_prompts`); METHOD.md section
5 makes it multi-task with per-task prompts. Default p = 100 and the uniform
[-0.5, 0.5] initialisation are Lester et al.'s.

Their two other initialisations need the pretrained token embedding, so they
are functions on the model's params tree, to call after loading the
checkpoint:
- `init_prompts_from_vocab`: each prompt vector is the embedding of a token
  sampled from the `num_tokens` (5,000) most common ones. SentencePiece
  vocabularies are ordered by frequency, so those are the lowest ids.
- `init_prompts_from_labels`: the first prompt vectors of a task are the
  embeddings of its class labels (the mean over a label's tokens when it
  has several); the rest keep their current values (Lester et al. fill them
  from the vocabulary: call `init_prompts_from_vocab` first).
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hyperprompt.conditioning.interface import Conditioner, Conditioning
from hyperprompt.config import T5Config
from hyperprompt.layers import param_with_axes


def _uniform_init(key, shape, dtype):
  """Lester et al.'s default: uniform in [-0.5, 0.5]."""
  return jax.random.uniform(key, shape, dtype, -0.5, 0.5)


class PromptTuning(Conditioner):
  """Per-task input prompts `[T, p, d]`, gathered by task id.

  Attributes:
    prompt_length: p, prompt vectors per task.
  """
  prompt_length: int = 100

  @nn.compact
  def __call__(self, task_ids: jax.Array, config: T5Config,
               deterministic: bool = True) -> Conditioning:
    del deterministic
    prompts = param_with_axes(
        'prompts', _uniform_init,
        (self.num_tasks, self.prompt_length, config.emb_dim), jnp.float32,
        axes=('tasks', 'prompt_length', 'embed'))
    empty = Conditioning.empty(config)
    # [T, p, d] -> [batch, p, d]
    return empty.replace(input_prompts=jnp.take(prompts, task_ids, axis=0)
                         .astype(config.activation_dtype))


def _with_prompts(params, prompts):
  """A copy of `params` whose conditioner prompts are `prompts`."""
  conditioner = dict(params['conditioner'], prompts=jnp.asarray(prompts))
  return dict(params, conditioner=conditioner)


def init_prompts_from_vocab(params, rng: jax.Array, num_tokens: int = 5000):
  """Prompts from embeddings of tokens sampled among the most common ones.

  Args:
    params: the model's params, with the pretrained `token_embedder` and a
      `conditioner/prompts` [T, p, d] (a PromptTuning model).
    rng: PRNG key of the sampling.
    num_tokens: sample among ids `0..num_tokens-1` (the most frequent in a
      SentencePiece vocabulary), without replacement within a task.

  Returns:
    A new params tree; nothing else changes.
  """
  embedding = params['token_embedder']['embedding']  # [vocab, d]
  num_tasks, length, _ = params['conditioner']['prompts'].shape
  if num_tokens > embedding.shape[0]:
    raise ValueError(f'num_tokens={num_tokens} exceeds the vocabulary '
                     f'({embedding.shape[0]} ids); pass a smaller num_tokens.')
  if length > num_tokens:
    raise ValueError(f'Cannot draw {length} distinct tokens from '
                     f'num_tokens={num_tokens}; raise num_tokens.')
  ids = jnp.stack([
      jax.random.choice(key, num_tokens, (length,), replace=False)
      for key in jax.random.split(rng, num_tasks)
  ])  # [T, p]
  return _with_prompts(params, jnp.take(embedding, ids, axis=0))


def init_prompts_from_labels(params,
                             label_token_ids: Sequence[Sequence[Sequence[int]]]):
  """Sets each task's first prompt vectors to its class-label embeddings.

  Args:
    params: as for `init_prompts_from_vocab`.
    label_token_ids: per task (in task-id order), its labels, each the token
      ids of the label's text (e.g. `vocab.encode('entailment')`); a task
      with no labels (regression, generation) is an empty sequence.

  Returns:
    A new params tree where `prompts[task, i]` is the mean embedding of the
    tokens of label `i`; positions after the labels are unchanged.
  """
  embedding = np.asarray(params['token_embedder']['embedding'])
  prompts = np.array(params['conditioner']['prompts'])
  if len(label_token_ids) != prompts.shape[0]:
    raise ValueError(f'label_token_ids has {len(label_token_ids)} tasks; the '
                     f'model has {prompts.shape[0]}.')
  for task, labels in enumerate(label_token_ids):
    if len(labels) > prompts.shape[1]:
      raise ValueError(f'Task {task} has {len(labels)} labels but prompts '
                       f'are only {prompts.shape[1]} long.')
    for i, tokens in enumerate(labels):
      if not len(tokens):
        raise ValueError(f'Label {i} of task {task} has no tokens.')
      prompts[task, i] = embedding[np.asarray(tokens)].mean(axis=0)
  return _with_prompts(params, prompts)
