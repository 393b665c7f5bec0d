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


class PrefixLogits(NamedTuple):
  """The prompt columns' share of an attention softmax, from which their
  weights are computed in the forward pass and again in the backward pass
  (`prefix_weights`).

  Attributes:
    logits: [batch, heads, q_length, l], the prompts' logits.
    peak: [batch, heads, q_length, 1], the largest logit of the row over
      prompts and keys (no gradient; it only keeps exp finite).
    total: [batch, heads, q_length, 1], the softmax denominator over prompts
      and keys, `sum(exp(logit - peak))`.
  """
  logits: jax.Array
  peak: jax.Array
  total: jax.Array


def prefix_weights(prefix: PrefixLogits) -> jax.Array:
  """The prompt columns' attention weights [batch, heads, q, l]: with the
  keys' weights from `attention_weights` they sum to 1 over l + k."""
  return jnp.exp(prefix.logits - prefix.peak) / prefix.total


def attention_weights(
    query: jax.Array, key: jax.Array, bias: Optional[jax.Array],
    prefix_key: Optional[jax.Array] = None,
    float32_logits: bool = True
) -> Tuple[jax.Array, Optional[PrefixLogits]]:
  """Softmax over `[prefix keys; keys]`, without 1/sqrt(d) scaling (T5 folds
  it into the query init).

  Args:
    query: [batch, q_length, heads, head_dim]
    key: [batch, heads, head_dim, k_length], the layout of the decode cache
      (t5x's), so a decode step reads the cache without transposing it.
    bias: broadcastable to [batch, heads, q_length, k_length], over the real
      keys only, or None.
    prefix_key: [batch, l, heads, head_dim] or None; its columns get bias 0.

  Returns:
    (weights [batch, heads, q_length, k_length] in the query's dtype, the
    keys' part of one softmax over prompts and keys; and with `prefix_key`,
    the `PrefixLogits` of the prompts' part, else None).

    With prompts the softmax is taken in two parts that share one peak and
    one denominator, never joining the logits nor splitting the weights. For
    the backward pass the prompts' part keeps its logits only: their weights
    (and dropped-out weights) are recomputed from them, under
    `jax.checkpoint`. At T5.1.1-XXL the weights had cost 48 MiB per device
    over 24 layers (BENCHMARKS.md, pod-slice memory).
  """
  dtype = query.dtype
  if float32_logits:
    query, key = query.astype(jnp.float32), key.astype(jnp.float32)
  logits = jnp.einsum('bqhd,bhdk->bhqk', query, key.astype(query.dtype))
  if bias is not None:
    logits = logits + bias.astype(logits.dtype)
  if prefix_key is None:
    return jax.nn.softmax(logits).astype(dtype), None
  # Prompt logits apart from the keys': joining the keys would, in a decode
  # step, copy the whole cache.
  prompt_logits = jnp.einsum('bqhd,blhd->bhql', query,
                             prefix_key.astype(query.dtype))
  peak = jax.lax.stop_gradient(
      jnp.maximum(jnp.max(prompt_logits, -1, keepdims=True),
                  jnp.max(logits, -1, keepdims=True)))
  exp = jnp.exp(logits - peak)
  prompt_total = jax.checkpoint(
      lambda s, m: jnp.sum(jnp.exp(s - m), -1, keepdims=True))(prompt_logits,
                                                               peak)
  total = jnp.sum(exp, -1, keepdims=True) + prompt_total
  return ((exp / total).astype(dtype),
          PrefixLogits(prompt_logits, peak, total))


def _dropout(weights: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  keep = jax.random.bernoulli(rng, 1.0 - rate, weights.shape)
  return weights * keep.astype(weights.dtype) / jnp.asarray(1.0 - rate,
                                                            weights.dtype)


def _prefix_values(prefix: PrefixLogits, prefix_value: jax.Array,
                   dropout_rng: Optional[jax.Array], dropout_rate: float,
                   dtype) -> jax.Array:
  """The prompts' share of the output, [batch, q, heads, head_dim]."""
  weights = prefix_weights(prefix).astype(dtype)
  if dropout_rng is not None:
    weights = _dropout(weights, dropout_rate, dropout_rng)
  return jnp.einsum('bhql,blhd->bqhd', weights, prefix_value.astype(dtype))


def combine_values(weights: jax.Array, value: jax.Array,
                   prefix: Optional[Tuple[PrefixLogits, jax.Array]] = None,
                   dropout_rate: float = 0.0,
                   dropout_rng: Optional[jax.Array] = None) -> jax.Array:
  """Mixes values with the attention weights.

  Args:
    weights: [batch, heads, q, k] from `attention_weights`.
    value: [batch, heads, head_dim, k] (the cache layout).
    prefix: (the `PrefixLogits` from `attention_weights`, prefix values
      [batch, l, heads, head_dim]), or None.

  Returns:
    [batch, q, heads, head_dim]
  """
  dtype = weights.dtype
  prefix_rng = None
  if dropout_rng is not None and dropout_rate > 0.0:
    if prefix is not None:
      dropout_rng, prefix_rng = jax.random.split(dropout_rng)
    weights = _dropout(weights, dropout_rate, dropout_rng)
  out = jnp.einsum('bhqk,bhdk->bqhd', weights, value.astype(dtype))
  if prefix is not None:
    # Under jax.checkpoint: the backward pass recomputes the prompts'
    # (dropped-out) weights from their logits (`attention_weights`).
    out = out + jax.checkpoint(_prefix_values, static_argnums=(3, 4))(
        *prefix, prefix_rng, dropout_rate, dtype)
  return out


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
    prefix_key, prefix_value = (None, None) if prefix is None else prefix

    dropout_rng = None
    if not deterministic and cfg.dropout_rate > 0.0:
      dropout_rng = self.make_rng('dropout')
    # [batch, heads, q_length, kv_length], and what the prompts' weights
    # are computed from.
    weights, prefix_logits = attention_weights(
        query, key, attention_bias, prefix_key, cfg.float32_attention_logits)
    prompts = None
    if prefix is not None:
      # The paper's analysis: attention mass on the prompts, [batch, heads, q].
      # Recorded only when the caller makes 'intermediates' mutable.
      self.sow('intermediates', 'prefix_attention_mass',
               jnp.sum(prefix_weights(prefix_logits).astype(dtype), axis=-1))
      prompts = (prefix_logits, prefix_value)
    x = combine_values(weights, value, prompts, cfg.dropout_rate, dropout_rng)
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
