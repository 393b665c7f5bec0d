"""Prompt ensembling (Lester et al. 2021, section 7): N prompts trained for the
same task vote on each example's output.

The N prompts are N task ids of one conditioned model (e.g. the task trained
N times under different names, or N prompt-tuning runs merged into one
precomputed conditioner). Each example is replicated N times across the batch,
each copy with one prompt's task id, and decoded in ONE forward pass: the
conditioner gathers the right prompt for every row, as in any mixed-task
batch. The output is the decode most copies agree on.
"""
import functools
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def replicate_for_prompts(batch: Mapping[str, np.ndarray],
                          prompt_task_ids: Sequence[int]) -> dict:
  """[batch, ...] host features -> [batch * N, ...], example-major.

  Rows `i * N ... i * N + N - 1` are example i under prompts 0..N-1; the
  batch's own `task_ids`, if any, are replaced.
  """
  prompts = np.asarray(prompt_task_ids)
  if prompts.ndim != 1 or prompts.size == 0:
    raise ValueError('prompt_task_ids must be a non-empty list of task ids, '
                     f'got {prompt_task_ids!r}.')
  n = prompts.size
  replicated = {k: np.repeat(np.asarray(v), n, axis=0)
                for k, v in batch.items() if k != 'task_ids'}
  size = np.shape(batch['encoder_input_tokens'])[0]
  replicated['task_ids'] = np.tile(prompts, size)
  return replicated


def majority_vote(tokens: jax.Array, scores: jax.Array):
  """Most frequent decode per example.

  Ties go to the decode whose voters have the higher total score, then to
  the lowest prompt index, so the result is deterministic.

  Args:
    tokens: [batch, prompts, length] decodes (0 after EOS, so equal outputs
      are equal rows).
    scores: [batch, prompts] their log-likelihoods.

  Returns:
    tokens [batch, length] and votes [batch] (how many prompts agree).
  """
  # [batch, prompts, prompts]: does prompt i's decode equal prompt j's?
  same = jnp.all(tokens[:, :, None, :] == tokens[:, None, :, :], axis=-1)
  votes = jnp.sum(same, axis=-1)
  total = jnp.sum(jnp.where(same, scores[:, None, :], 0.0), axis=-1)
  most = votes == jnp.max(votes, axis=-1, keepdims=True)
  # argmax returns the first of equal maxima: the lowest prompt index.
  winner = jnp.argmax(jnp.where(most, total, -jnp.inf), axis=-1)
  best = jnp.take_along_axis(tokens, winner[:, None, None], axis=1)[:, 0]
  return best, jnp.take_along_axis(votes, winner[:, None], axis=1)[:, 0]


@functools.partial(jax.jit, static_argnums=(0, 4))
def _decode_and_vote(model, params, batch, rng, num_prompts: int):
  tokens, aux = model.predict_batch_with_aux(params, batch, rng)
  size = tokens.shape[0] // num_prompts
  return majority_vote(tokens.reshape(size, num_prompts, -1),
                       aux['scores'].reshape(size, num_prompts))[0]


def predict_ensemble(model, params, batch: Mapping[str, np.ndarray],
                     prompt_task_ids: Sequence[int],
                     rng: Optional[jax.Array] = None) -> jax.Array:
  """Decodes each example under every prompt and returns the majority.

  Args:
    model: a task-conditioned `models.EncoderDecoderModel` (its decode_fn and
      num_decodes decide how each copy is decoded).
    params: its parameters.
    batch: host (numpy) features of [batch] examples.
    prompt_task_ids: the N task ids whose prompts vote.
    rng: for sampling decoders.

  Returns:
    [batch, length] int32 tokens.
  """
  if model.num_tasks is None:
    raise ValueError('Prompt ensembling needs a task-conditioned model (one '
                     'with a conditioner); this one has no prompts.')
  replicated = model.validate_batch(
      replicate_for_prompts(batch, prompt_task_ids))
  return _decode_and_vote(model, params, replicated, rng,
                          len(prompt_task_ids))
