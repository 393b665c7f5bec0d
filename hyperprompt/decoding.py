"""Autoregressive decoding over the decode cache: greedy, sampling, beam search.

Every function is pure and jit-able, and a whole decode is one
`jax.lax.while_loop`: it compiles once per (batch size, length, number of
decodes) and never again across steps.

The model hands the decode function
    tokens_to_logits(tokens [n, 1], cache) -> (logits [n, vocab], cache)
for `n = batch * num_decodes` rows, each example repeated in place
(`[e0, e0, e1, e1]` for two decodes); the decode function expands the cache the
same way. The cache was created once for the batch, so the task conditioning it
holds (prompts, cross-attention keys/values) is never recomputed.

Conventions (those of T5 and t5x): decoding starts from token 0 (T5's BOS is
its pad id), stops at `eos_id` and writes 0 after it. Results are
`[batch, num_decodes, max_decode_len]` tokens with the decodes sorted by
increasing score (the best is last) and `[batch, num_decodes]` scores: the
sequence log-probability, divided by the length penalty in beam search.
"""
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp

Cache = dict
TokensToLogits = Callable[[jax.Array, Cache], Tuple[jax.Array, Cache]]

# Finite, so scores of dead beams never produce NaN (-inf - -inf).
NEG_INF = -1.0e7
# Cache leaves shared by all rows: the step counter (a scalar) and the
# relative position bias ([1, heads, L, L]). Every other leaf has a leading
# batch dim. The same rule as t5x's `decoding.cache_map`.
UNBATCHED_CACHE_LEAVES = ('cache_index', 'cached_bias')


def _leaf_name(path) -> Optional[str]:
  """The variable a cache leaf belongs to: the last dict key on its path."""
  for key in reversed(path):
    if isinstance(key, jax.tree_util.DictKey):
      return str(key.key)
  return None


def cache_map(fn: Callable[[jax.Array], jax.Array], cache: Cache) -> Cache:
  """Applies `fn` to every cache leaf with a batch dim (see above)."""
  def apply(path, x):
    return x if _leaf_name(path) in UNBATCHED_CACHE_LEAVES else fn(x)
  return jax.tree_util.tree_map_with_path(apply, cache)


def expand_batch(x: jax.Array, n: int) -> jax.Array:
  """[batch, ...] -> [batch * n, ...], each row repeated in place."""
  return jnp.repeat(x, n, axis=0)


def length_penalty(alpha, length) -> jax.Array:
  """((5 + length) / 6) ** alpha (Wu et al. 2016), as T5 uses in beam search."""
  return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


def first_argmax(x: jax.Array) -> jax.Array:
  """Index of the first maximum along the last axis, as `jnp.argmax` (a NaN
  counts as the maximum): [..., n] -> [...] int32.

  `jnp.argmax` lowers to one reduction over (value, index) pairs; on
  XLA:CPU it took 1.2 ms per decode step over [8, 32128] logits on the AMD
  EPYC box (9.3 ms over [64, 32128]), against 0.25 ms (2.0 ms) for these
  two plain reductions: a max, then the smallest index that holds it.
  """
  top = jnp.max(x, axis=-1, keepdims=True)
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  hits = (x == top) | jnp.isnan(x)
  return jnp.min(jnp.where(hits, index, x.shape[-1]), axis=-1)


def _sort_decodes(seqs: jax.Array, scores: jax.Array, batch_size: int,
                  num_decodes: int):
  """[batch * n, L], [batch * n] -> [batch, n, L], [batch, n], rising score."""
  seqs = seqs.reshape(batch_size, num_decodes, -1)
  scores = scores.reshape(batch_size, num_decodes)
  order = jnp.argsort(scores, axis=1)
  return (jnp.take_along_axis(seqs, order[:, :, None], axis=1),
          jnp.take_along_axis(scores, order, axis=1))


def _token_by_token(tokens_to_logits: TokensToLogits, cache: Cache, *,
                    batch_size: int, max_decode_len: int, num_decodes: int,
                    eos_id: int, choose, rng):
  """Decodes each row on its own, one token per step, with `choose`.

  choose(logits [n, vocab], rng) -> tokens [n]. Scores are the model's
  log-probabilities of the chosen tokens (not of the tempered distribution).
  """
  n = batch_size * num_decodes
  if num_decodes > 1:
    cache = cache_map(lambda x: expand_batch(x, num_decodes), cache)

  def cond(state):
    i, _, _, done, _, _, _ = state
    return (i < max_decode_len) & ~jnp.all(done)

  def body(state):
    i, seqs, last, done, scores, cache, rng = state
    logits, cache = tokens_to_logits(last[:, None], cache)
    # [n, vocab]
    logits = logits.astype(jnp.float32)
    step_rng = None
    if rng is not None:
      rng, step_rng = jax.random.split(rng)
    token = jnp.where(done, 0, choose(logits, step_rng)).astype(jnp.int32)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits),
                                   token[:, None], axis=-1)[:, 0]
    scores = scores + jnp.where(done, 0.0, log_prob)
    seqs = jax.lax.dynamic_update_slice(seqs, token[:, None], (0, i))
    done = done | (token == eos_id)
    return i + 1, seqs, token, done, scores, cache, rng

  state = (jnp.array(0, jnp.int32), jnp.zeros((n, max_decode_len), jnp.int32),
           jnp.zeros((n,), jnp.int32), jnp.zeros((n,), bool),
           jnp.zeros((n,), jnp.float32), cache, rng)
  _, seqs, _, _, scores, _, _ = jax.lax.while_loop(cond, body, state)
  return _sort_decodes(seqs, scores, batch_size, num_decodes)


def greedy(tokens_to_logits: TokensToLogits, cache: Cache, *, batch_size: int,
           max_decode_len: int, num_decodes: int = 1, eos_id: int = 1,
           rng: Optional[jax.Array] = None):
  """The most likely next token at every step.

  Returns tokens [batch, 1, max_decode_len] and scores [batch, 1].
  """
  del rng  # Greedy decoding is deterministic.
  if num_decodes != 1:
    raise ValueError(
        f'greedy decoding gives one sequence per example, got num_decodes='
        f'{num_decodes}; use decoding.temperature_sample or '
        'decoding.beam_search for several decodes.')
  return _token_by_token(
      tokens_to_logits, cache, batch_size=batch_size,
      max_decode_len=max_decode_len, num_decodes=1, eos_id=eos_id,
      choose=lambda logits, _: first_argmax(logits), rng=None)


def _filter_top_k(logits: jax.Array, top_k: int) -> jax.Array:
  """Keeps the `top_k` largest logits of each row, [n, vocab]."""
  kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
  return jnp.where(logits < kth, -jnp.inf, logits)


def _filter_top_p(logits: jax.Array, top_p: float) -> jax.Array:
  """Keeps the smallest set of most likely tokens with mass >= top_p."""
  sorted_logits = -jnp.sort(-logits, axis=-1)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  # A token is kept when the mass strictly before it is below top_p, so the
  # most likely token is always kept.
  keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
  threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1,
                      keepdims=True)
  return jnp.where(logits < threshold, -jnp.inf, logits)


def temperature_sample(tokens_to_logits: TokensToLogits, cache: Cache, *,
                       batch_size: int, max_decode_len: int,
                       rng: Optional[jax.Array], num_decodes: int = 1,
                       eos_id: int = 1, temperature: float = 1.0,
                       top_k: int = 0, top_p: float = 1.0):
  """Samples each token from softmax(logits / temperature), optionally
  restricted to the `top_k` most likely tokens and to the nucleus of mass
  `top_p` (Holtzman et al. 2020).

  Args:
    temperature: 0 means greedy; may be a traced scalar (no recompilation).
    top_k: 0 for no top-k filtering; a Python int (part of the program).
    top_p: 1.0 for no nucleus filtering; a Python float.
    num_decodes: independent samples per example.

  Returns tokens [batch, num_decodes, max_decode_len] and their model
  log-probabilities [batch, num_decodes], sorted by increasing score.
  """
  if rng is None:
    raise ValueError('temperature_sample needs an rng: pass `rng` to '
                     'predict_batch (or decoder_params["rng"]).')
  if not 0 <= top_k:
    raise ValueError(f'top_k must be >= 0 (0 disables it), got {top_k}.')
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f'top_p must be in (0, 1] (1 disables it), got {top_p}.')

  def choose(logits, step_rng):
    t = jnp.asarray(temperature, jnp.float32)
    scaled = logits / jnp.where(t > 0, t, 1.0)
    if top_k:
      scaled = _filter_top_k(scaled, top_k)
    if top_p < 1.0:
      scaled = _filter_top_p(scaled, top_p)
    sampled = jax.random.categorical(step_rng, scaled, axis=-1)
    return jnp.where(t > 0, sampled, first_argmax(logits))

  return _token_by_token(
      tokens_to_logits, cache, batch_size=batch_size,
      max_decode_len=max_decode_len, num_decodes=num_decodes, eos_id=eos_id,
      choose=choose, rng=rng)


def beam_search(tokens_to_logits: TokensToLogits, cache: Cache, *,
                batch_size: int, max_decode_len: int, num_decodes: int = 4,
                eos_id: int = 1, alpha: float = 0.6,
                rng: Optional[jax.Array] = None):
  """Beam search with T5's length penalty; `num_decodes` is the beam size.

  Each step extends every live beam by every token and keeps the 2 * beams
  best candidates. Those among the `beams` best that end in EOS (or reach
  `max_decode_len`) become finished hypotheses scored
  `log_prob / length_penalty(alpha, length)`; the `beams` best candidates
  that do not end become the next live beams. So beam size 1 is exactly
  greedy decoding when alpha is 0. The search stops when no live beam can
  still beat the worst of `beams` finished hypotheses.

  Returns tokens [batch, beams, max_decode_len] and scores [batch, beams],
  sorted by increasing score (the best is last).
  """
  del rng  # Beam search is deterministic.
  b, k, length = batch_size, num_decodes, max_decode_len
  cache = cache_map(lambda x: expand_batch(x, k), cache)
  rank = jnp.arange(2 * k)

  def gather(x, index):
    """x [batch, m, ...], index [batch, j] -> [batch, j, ...]."""
    return jnp.take_along_axis(
        x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

  def cond(state):
    i, _, live_scores, _, _, finished_scores, finished, _ = state
    # A live beam's log-prob only falls; its penalty grows (alpha > 0) or
    # shrinks (alpha < 0) with length, so its best reachable score is its
    # log-prob over the largest penalty ahead.
    best_penalty = jnp.maximum(length_penalty(alpha, i + 1),
                               length_penalty(alpha, length))
    best_live = jnp.max(live_scores, axis=1) / best_penalty
    worst_finished = jnp.where(jnp.all(finished, axis=1),
                               jnp.min(finished_scores, axis=1), NEG_INF)
    any_live = jnp.any(live_scores > NEG_INF / 2)
    return ((i < length) & any_live &
            ~jnp.all(worst_finished >= best_live))

  def body(state):
    (i, live_seqs, live_scores, live_last, finished_seqs, finished_scores,
     finished, cache) = state
    logits, cache = tokens_to_logits(live_last.reshape(b * k, 1), cache)
    vocab = logits.shape[-1]
    # [batch, beams, vocab] -> best 2 * beams of [batch, beams * vocab]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    candidates = live_scores[:, :, None] + log_probs.reshape(b, k, vocab)
    cand_scores, cand_index = jax.lax.top_k(
        candidates.reshape(b, k * vocab), 2 * k)
    parent, token = cand_index // vocab, cand_index % vocab
    # [batch, 2 * beams, length]
    cand_seqs = jax.lax.dynamic_update_slice(
        gather(live_seqs, parent), token[:, :, None], (0, 0, i))
    ends = (token == eos_id) | (i == length - 1)

    new_finished = ends & (rank < k) & (cand_scores > NEG_INF / 2)
    new_scores = jnp.where(new_finished,
                           cand_scores / length_penalty(alpha, i + 1),
                           NEG_INF)
    all_scores = jnp.concatenate([finished_scores, new_scores], axis=1)
    finished_scores, best = jax.lax.top_k(all_scores, k)
    finished_seqs = gather(
        jnp.concatenate([finished_seqs, cand_seqs], axis=1), best)
    finished = gather(jnp.concatenate([finished, new_finished], axis=1), best)

    # Ending candidates leave the live set; dead slots keep NEG_INF.
    cand_live = jnp.where(ends, NEG_INF, cand_scores)
    live_scores, keep = jax.lax.top_k(cand_live, k)
    live_seqs = gather(cand_seqs, keep)
    live_last = gather(token, keep)
    # Each new live beam continues its parent's cache row.
    rows = (jnp.arange(b)[:, None] * k + gather(parent, keep)).reshape(-1)
    cache = cache_map(lambda x: jnp.take(x, rows, axis=0), cache)
    return (i + 1, live_seqs, live_scores, live_last, finished_seqs,
            finished_scores, finished, cache)

  live_scores = jnp.tile(
      jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF)[None, :], (b, 1))
  state = (jnp.array(0, jnp.int32), jnp.zeros((b, k, length), jnp.int32),
           live_scores.astype(jnp.float32), jnp.zeros((b, k), jnp.int32),
           jnp.zeros((b, k, length), jnp.int32),
           jnp.full((b, k), NEG_INF, jnp.float32), jnp.zeros((b, k), bool),
           cache)
  state = jax.lax.while_loop(cond, body, state)
  finished_seqs, finished_scores = state[4], state[5]
  # top_k sorted them best first; the convention is best last.
  return finished_seqs[:, ::-1], finished_scores[:, ::-1]
