"""Prefix attention against an independent NumPy computation.

Softmax over `[P_k; K]` with the masks on the real keys only (padding,
causal), prompts always visible, and the relative position bias on the real
columns only (0 on the prompt columns): in the encoder, in the causal
decoder, and one position at a time through the decode cache. The two-part
softmax that computes it against NumPy's softmax of the joined logits, and
the custom derivative of attention (with and without prompts, with and
without dropout) against the plain formula's.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt.attention import MultiHeadAttention
from hyperprompt.attention import attention_logits
from hyperprompt.attention import mask_to_bias
from hyperprompt.attention import attention
from hyperprompt.attention import prompt_logits
from hyperprompt.attention import two_part_softmax
from hyperprompt.config import T5Config
from hyperprompt.network import attention_mask

CONFIG = T5Config(vocab_size=32, emb_dim=16, num_heads=3, head_dim=8,
                  num_encoder_layers=1, num_decoder_layers=1, mlp_dim=8,
                  dropout_rate=0.0)
BATCH, LENGTH, PROMPTS = 2, 6, 4


def numpy_prefix_attention(params, x, mask, bias, prefix):
  """x [b, n, d]; mask bool [b, n, n]; bias [h, n, n]; prefix ([b, l, h, k],)*2."""
  h, k = CONFIG.num_heads, CONFIG.head_dim
  d = x.shape[-1]
  proj = lambda name: np.einsum(
      'bnd,dhk->bnhk', x, np.asarray(params[name]['kernel']).reshape(d, h, k))
  query, key, value = proj('query'), proj('key'), proj('value')
  key = np.concatenate([prefix[0], key], axis=1)
  value = np.concatenate([prefix[1], value], axis=1)
  logits = np.einsum('bqhk,bmhk->bhqm', query, key)
  real = np.where(mask, 0.0, -1e10)[:, None] + bias[None]
  prompt_columns = np.zeros(real.shape[:-1] + (PROMPTS,))
  logits = logits + np.concatenate([prompt_columns, real], axis=-1)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum('bhqm,bmhk->bqhk', weights, value)
  return np.einsum('bqhk,hkd->bqd', out,
                   np.asarray(params['out']['kernel']).reshape(h, k, d))


def _inputs():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, LENGTH, CONFIG.emb_dim)).astype(np.float32)
  valid = np.ones((BATCH, LENGTH), bool)
  valid[1, 4:] = False  # Padding in the second example.
  bias = rng.normal(size=(CONFIG.num_heads, LENGTH, LENGTH)).astype(
      np.float32)
  shape = (BATCH, PROMPTS, CONFIG.num_heads, CONFIG.head_dim)
  prefix = (rng.normal(size=shape).astype(np.float32),
            rng.normal(size=shape).astype(np.float32))
  return x, valid, bias, prefix


@pytest.mark.parametrize('causal', [False, True], ids=['encoder', 'decoder'])
def test_prefix_attention_matches_numpy(causal):
  x, valid, bias, prefix = _inputs()
  mask = attention_mask(jnp.asarray(valid), jnp.asarray(valid), causal=causal)
  layer = MultiHeadAttention(CONFIG)
  params = layer.init(jax.random.PRNGKey(1), x, x, mask, bias[None],
                      prefix)['params']
  ours = layer.apply({'params': params}, x, x, mask, bias[None], prefix)
  expected = numpy_prefix_attention(params, x, np.asarray(mask)[:, 0], bias,
                                    prefix)
  np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=1e-5)
  # Padded queries see only the prompts, never a NaN.
  assert np.isfinite(np.asarray(ours)).all()


def test_cached_prefix_attention_matches_numpy():
  x, _, bias, prefix = _inputs()
  layer = MultiHeadAttention(CONFIG)
  params = layer.init(jax.random.PRNGKey(1), x, x, None, bias[None],
                      prefix)['params']
  causal = np.tril(np.ones((LENGTH, LENGTH), bool))
  expected = numpy_prefix_attention(
      params, x, np.broadcast_to(causal, (BATCH, LENGTH, LENGTH)), bias,
      prefix)
  # The cache-creating call runs on zeros, as the decoder's does.
  zeros = np.zeros_like(x)
  _, state = layer.apply({'params': params}, zeros, zeros,
                         attention_mask(jnp.ones((BATCH, LENGTH), bool),
                                        jnp.ones((BATCH, LENGTH), bool),
                                        causal=True),
                         bias[None], prefix, decode=True, mutable=['cache'])
  cache = state['cache']
  for t in range(LENGTH):
    step, state = layer.apply(
        {'params': params, 'cache': cache}, x[:, t:t + 1], x[:, t:t + 1],
        None, bias[None, :, t:t + 1], prefix, decode=True,
        decode_index=jnp.array(t), mutable=['cache'])
    cache = state['cache']
    np.testing.assert_allclose(step[:, 0], expected[:, t], atol=1e-5,
                               rtol=1e-5)


def _attention_case(seed=2):
  """query, keys, prompts, values, prompt values, and a bias with a padding
  mask in which one row (a padded query) is fully masked."""
  rng = np.random.default_rng(seed)
  b, q, h, d = 2, 4, 3, 8
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  query, key = normal(b, q, h, d), normal(b, h, d, LENGTH)
  prompts, value = normal(b, PROMPTS, h, d), normal(b, h, d, LENGTH)
  prompt_values = normal(b, PROMPTS, h, d)
  mask = rng.random((b, 1, q, LENGTH)) > 0.3
  mask[1, 0, 2] = False
  bias = (normal(1, h, q, LENGTH) +
          np.asarray(mask_to_bias(jnp.asarray(mask), jnp.float32)))
  return query, key, prompts, value, prompt_values, bias.astype(np.float32)


def _joined_logits(query, key, prompts, bias):
  return jnp.concatenate([
      jnp.einsum('bqhd,blhd->bhql', query, prompts),
      jnp.einsum('bqhd,bhdk->bhqk', query, key) + bias], axis=-1)


def test_two_part_softmax_is_the_softmax_of_the_joined_logits():
  """`two_part_softmax` (prompts' and keys' weights apart) against NumPy's
  softmax over `[prompt logits, key logits + bias + mask]`. A fully masked
  row (a padded query) sees only the prompts."""
  query, key, prompts, _, _, bias = _attention_case()
  parts = two_part_softmax(
      attention_logits(jnp.asarray(query), jnp.asarray(key),
                       jnp.asarray(bias)),
      prompt_logits(jnp.asarray(query), jnp.asarray(prompts), jnp.float32))
  logits = np.asarray(_joined_logits(query, key, prompts, bias))
  expected = np.exp(logits - logits.max(-1, keepdims=True))
  expected /= expected.sum(-1, keepdims=True)
  ours = np.concatenate([parts.prompt_weights, parts.weights], axis=-1)
  np.testing.assert_allclose(ours, expected, atol=1e-6)
  np.testing.assert_allclose(ours[1, :, 2, :PROMPTS].sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize('prefixed', [True, False],
                         ids=['prompts', 'no_prompts'])
@pytest.mark.parametrize('dropout', [0.0, 0.3], ids=['plain', 'dropout'])
def test_attention_gradients_match_the_plain_formula(dropout, prefixed):
  """`attention` (a custom VJP that keeps no dropped-out weights and
  recomputes the prompts' weights in the backward pass) against `jax.vjp`
  of the plain formula: softmax of the (joined) logits, dropout with the
  same keep masks (with prompts drawn from the split key, keys' first;
  without, from the key itself), values (joined). Its value and the
  derivatives by the query, keys, bias, values, prompt keys and prompt
  values (zero without prompts)."""
  case = tuple(map(jnp.asarray, _attention_case()))
  rng = jax.random.PRNGKey(3) if dropout else None

  def ours(query, key, prompts, value, prompt_values, bias):
    logits = attention_logits(query, key, bias)
    return attention(logits, query, value,
                     (prompts, prompt_values) if prefixed else None,
                     dropout, rng)

  def plain(query, key, prompts, value, prompt_values, bias):
    if prefixed:
      logits = _joined_logits(query, key, prompts, bias)
      values = jnp.concatenate(
          [jnp.transpose(prompt_values, (0, 2, 3, 1)), value], axis=-1)
    else:
      logits = jnp.einsum('bqhd,bhdk->bhqk', query, key) + bias
      values = value
    weights = jax.nn.softmax(logits)
    if dropout:
      b, h, q, _ = weights.shape
      if prefixed:
        key_rng, prompt_rng = jax.random.split(rng)
        keep = jnp.concatenate([
            jax.random.bernoulli(prompt_rng, 1 - dropout, (b, h, q, PROMPTS)),
            jax.random.bernoulli(key_rng, 1 - dropout, (b, h, q, LENGTH))],
                               axis=-1)
      else:
        keep = jax.random.bernoulli(rng, 1 - dropout, (b, h, q, LENGTH))
      assert 0 < keep.mean() < 1
      weights = weights * keep / (1 - dropout)
    return jnp.einsum('bhqm,bhdm->bqhd', weights, values)

  out, vjp = jax.vjp(ours, *case)
  expected, plain_vjp = jax.vjp(plain, *case)
  np.testing.assert_allclose(out, expected, atol=1e-5)
  cotangent = jnp.asarray(np.random.default_rng(4).normal(
      size=out.shape).astype(np.float32))
  names = ('query', 'key', 'prompts', 'value', 'prompt_values', 'bias')
  for name, grad, reference in zip(names, vjp(cotangent),
                                   plain_vjp(cotangent)):
    np.testing.assert_allclose(grad, reference, atol=1e-5, err_msg=name)
    if name == 'value':  # Nonzero, so the comparison means something.
      assert np.abs(np.asarray(grad)).max() > 1e-3
