"""T5 encoder-decoder (v1.0 and v1.1) that takes a task `Conditioning`.

Module names are the names in t5x's T5 checkpoints (`token_embedder`,
`encoder/layers_0/attention/query`, `decoder/logits_dense`, ...), so a stock
checkpoint loads without renaming. The task conditioner, if any, is the
`conditioner` submodule; everything else is the untouched backbone.
"""
from typing import Callable, Optional, Tuple

import flax.linen as nn
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp

from hyperprompt.attention import MultiHeadAttention
from hyperprompt.conditioning.interface import (Conditioner, Conditioning,
                                                LayerConditioning,
                                                apply_adapter, per_example,
                                                require_task_ids,
                                                stack_layers)
from hyperprompt.config import T5Config
from hyperprompt.layers import (DenseGeneral, Embed, MlpBlock, RMSNorm,
                                RelativePositionBiases,
                                with_sharding_constraint)

EMBED_AXES = ('batch', 'length', 'embed')

_REMAT_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _maybe_remat(layer_cls, config: T5Config, static_argnums):
  """Wraps a layer class in jax.checkpoint when `config.remat_policy` asks."""
  if config.remat_policy == 'none':
    return layer_cls
  return nn.remat(layer_cls, policy=_REMAT_POLICIES[config.remat_policy],
                  static_argnums=static_argnums)


def _layer_stack(layer_cls, config: T5Config, static_argnums, in_axes,
                 num_layers: int):
  """`layer_cls` (with remat) as one `nn.scan` over `num_layers` layers.

  Parameters get a leading 'layers' axis (logical name included, so the
  partitioning rules see it). The decode cache stacks its layers along axis
  1, keeping the batch first: decoding.cache_map expands and reorders beams
  along axis 0 of every batched cache leaf. Dropout keys differ per layer.
  """
  return nn_partitioning.scan_with_axes(
      _maybe_remat(layer_cls, config, static_argnums),
      variable_axes={'params': 0, 'cache': 1, 'intermediates': 0},
      split_rngs={'params': True, 'dropout': True},
      in_axes=in_axes, length=num_layers, axis_name='layers')


def attention_mask(query_valid: jax.Array, key_valid: jax.Array,
                   causal: bool = False) -> jax.Array:
  """[batch, q], [batch, k] booleans -> mask [batch, 1, q, k]."""
  mask = query_valid[:, None, :, None] & key_valid[:, None, None, :]
  if causal:
    q, k = query_valid.shape[1], key_valid.shape[1]
    mask = mask & (jnp.arange(q)[:, None] >= jnp.arange(k)[None, :])
  return mask


def encoder_valid_positions(encoder_input_tokens: jax.Array,
                            encoded_length: int) -> jax.Array:
  """Which encoder outputs are real: tokens > 0, and any input prompts.

  Input prompts (prompt tuning) sit in front of the tokens and are always
  valid; their number is `encoded_length - tokens_length`.
  """
  valid = encoder_input_tokens > 0
  num_prompts = encoded_length - encoder_input_tokens.shape[1]
  return jnp.pad(valid, [(0, 0), (num_prompts, 0)], constant_values=True)


class EncoderLayer(nn.Module):
  """Layer norm -> self-attention -> residual -> layer norm -> MLP -> residual.

  `scanned`: the body of `nn.scan`, returning `(x, None)` (carry, no output).
  """
  config: T5Config
  scanned: bool = False

  @nn.compact
  def __call__(self, x, mask, bias, cond: LayerConditioning,
               deterministic: bool):
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
    # [batch, length, emb_dim] -> [batch, length, emb_dim]
    h = RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype,
                name='pre_attention_layer_norm')(x)
    h = MultiHeadAttention(cfg, name='attention')(
        h, h, mask, bias, cond.self_prefix, deterministic=deterministic)
    x = x + dropout(h, deterministic=deterministic)
    h = RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype,
                name='pre_mlp_layer_norm')(x)
    h = MlpBlock(cfg, name='mlp')(h, deterministic)
    h = apply_adapter(dropout(h, deterministic=deterministic), cond.adapter,
                      cond.adapter_task_ids)
    x = with_sharding_constraint(x + h, EMBED_AXES)
    return (x, None) if self.scanned else x


class DecoderLayer(nn.Module):
  """Causal self-attention, encoder-decoder attention and MLP, each pre-normed.

  `scanned`: the body of `nn.scan`, returning `(x, None)`.
  """
  config: T5Config
  scanned: bool = False

  @nn.compact
  def __call__(self, x, encoded, self_mask, cross_mask, bias,
               cond: LayerConditioning, deterministic: bool, decode: bool,
               decode_index):
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
    norm = lambda name: RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype,
                                name=name)
    # [batch, length, emb_dim] -> [batch, length, emb_dim]
    h = norm('pre_self_attention_layer_norm')(x)
    h = MultiHeadAttention(cfg, name='self_attention')(
        h, h, self_mask, bias, cond.self_prefix, deterministic=deterministic,
        decode=decode, decode_index=decode_index)
    x = x + dropout(h, deterministic=deterministic)
    # [batch, length, emb_dim] x [batch, enc_length, emb_dim] -> same as x
    h = norm('pre_cross_attention_layer_norm')(x)
    h = MultiHeadAttention(cfg, cross=True, name='encoder_decoder_attention')(
        h, encoded, cross_mask, None, cond.cross_prefix,
        deterministic=deterministic, decode=decode)
    x = x + dropout(h, deterministic=deterministic)
    h = norm('pre_mlp_layer_norm')(x)
    h = MlpBlock(cfg, name='mlp')(h, deterministic)
    h = apply_adapter(dropout(h, deterministic=deterministic), cond.adapter,
                      cond.adapter_task_ids)
    x = with_sharding_constraint(x + h, EMBED_AXES)
    return (x, None) if self.scanned else x


class Encoder(nn.Module):
  """Embeds tokens (after optional input prompts) and runs the layer stack."""
  config: T5Config
  shared_embedding: Embed

  @nn.compact
  def __call__(self, encoder_input_tokens, conditioning: Conditioning,
               deterministic: bool):
    """[batch, length] tokens -> [batch, p + length, emb_dim] encodings."""
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
    # [batch, length] -> [batch, length, emb_dim]
    x = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))
    if conditioning.input_prompts is not None:
      # [batch, p, emb_dim] ++ [batch, length, emb_dim]
      x = jnp.concatenate(
          [conditioning.input_prompts.astype(x.dtype), x], axis=1)
    x = dropout(x, deterministic=deterministic)
    valid = encoder_valid_positions(encoder_input_tokens, x.shape[1])
    mask = attention_mask(valid, valid)
    positions = jnp.arange(x.shape[1])
    bias = RelativePositionBiases(cfg, bidirectional=True,
                                  name='relpos_bias')(positions, positions)
    if cfg.scan_layers:
      # x is the carry; the conditioning is scanned over, the rest broadcast.
      stack = _layer_stack(EncoderLayer, cfg, (5,),
                           (nn.broadcast, nn.broadcast, 0, nn.broadcast),
                           cfg.num_encoder_layers)
      x, _ = stack(cfg, scanned=True, name='layers')(
          x, mask, bias, stack_layers(conditioning.encoder), deterministic)
    else:
      layer_cls = _maybe_remat(EncoderLayer, cfg, static_argnums=(5,))
      for i in range(cfg.num_encoder_layers):
        x = layer_cls(cfg, name=f'layers_{i}')(x, mask, bias,
                                               conditioning.encoder[i],
                                               deterministic)
    x = RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype,
                name='encoder_norm')(x)
    return dropout(x, deterministic=deterministic)


class Decoder(nn.Module):
  """Teacher-forced or cached step-by-step decoder, with output logits.

  In decode mode the call that creates the cache stores the decoder's
  conditioning in it; later one-position calls read it from there, so the
  conditioner runs once per decode, not once per token.
  """
  config: T5Config
  shared_embedding: Embed

  @nn.compact
  def __call__(self, encoded, encoder_input_tokens, decoder_input_tokens,
               decoder_target_tokens,
               conditioning: Callable[[], Tuple[LayerConditioning, ...]],
               deterministic: bool, decode: bool = False):
    """Returns logits [batch, length, vocab].

    Args:
      encoded: [batch, enc_length, emb_dim] encoder output.
      encoder_input_tokens: [batch, tokens] (for the cross-attention mask).
      decoder_input_tokens: [batch, length], or [batch, 1] in a decode step.
      decoder_target_tokens: [batch, length] (padding mask), or None.
      conditioning: returns the per-layer decoder conditioning; called only
        when it is not already in the decode cache.
      deterministic: disables dropout.
      decode: use and update the autoregressive cache.
    """
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
    length = decoder_input_tokens.shape[1]
    decode_step = decode and self.has_variable('cache', 'cache_index')

    relpos = RelativePositionBiases(cfg, bidirectional=False,
                                    name='relpos_bias')
    full_bias = lambda: relpos(jnp.arange(length), jnp.arange(length))
    if decode:
      # Created by the first decode call; `cache_index` and `cached_bias` are
      # the names t5x's beam search leaves unexpanded. Every other leaf is
      # expanded and reordered along its first dim as the batch, so the
      # conditioning is stored per example (adapter weights gathered).
      layer_conditioning = self.variable(
          'cache', 'conditioning',
          lambda: tuple(map(per_example, conditioning()))).value
      index = self.variable('cache', 'cache_index',
                            lambda: jnp.array(0, jnp.int32))
      cached_bias = self.variable('cache', 'cached_bias', full_bias)
    else:
      layer_conditioning = conditioning()

    if decode_step:
      decode_index = index.value
      index.value = decode_index + 1
      # Row `decode_index` of the stored [1, heads, max_len, max_len] bias.
      bias = jax.lax.dynamic_slice_in_dim(cached_bias.value, decode_index, 1,
                                          axis=2)
      self_mask = None  # The cache masks unwritten positions itself.
      query_valid = jnp.ones((encoded.shape[0], 1), bool)
    else:
      decode_index = None
      bias = cached_bias.value if decode else full_bias()
      if decoder_target_tokens is None:
        query_valid = jnp.ones(decoder_input_tokens.shape, bool)
      else:
        query_valid = decoder_target_tokens > 0
      self_mask = attention_mask(query_valid, query_valid, causal=True)
    cross_mask = attention_mask(
        query_valid, encoder_valid_positions(encoder_input_tokens,
                                             encoded.shape[1]))

    # [batch, length] -> [batch, length, emb_dim]
    y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
    y = dropout(y, deterministic=deterministic)
    if cfg.scan_layers:
      stack = _layer_stack(DecoderLayer, cfg, (7, 8),
                           (nn.broadcast,) * 4 + (0,) + (nn.broadcast,) * 3,
                           cfg.num_decoder_layers)
      y, _ = stack(cfg, scanned=True, name='layers')(
          y, encoded, self_mask, cross_mask, bias,
          stack_layers(layer_conditioning), deterministic, decode,
          decode_index)
    else:
      layer_cls = _maybe_remat(DecoderLayer, cfg, static_argnums=(7, 8))
      for i in range(cfg.num_decoder_layers):
        y = layer_cls(cfg, name=f'layers_{i}')(
            y, encoded, self_mask, cross_mask, bias, layer_conditioning[i],
            deterministic, decode, decode_index)
    y = RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype,
                name='decoder_norm')(y)
    y = dropout(y, deterministic=deterministic)
    if cfg.logits_via_embedding:
      # T5 v1.0: tied output layer, rescaled by 1/sqrt(emb_dim).
      logits = self.shared_embedding.attend(y) / jnp.sqrt(y.shape[-1])
    else:
      # [batch, length, emb_dim] -> [batch, length, vocab]
      logits = DenseGeneral(cfg.vocab_size, kernel_axes=('embed', 'vocab'),
                            dtype=jnp.float32, name='logits_dense')(y)
    return with_sharding_constraint(logits, ('batch', 'length', 'vocab'))


class Transformer(nn.Module):
  """T5 encoder-decoder conditioned on the task.

  Attributes:
    config: backbone hyperparameters.
    conditioner: the task-conditioning method, or None for plain T5.
  """
  config: T5Config
  conditioner: Optional[Conditioner] = None

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim,
                                cfg.activation_dtype)
    self.encoder = Encoder(cfg, self.token_embedder)
    self.decoder = Decoder(cfg, self.token_embedder)

  def condition(self, task_ids: Optional[jax.Array],
                deterministic: bool = True) -> Conditioning:
    """task_ids [batch] -> Conditioning (empty without a conditioner)."""
    task_ids = require_task_ids(self.conditioner, task_ids)
    if task_ids is None:
      return Conditioning.empty(self.config)
    return self.conditioner(task_ids, self.config, deterministic)

  def encode(self, encoder_input_tokens, task_ids=None, *,
             enable_dropout: bool = True,
             conditioning: Optional[Conditioning] = None):
    """[batch, length] -> [batch, p + length, emb_dim]."""
    if conditioning is None:
      conditioning = self.condition(task_ids, not enable_dropout)
    return self.encoder(encoder_input_tokens, conditioning,
                        not enable_dropout)

  def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
             decoder_target_tokens=None, task_ids=None, *,
             enable_dropout: bool = True, decode: bool = False,
             max_decode_length: Optional[int] = None,
             conditioning: Optional[Conditioning] = None):
    """Decoder logits [batch, length, vocab]; see `Decoder`.

    `max_decode_length` is accepted for t5x compatibility; the cache length
    is the length of the `decoder_input_tokens` of the cache-creating call.
    """
    del max_decode_length
    if conditioning is None:
      lazy = lambda: self.condition(task_ids, not enable_dropout).decoder
    else:
      lazy = lambda: conditioning.decoder
    return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens,
                        decoder_target_tokens, lazy, not enable_dropout,
                        decode)

  def __call__(self, encoder_input_tokens, decoder_input_tokens,
               decoder_target_tokens=None, task_ids=None, *,
               enable_dropout: bool = True, decode: bool = False,
               max_decode_length: Optional[int] = None):
    """Teacher-forced logits [batch, target_length, vocab].

    The conditioner runs once here and serves both stacks.
    """
    conditioning = self.condition(task_ids, not enable_dropout)
    encoded = self.encode(encoder_input_tokens, enable_dropout=enable_dropout,
                          conditioning=conditioning)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens, enable_dropout=enable_dropout,
                       decode=decode, max_decode_length=max_decode_length,
                       conditioning=conditioning)
