"""Multi-head attention with optional key/value prefixes, and its decode cache.

A prefix is a pair `(key, value)`, each `[batch, prefix_length, heads,
head_dim]`, prepended to the keys and values along the length axis
(METHOD.md section 1). Prefix positions are always visible: the padding and
causal masks and the relative position bias apply to the real keys only; the
prefix columns get bias 0.

The decode cache keeps keys and values as `[batch, heads, head_dim, length]`
(t5x's layout), the layout the matmuls of a decode step read in place, so no
step transposes the cache of every layer. Prompt logits and weights stay
apart from the keys' (one softmax over both, in two parts), so a prefix
never forces a copy of the cache, or of the logits, either.
"""
import functools
from typing import NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from hyperprompt.config import T5Config
from hyperprompt.layers import DenseGeneral, default_kernel_init
from hyperprompt.layers import with_sharding_constraint

Prefix = Tuple[jax.Array, jax.Array]

# Additive bias of a masked key; large but finite so fully masked rows
# (padding queries) stay NaN-free.
MASKED = -1e10


def mask_to_bias(mask: Optional[jax.Array], dtype) -> Optional[jax.Array]:
  """Boolean mask [batch, 1, q, k] -> additive bias (0 or MASKED)."""
  if mask is None:
    return None
  return jnp.where(mask, 0.0, MASKED).astype(dtype)


def attention_logits(query: jax.Array, key: jax.Array,
                     bias: Optional[jax.Array],
                     float32_logits: bool = True) -> jax.Array:
  """The keys' logits [batch, heads, q_length, k_length], without 1/sqrt(d)
  scaling (T5 folds it into the query init).

  Args:
    query: [batch, q_length, heads, head_dim]
    key: [batch, heads, head_dim, k_length], the layout of the decode cache
      (t5x's), so a decode step reads the cache without transposing it.
    bias: broadcastable to [batch, heads, q_length, k_length], or None.
    float32_logits: logits (and the softmax) in float32, else in the query's
      dtype.
  """
  if float32_logits:
    query, key = query.astype(jnp.float32), key.astype(jnp.float32)
  logits = jnp.einsum('bqhd,bhdk->bhqk', query, key.astype(query.dtype))
  if bias is not None:
    logits = logits + bias.astype(logits.dtype)
  return logits


def _scale_kept(x: jax.Array, keep: Optional[jax.Array],
                rate: float) -> jax.Array:
  """Dropout with a drawn keep mask (None: no dropout)."""
  if keep is None:
    return x
  return x * keep.astype(x.dtype) / jnp.asarray(1.0 - rate, x.dtype)


class TwoPartSoftmax(NamedTuple):
  """One softmax over `[prompts; keys]`, taken in two parts that share one
  peak and one denominator (never joining the logits nor splitting the
  weights: joined, the keys would, in a decode step, copy the whole cache).

  Attributes:
    weights: [batch, heads, q, k], the keys' weights.
    prompt_weights: [batch, heads, q, l]; with `weights` they sum to 1.
    peak: [batch, heads, q, 1], the row's largest logit over prompts and
      keys (it only keeps exp finite).
    total: [batch, heads, q, 1], `sum(exp(logit - peak))` over both.
  """
  weights: jax.Array
  prompt_weights: jax.Array
  peak: jax.Array
  total: jax.Array


def prompt_logits(query: jax.Array, prefix_key: jax.Array,
                  dtype) -> jax.Array:
  """query [batch, q, heads, head_dim], prefix_key [batch, l, heads,
  head_dim] -> the prompts' logits [batch, heads, q, l] in `dtype`."""
  return jnp.einsum('bqhd,blhd->bhql', query.astype(dtype),
                    prefix_key.astype(dtype))


def two_part_softmax(logits: jax.Array,
                     prompt_logits_: jax.Array) -> TwoPartSoftmax:
  """The softmax of `[prompt_logits_; logits]` along the last axis."""
  peak = jnp.maximum(jnp.max(prompt_logits_, -1, keepdims=True),
                     jnp.max(logits, -1, keepdims=True))
  exp = jnp.exp(logits - peak)
  prompt_exp = jnp.exp(prompt_logits_ - peak)
  total = (jnp.sum(exp, -1, keepdims=True) +
           jnp.sum(prompt_exp, -1, keepdims=True))
  return TwoPartSoftmax(exp / total, prompt_exp / total, peak, total)


def _mix(weights, prompt_weights, value, prefix_value, keep, prompt_keep,
         rate):
  """(Dropped-out) weights times values, keys' and prompts' parts summed:
  [batch, q, heads, head_dim]."""
  dtype = weights.dtype
  out = jnp.einsum('bhqk,bhdk->bqhd', _scale_kept(weights, keep, rate),
                   value.astype(dtype))
  if prefix_value is None:
    return out
  return out + jnp.einsum('bhql,blhd->bqhd',
                          _scale_kept(prompt_weights, prompt_keep, rate),
                          prefix_value.astype(dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _attention(logits, query, prefix_key, value, prefix_value, keep,
               prompt_keep, rate):
  return _attention_fwd(logits, query, prefix_key, value, prefix_value, keep,
                        prompt_keep, rate)[0]


def _attention_fwd(logits, query, prefix_key, value, prefix_value, keep,
                   prompt_keep, rate):
  dtype = value.dtype
  if prefix_key is None:
    weights, prompt_weights = jax.nn.softmax(logits), None
    peak = total = None
  else:
    parts = two_part_softmax(logits,
                             prompt_logits(query, prefix_key, logits.dtype))
    weights, peak, total = parts.weights, parts.peak, parts.total
    prompt_weights = parts.prompt_weights.astype(dtype)
  out = _mix(weights.astype(dtype), prompt_weights, value, prefix_value, keep,
             prompt_keep, rate)
  # Neither the dropped-out weights nor the prompts' logits or weights: the
  # backward pass applies the keep masks again and recomputes the prompts'
  # weights from the query and the prompt keys. The keys' weights are what
  # the plain softmax keeps too; `out` is kept anyway for the output
  # projection. Without a prefix the query is not needed.
  return out, (weights, peak, total,
               None if prefix_key is None else query, prefix_key, value,
               prefix_value, keep, prompt_keep, out)


def _attention_bwd(rate, residuals, d_out):
  (weights, peak, total, query, prefix_key, value, prefix_value, keep,
   prompt_keep, out) = residuals
  dtype, float_ = d_out.dtype, weights.dtype
  # Derivatives by the (dropped-out) weights, in the activation dtype as
  # the plain formula's.
  d_weights = _scale_kept(
      jnp.einsum('bqhd,bhdk->bhqk', d_out, value.astype(dtype)), keep, rate)
  # The softmax's backward pass subtracts sum_j w_j * d_weights_j over
  # prompts and keys, which is d_out . out (out = sum_j w_j * value_j, the
  # dropout included): one pass over the keys' weights instead of two.
  delta = jnp.einsum('bqhd,bqhd->bhq', d_out.astype(float_),
                     out.astype(float_))[..., None]
  d_logits = weights * (d_weights.astype(float_) - delta)
  d_value = jnp.einsum('bhqk,bqhd->bhdk',
                       _scale_kept(weights.astype(dtype), keep, rate), d_out)
  if prefix_key is None:
    return (d_logits, None, None, d_value.astype(value.dtype), None, None,
            None)
  prompt_weights = jnp.exp(
      prompt_logits(query, prefix_key, float_) - peak) / total
  d_prompt_weights = _scale_kept(
      jnp.einsum('bqhd,blhd->bhql', d_out, prefix_value.astype(dtype)),
      prompt_keep, rate)
  d_prompt_logits = prompt_weights * (d_prompt_weights.astype(float_) - delta)
  d_query = jnp.einsum('bhql,blhd->bqhd', d_prompt_logits,
                       prefix_key.astype(float_))
  d_prefix_key = jnp.einsum('bhql,bqhd->blhd', d_prompt_logits,
                            query.astype(float_))
  d_prefix_value = jnp.einsum(
      'bhql,bqhd->blhd',
      _scale_kept(prompt_weights.astype(dtype), prompt_keep, rate), d_out)
  return (d_logits, d_query.astype(query.dtype),
          d_prefix_key.astype(prefix_key.dtype), d_value.astype(value.dtype),
          d_prefix_value.astype(prefix_value.dtype), None, None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(logits: jax.Array, query: jax.Array, value: jax.Array,
              prefix: Optional[Prefix] = None, dropout_rate: float = 0.0,
              dropout_rng: Optional[jax.Array] = None) -> jax.Array:
  """Attention over the keys, or over `[prompts; keys]` with a prefix
  (METHOD.md section 1: one softmax, in two parts, `two_part_softmax`),
  dropout on its weights, the values mixed.

  Args:
    logits: [batch, heads, q, k], the keys' logits with their bias
      (`attention_logits`).
    query: [batch, q, heads, head_dim], as the logits were computed from it
      (in their dtype: then the backward pass keeps one copy of it).
    value: [batch, heads, head_dim, k] (the cache layout); its dtype is the
      output's.
    prefix: (prompt keys, prompt values), each [batch, l, heads, head_dim],
      or None; the prompt columns get bias 0.

  Returns:
    [batch, q, heads, head_dim]

  A `jax.custom_vjp`, with or without a prefix: the backward pass keeps the
  keys' float32 weights and the dropout masks, not the dropped-out weights
  (autodiff of the plain formula keeps both: [batch, heads, q, k] in the
  activation dtype, 8 MiB per device per encoder layer at T5.1.1-XL on v4),
  and with a prefix the peak and the total, recomputing the prompts' logits
  and weights from the query and the prompt keys. The dropout masks are
  drawn once, here, for both passes.
  """
  keep = prompt_keep = None
  prefix_key = prefix_value = None
  if dropout_rng is not None and dropout_rate > 0.0:
    key_rng = dropout_rng
    if prefix is not None:
      key_rng, prompt_rng = jax.random.split(dropout_rng)
      prompt_keep = jax.random.bernoulli(
          prompt_rng, 1.0 - dropout_rate,
          logits.shape[:-1] + (prefix[0].shape[1],))
    keep = jax.random.bernoulli(key_rng, 1.0 - dropout_rate, logits.shape)
  if prefix is not None:
    prefix_key, prefix_value = prefix
  return _attention(logits, query, prefix_key, value, prefix_value, keep,
                    prompt_keep, dropout_rate)


# Logical axes of keys and values in the cache layout.
CACHE_AXES = ('batch', 'heads', 'kv', 'length')


def to_cache_layout(x: jax.Array) -> jax.Array:
  """[batch, length, heads, head_dim] -> [batch, heads, head_dim, length]."""
  return jnp.transpose(x, (0, 2, 3, 1))


class MultiHeadAttention(nn.Module):
  """T5 multi-head attention (`query`, `key`, `value`, `out` projections).

  Decoding: the call that first sees `decode=True` creates the cache (zeros
  for self-attention, the projected encoder outputs for cross-attention) and
  otherwise runs as usual; later calls feed one position at a time, at
  `decode_index`, and read keys and values from the cache.

  Attributes:
    config: the backbone configuration.
    cross: whether this is encoder-decoder attention (its keys and values
      depend only on the encoder output, so the decode cache keeps them
      projected once).
  """
  config: T5Config
  cross: bool = False

  @nn.compact
  def __call__(self,
               inputs_q: jax.Array,
               inputs_kv: jax.Array,
               mask: Optional[jax.Array] = None,
               bias: Optional[jax.Array] = None,
               prefix: Optional[Prefix] = None,
               *,
               deterministic: bool = True,
               decode: bool = False,
               decode_index: Optional[jax.Array] = None) -> jax.Array:
    """Attends from `inputs_q` to `[prefix; inputs_kv]`.

    Args:
      inputs_q: [batch, q_length, emb_dim]
      inputs_kv: [batch, kv_length, emb_dim]
      mask: boolean [batch, 1, q_length, kv_length] over the real keys.
      bias: [1, heads, q_length, kv_length] relative position bias, or None.
      prefix: key/value prefix, never masked and never position-biased.
      deterministic: disables dropout.
      decode: use and update the autoregressive cache.
      decode_index: scalar position of the single decoded query.

    Returns:
      [batch, q_length, emb_dim]
    """
    cfg = self.config
    dtype = cfg.activation_dtype
    projection = lambda name, init=default_kernel_init: DenseGeneral(
        (cfg.num_heads, cfg.head_dim), kernel_axes=('embed', 'joined_kv'),
        dtype=dtype, kernel_init=init, name=name)
    # T5 does not divide logits by sqrt(head_dim); the query init does.
    query_init = lambda key, shape, dtype: default_kernel_init(
        key, shape, dtype) / jnp.sqrt(cfg.head_dim).astype(dtype)
    axes = ('batch', 'length', 'heads', 'kv')

    # [batch, q_length, emb_dim] -> [batch, q_length, heads, head_dim]
    query = with_sharding_constraint(projection('query', query_init)(inputs_q),
                                     axes)
    key_proj, value_proj = projection('key'), projection('value')

    if decode and self.cross:
      key, value = self._cached_cross_kv(key_proj, value_proj, inputs_kv)
    else:
      # [batch, kv_length, emb_dim] -> [batch, heads, head_dim, kv_length]
      key = with_sharding_constraint(to_cache_layout(key_proj(inputs_kv)),
                                     CACHE_AXES)
      value = with_sharding_constraint(
          to_cache_layout(value_proj(inputs_kv)), CACHE_AXES)
      if decode:
        key, value, mask = self._cached_self_kv(key, value, mask,
                                                decode_index)

    attention_bias = mask_to_bias(mask, dtype)
    if bias is not None:
      attention_bias = bias if attention_bias is None else attention_bias + bias
    dropout_rng = None
    if not deterministic and cfg.dropout_rate > 0.0:
      dropout_rng = self.make_rng('dropout')
    logits = attention_logits(query, key, attention_bias,
                              cfg.float32_attention_logits)
    if prefix is not None and self.is_mutable_collection('intermediates'):
      # The paper's analysis: attention mass on the prompts, [batch, heads,
      # q]; only when the caller makes 'intermediates' mutable.
      parts = two_part_softmax(
          logits, prompt_logits(query, prefix[0], logits.dtype))
      self.sow('intermediates', 'prefix_attention_mass',
               jnp.sum(parts.prompt_weights.astype(dtype), axis=-1))
    # The query in the logits' dtype: the logits' backward pass keeps that
    # one, and the prompts' recompute shares it.
    x = attention(logits, query.astype(logits.dtype), value, prefix,
                  cfg.dropout_rate, dropout_rng)
    # [batch, q_length, heads, head_dim] -> [batch, q_length, emb_dim]
    return DenseGeneral(inputs_q.shape[-1], axis=(-2, -1),
                        kernel_axes=('joined_kv', 'embed'), dtype=dtype,
                        name='out')(x)

  def _cached_self_kv(self, key, value, mask, decode_index):
    """Writes this step's key/value into the cache and returns all of it.

    key, value: [batch, heads, head_dim, 1] in a decode step (the whole
    sequence in the cache-creating call); the cache is [batch, heads,
    head_dim, max_length].
    """
    initialized = self.has_variable('cache', 'cached_key')
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, key.shape,
                               key.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros,
                                 value.shape, value.dtype)
    if not initialized:
      # The cache-creating call runs a normal (causally masked) pass.
      return key, value, mask
    batch, length = cached_key.value.shape[0], cached_key.value.shape[-1]
    if key.shape[-1] != 1:
      raise ValueError('Cached decoding feeds one position at a time; got a '
                       f'query of length {key.shape[-1]}.')
    key = jax.lax.dynamic_update_slice_in_dim(cached_key.value, key,
                                              decode_index, axis=3)
    value = jax.lax.dynamic_update_slice_in_dim(cached_value.value, value,
                                                decode_index, axis=3)
    cached_key.value, cached_value.value = key, value
    # The single query sees positions already written, never the zeros after.
    visible = jnp.broadcast_to(jnp.arange(length) <= decode_index,
                               (batch, 1, 1, length))
    mask = visible if mask is None else jnp.logical_and(mask, visible)
    return key, value, mask

  def _cached_cross_kv(self, key_proj, value_proj, encoded):
    """Projects the encoder output once, at cache creation, then reuses it.

    Returns key, value [batch, heads, head_dim, enc_length].
    """
    project = lambda proj: with_sharding_constraint(
        to_cache_layout(proj(encoded)), CACHE_AXES)
    cached_key = self.variable('cache', 'cached_key', project, key_proj)
    cached_value = self.variable('cache', 'cached_value', project,
                                 value_proj)
    return cached_key.value, cached_value.value
