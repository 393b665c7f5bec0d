"""Decoding: cached decoding against a naive re-run of the full decoder, the
decoders against each other, beam search on a hand-made distribution, and
mixed-task batches."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt import decoding
from hyperprompt.conditioning.adapters import Adapters
from hyperprompt.conditioning.hyperprompt import HyperPromptGlobal
from hyperprompt.conditioning.interface import LayerConditioning
from hyperprompt.conditioning.prompt_tuning import PromptTuning

import tiny_model as tm

NUM_TASKS = 3
TASK_IDS = np.array([0, 1, 2, 1], np.int32)
LENGTH = 6


@pytest.fixture(scope='module')
def setup():
  """A conditioned tiny model, its params and a 4-example mixed-task batch
  whose first two examples share their input but not their task."""
  model = tm.make_model(num_tasks=NUM_TASKS)
  params = tm.random_params(model, seed=3)
  batch = tm.random_batch(batch_size=4, target_length=LENGTH, seed=2)
  batch['encoder_input_tokens'][1] = batch['encoder_input_tokens'][0]
  batch['task_ids'] = TASK_IDS
  return model, params, model.validate_batch(batch)


@functools.lru_cache(maxsize=None)
def _predictor(decode_fn, num_decodes=1, **static):
  """One compiled decode per configuration; `dynamic` decoder params (like
  temperature) are arguments, so changing them does not recompile."""
  model = tm.make_model(num_tasks=NUM_TASKS, decode_fn=decode_fn)

  @jax.jit
  def predict(params, batch, rng=None, dynamic=None):
    return model.predict_batch_with_aux(
        params, batch, rng, decoder_params={**static, **(dynamic or {})},
        return_all_decodes=True, num_decodes=num_decodes)
  return predict


def _greedy(params, batch):
  return _predictor(decoding.greedy)(params, batch)


def _after_eos_is_padding(tokens):
  tokens = np.asarray(tokens).reshape(-1, tokens.shape[-1])
  for row in tokens:
    eos = np.flatnonzero(row == tm.EOS_ID)
    if eos.size:
      assert np.all(row[eos[0] + 1:] == 0), row


def _naive_greedy(model, params, batch):
  """Greedy decoding without a cache: re-run the whole teacher-forced decoder
  on the growing prefix and take the argmax at the newest position."""
  full = jax.jit(lambda p, dec: model.module.apply(
      {'params': p}, batch['encoder_input_tokens'], dec, None,
      batch['task_ids'], enable_dropout=False))
  n = batch['encoder_input_tokens'].shape[0]
  tokens = np.zeros((n, LENGTH), np.int32)
  scores = np.zeros(n)
  done = np.zeros(n, bool)
  for t in range(LENGTH):
    decoder_inputs = np.pad(tokens[:, :-1], [(0, 0), (1, 0)])
    logits = np.asarray(full(params, decoder_inputs), np.float64)[:, t]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token = np.where(done, 0, logits.argmax(-1))
    scores += np.where(done, 0, log_probs[np.arange(n), token])
    tokens[:, t] = token
    done |= token == tm.EOS_ID
  return tokens, scores


def _score(model, params, batch, tokens):
  """Model log-likelihood of decoded tokens [n, k, L] (one batch row each)."""
  n, k, _ = tokens.shape
  targets = np.asarray(tokens).reshape(n * k, -1)
  scored = {
      'encoder_input_tokens': np.repeat(batch['encoder_input_tokens'], k, 0),
      'task_ids': np.repeat(batch['task_ids'], k, 0),
      'decoder_target_tokens': targets,
      'decoder_input_tokens': np.pad(targets[:, :-1], [(0, 0), (1, 0)]),
  }
  return np.asarray(jax.jit(model.score_batch)(params, scored)).reshape(n, k)


def test_cache_map_expands_all_but_shared_leaves():
  prefix = jnp.ones((2, 3, 4, 5))
  cache = {'decoder': {
      'cache_index': jnp.array(4),
      'cached_bias': jnp.ones((1, 4, 6, 6)),
      'conditioning': (LayerConditioning(self_prefix=(prefix, prefix)),),
      'layers_0': {'self_attention': {'cached_key': jnp.ones((2, 6, 4, 5))}}}}
  out = decoding.cache_map(lambda x: decoding.expand_batch(x, 3),
                           cache)['decoder']
  assert out['cache_index'].shape == ()
  assert out['cached_bias'].shape == (1, 4, 6, 6)
  assert out['conditioning'][0].self_prefix[1].shape == (6, 3, 4, 5)
  assert out['layers_0']['self_attention']['cached_key'].shape == (6, 6, 4, 5)


def test_first_argmax_is_numpys_argmax():
  """Ties go to the first maximum; a NaN counts as the maximum (first NaN);
  infinities are ordinary values."""
  x = np.random.default_rng(0).normal(size=(7, 50)).astype(np.float32)
  x[1, [7, 30]] = 100.0
  x[2, [9, 3]] = np.nan
  x[3] = -np.inf
  x[4, [5, 6]] = np.inf
  x[5] = 1.0
  x[6, 40] = np.nan
  x[6, 2] = np.inf
  np.testing.assert_array_equal(decoding.first_argmax(jnp.asarray(x)),
                                np.argmax(x, axis=-1))
  np.testing.assert_array_equal(
      decoding.first_argmax(jnp.asarray(x.reshape(7, 5, 10))),
      np.argmax(x.reshape(7, 5, 10), axis=-1))


def test_cached_greedy_equals_naive_decoder_and_is_deterministic(setup):
  model, params, batch = setup
  tokens, aux = _greedy(params, batch)
  expected_tokens, expected_scores = _naive_greedy(model, params, batch)
  np.testing.assert_array_equal(tokens[:, 0], expected_tokens)
  np.testing.assert_allclose(aux['scores'][:, 0], expected_scores, rtol=1e-5)
  again, _ = _greedy(params, batch)
  np.testing.assert_array_equal(again, tokens)
  # The tasks condition the decode: same input, different task, other output.
  assert not np.array_equal(tokens[0], tokens[1])


def test_beam_of_one_equals_greedy(setup):
  _, params, batch = setup
  greedy_tokens, greedy_aux = _greedy(params, batch)
  tokens, aux = _predictor(decoding.beam_search, 1, alpha=0.0)(params, batch)
  np.testing.assert_array_equal(tokens, greedy_tokens)
  np.testing.assert_allclose(aux['scores'], greedy_aux['scores'], rtol=1e-5)


def test_temperature_zero_and_top_k_one_equal_greedy(setup):
  _, params, batch = setup
  greedy_tokens, _ = _greedy(params, batch)
  sample = _predictor(decoding.temperature_sample)
  rng = jax.random.PRNGKey(7)
  zero, _ = sample(params, batch, rng, {'temperature': jnp.float32(0.0)})
  np.testing.assert_array_equal(zero, greedy_tokens)
  top_1 = _predictor(decoding.temperature_sample, top_k=1)
  tokens, _ = top_1(params, batch, rng, {'temperature': jnp.float32(1.0)})
  np.testing.assert_array_equal(tokens, greedy_tokens)


def test_samples_are_scored_by_their_model_log_probability(setup):
  model, params, batch = setup
  sample = _predictor(decoding.temperature_sample, 3)
  tokens, aux = sample(params, batch, jax.random.PRNGKey(0),
                       {'temperature': jnp.float32(1.5)})
  assert tokens.shape == (4, 3, LENGTH)
  scores = np.asarray(aux['scores'])
  assert np.all(np.diff(scores, axis=1) >= 0)  # Best decode last.
  np.testing.assert_allclose(scores, _score(model, params, batch, tokens),
                             rtol=1e-4)
  _after_eos_is_padding(tokens)
  assert len({tuple(row) for row in np.asarray(tokens).reshape(-1, LENGTH)}) > 4
  # Another rng, other samples.
  other, _ = sample(params, batch, jax.random.PRNGKey(1),
                    {'temperature': jnp.float32(1.5)})
  assert not np.array_equal(other, tokens)


def test_beam_scores_are_length_penalised_log_probabilities(setup):
  model, params, batch = setup
  beam = _predictor(decoding.beam_search, 3)
  for alpha in (0.0, 0.6):
    tokens, aux = beam(params, batch, None, {'alpha': jnp.float32(alpha)})
    assert tokens.shape == (4, 3, LENGTH)
    _after_eos_is_padding(tokens)
    scores = np.asarray(aux['scores'])
    assert np.all(np.diff(scores, axis=1) >= 0)
    # Length: up to and including EOS, or the whole decode if none.
    lengths = np.where((tokens == tm.EOS_ID).any(-1),
                       np.argmax(tokens == tm.EOS_ID, -1) + 1, LENGTH)
    penalty = ((5.0 + lengths) / 6.0) ** alpha
    np.testing.assert_allclose(
        scores * penalty, _score(model, params, batch, tokens), rtol=1e-4)


@pytest.mark.parametrize('decode_fn,num_decodes',
                         [(decoding.greedy, 1), (decoding.beam_search, 2)])
def test_mixed_task_batch_equals_each_example_alone(setup, decode_fn,
                                                     num_decodes):
  _, params, batch = setup
  predict = _predictor(decode_fn, num_decodes)
  tokens, aux = predict(params, batch)
  for i in range(len(TASK_IDS)):
    # Example i with its task in every row (the same shapes: no recompile).
    alone = {k: np.repeat(v[i:i + 1], len(TASK_IDS), 0)
             for k, v in batch.items()}
    tokens_alone, aux_alone = predict(params, alone)
    np.testing.assert_array_equal(tokens[i], tokens_alone[0])
    np.testing.assert_allclose(aux['scores'][i], aux_alone['scores'][0],
                               rtol=1e-5)


@pytest.mark.parametrize('conditioner', [
    HyperPromptGlobal(NUM_TASKS, prompt_length=2, bottleneck=4,
                      cross_attention=True, task_embed_dim=4,
                      layer_task_dim=6),
    PromptTuning(NUM_TASKS, prompt_length=3),
    Adapters(NUM_TASKS, bottleneck=4),
], ids=lambda c: type(c).__name__)
def test_project_conditioners_decode_mixed_batches_per_example(setup,
                                                               conditioner):
  # Prefixes in self- and cross-attention, input prompts (a longer encoder
  # output) and per-example adapter weights all live in the decode cache.
  _, _, batch = setup
  model = tm.make_model(conditioner=conditioner)
  params = tm.random_params(model, seed=6)
  predict = jax.jit(model.predict_batch)
  tokens = np.asarray(predict(params, batch))
  for i in range(len(TASK_IDS)):
    alone = {k: np.repeat(v[i:i + 1], len(TASK_IDS), 0)
             for k, v in batch.items()}
    np.testing.assert_array_equal(tokens[i], predict(params, alone)[0])
  assert not np.array_equal(tokens[0], tokens[1])


# A hand-made "model" over 6 tokens, decoding 4 steps. After the first token,
# the next-token distribution depends on the first token, which it reads from
# its cache: beam search must carry each beam's cache row with the beam.
# Row 0: start {2: .6, 3: .4}; after 2 the mass spreads ({4: .35, 5: .34,
# EOS: .3}), after 3 it is EOS with .99. Greedy takes 2 then 4 4 4
# (p = .6 * .35**3 = .026); the best sequence is 3 EOS (p = .396).
# Row 1 swaps the roles of 2 and 3.
_EPS = 1e-3
_AFTER_START = [_EPS, _EPS, .6, .4, _EPS, _EPS]
_SPREAD = [_EPS, .3, _EPS, _EPS, .35, .34]
_FINISH = [_EPS, .99, _EPS, _EPS, _EPS, _EPS]
# [row, first token (0 = none yet), vocab]
_TABLE = np.log(np.array([
    [_AFTER_START, _SPREAD, _SPREAD, _SPREAD, _SPREAD, _SPREAD],
    [_AFTER_START, _SPREAD, _SPREAD, _SPREAD, _SPREAD, _SPREAD]]))
_TABLE[0, 3] = np.log(_FINISH)
_TABLE[1, 0] = np.log([_EPS, _EPS, .4, .6, _EPS, _EPS])
_TABLE[1, 2] = np.log(_FINISH)
_TABLE = _TABLE - np.log(np.exp(_TABLE).sum(-1, keepdims=True))
_STEPS = 4


def _toy_tokens_to_logits(tokens, cache):
  index = cache['cache_index']
  # Shared leaves must reach the model unexpanded.
  assert cache['cached_bias'].shape == (1, 3)
  history = jax.lax.dynamic_update_slice(cache['history'], tokens, (0, index))
  first = jnp.where(index == 0, 0, history[:, 1])
  logits = jnp.asarray(_TABLE, jnp.float32)[cache['row'], first]
  return logits, dict(cache, cache_index=index + 1, history=history)


def _toy_cache():
  return {'cache_index': jnp.array(0), 'cached_bias': jnp.zeros((1, 3)),
          'row': jnp.array([0, 1]),
          'history': jnp.zeros((2, _STEPS + 1), jnp.int32)}


def _toy_decode(decode_fn, **kwargs):
  return jax.jit(lambda cache, rng: decode_fn(
      _toy_tokens_to_logits, cache, batch_size=2, max_decode_len=_STEPS,
      rng=rng, **kwargs))(_toy_cache(), jax.random.PRNGKey(0))


def test_beam_search_finds_a_better_sequence_than_greedy():
  greedy_tokens, greedy_scores = _toy_decode(decoding.greedy)
  np.testing.assert_array_equal(greedy_tokens[:, 0],
                                [[2, 4, 4, 4], [3, 4, 4, 4]])
  np.testing.assert_allclose(greedy_scores[:, 0],
                             _TABLE[0, 0, 2] + 3 * _TABLE[0, 2, 4], rtol=1e-5)
  tokens, scores = _toy_decode(decoding.beam_search, num_decodes=2, alpha=0.0)
  np.testing.assert_array_equal(tokens[:, -1], [[3, 1, 0, 0], [2, 1, 0, 0]])
  np.testing.assert_allclose(scores[:, -1], _TABLE[0, 0, 3] + _TABLE[0, 3, 1],
                             rtol=1e-5)
  # "2 EOS" (.18) ranked 4th of the candidates at step 2, so it fell out of
  # the beam; the runner-up is the greedy path.
  np.testing.assert_array_equal(tokens[:, 0], greedy_tokens[:, 0])


def test_length_penalty_can_prefer_the_longer_sequence():
  # alpha = 0 prefers "3 EOS" (log .396 = -.93); a strong length penalty
  # divides the 4-token greedy path (-3.66) by ((5+4)/6)**6 = 11.4 (-.32),
  # and "3 EOS" only by ((5+2)/6)**6 = 2.5 (-.37).
  tokens, _ = _toy_decode(decoding.beam_search, num_decodes=2, alpha=6.0)
  np.testing.assert_array_equal(tokens[:, -1], [[2, 4, 4, 4], [3, 4, 4, 4]])


def test_top_k_and_top_p_restrict_the_first_token():
  tokens, _ = _toy_decode(decoding.temperature_sample, num_decodes=64,
                          top_k=2)
  first = np.asarray(tokens)[:, :, 0]
  assert set(first[0]) == {2, 3} and set(first[1]) == {2, 3}
  # Nucleus .5: only the .6 token of each row.
  tokens, _ = _toy_decode(decoding.temperature_sample, num_decodes=64,
                          top_p=0.5)
  first = np.asarray(tokens)[:, :, 0]
  assert set(first[0]) == {2} and set(first[1]) == {3}
  _after_eos_is_padding(tokens)


def test_decoders_reject_bad_settings():
  with pytest.raises(ValueError, match='num_decodes'):
    _toy_decode(decoding.greedy, num_decodes=2)
  with pytest.raises(ValueError, match='needs an rng'):
    decoding.temperature_sample(_toy_tokens_to_logits, _toy_cache(),
                                batch_size=2, max_decode_len=_STEPS, rng=None)
  with pytest.raises(ValueError, match='top_p'):
    _toy_decode(decoding.temperature_sample, top_p=0.0)
