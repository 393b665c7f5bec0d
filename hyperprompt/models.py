"""The model: loss, scores, predictions and initial variables of a Transformer.

Method names and signatures follow t5x's `EncoderDecoderModel`, so the runner
and the t5x bridge treat both alike. Everything but `validate_batch` is pure
and jit-able; `validate_batch` runs on the host, before a batch reaches the
device, because an out-of-range task id on the device would be clamped by
`jnp.take` and silently condition the example on another task.

In gin (dynamic registration, as t5x's configs):

    from hyperprompt import decoding, models, network
    models.EncoderDecoderModel.module = @network.Transformer()
    models.EncoderDecoderModel.input_vocabulary = %VOCABULARY
    models.EncoderDecoderModel.output_vocabulary = %VOCABULARY
    models.EncoderDecoderModel.decode_fn = @decoding.beam_search
    models.EncoderDecoderModel.num_decodes = 4
    decoding.beam_search.alpha = 0.6
"""
import math
from typing import Any, Callable, Mapping, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from hyperprompt import decoding
from hyperprompt.conditioning.interface import check_task_ids
from hyperprompt.conditioning.interface import require_task_ids
from hyperprompt.feature_converter import TaskConditionedFeatureConverter
from hyperprompt.network import Transformer

Batch = Mapping[str, jax.Array]
DecodeFn = Callable[..., Any]

# Every batch has these; `decoder_loss_weights` defaults to `targets > 0`.
# Prediction needs only the first two (the decoder inputs give the length).
TOKEN_FEATURES = ('encoder_input_tokens', 'decoder_input_tokens',
                  'decoder_target_tokens')
# Every feature a model reads (TaskConditionedFeatureConverter's output).
MODEL_FEATURES = TOKEN_FEATURES + ('decoder_loss_weights', 'task_ids')
# What initialisation and prediction read.
INPUT_FEATURES = TOKEN_FEATURES[:2] + ('task_ids',)


def initial_variables(module: Transformer, rng: jax.Array,
                      input_shapes: Mapping[str, tuple],
                      input_types: Optional[Mapping[str, Any]] = None
                      ) -> dict:
  """{'params', 'params_axes'} of `module` for batches of the given shapes.

  Initialises on dummy inputs (ones; task 0 for a conditioned network). Works
  under `jax.eval_shape` (shapes and shardings without allocating) and
  `jax.jit`.
  """
  types = dict(input_types or {})
  encoder_tokens = jnp.ones(input_shapes['encoder_input_tokens'],
                            types.get('encoder_input_tokens', jnp.int32))
  decoder_tokens = jnp.ones(input_shapes['decoder_input_tokens'],
                            types.get('decoder_input_tokens', jnp.int32))
  task_ids = None
  if module.conditioner is not None:
    task_ids = jnp.zeros(
        input_shapes.get('task_ids', encoder_tokens.shape[:1]),
        types.get('task_ids', jnp.int32))
  variables = module.init(rng, encoder_tokens, decoder_tokens,
                          decoder_tokens, task_ids, enable_dropout=False)
  return {'params': variables['params'],
          'params_axes': variables['params_axes']}


def encode_and_create_cache(module: Transformer, params, encoder_tokens,
                            task_ids, decode_length: int):
  """(encoded [batch, p + length, emb_dim], decode cache) for decoding.

  The conditioner runs once and serves the encoder and the cache; the cache
  stores the decoder's conditioning and the cross-attention keys and values,
  so it is created from the real encoder output, not dummies.
  """
  def run(module, encoder_tokens, task_ids):
    conditioning = module.condition(task_ids, deterministic=True)
    encoded = module.encode(encoder_tokens, enable_dropout=False,
                            conditioning=conditioning)
    module.decode(encoded, encoder_tokens,
                  jnp.zeros((encoder_tokens.shape[0], decode_length),
                            jnp.int32),
                  enable_dropout=False, decode=True,
                  conditioning=conditioning)
    return encoded

  encoded, variables = module.apply({'params': params}, encoder_tokens,
                                    task_ids, method=run, mutable=['cache'])
  return encoded, variables['cache']


def decode_step(module: Transformer, params, cache, encoded, encoder_tokens,
                tokens):
  """One cached decode step: tokens [batch, 1] -> (logits [batch, vocab],
  cache). `encoded` and `encoder_tokens` have the cache's batch (expanded
  for beams)."""
  logits, variables = module.apply(
      {'params': params, 'cache': cache}, encoded, encoder_tokens, tokens,
      enable_dropout=False, decode=True, mutable=['cache'],
      method=module.decode)
  return logits[:, 0], variables['cache']


class Model(Protocol):
  """What runner, evaluation and train_state need of a model, as
  `EncoderDecoderModel` provides it (the t5x bridge's model serves t5x's own
  loops instead)."""

  FEATURE_CONVERTER_CLS: type
  num_tasks: Optional[int]

  def validate_batch(self, batch: Mapping[str, Any]) -> dict: ...

  def get_initial_variables(self, rng: jax.Array,
                            input_shapes: Mapping[str, tuple],
                            input_types: Optional[Mapping[str, Any]] = None
                            ) -> Mapping[str, Any]: ...

  def loss_fn(self, params, batch: Batch,
              dropout_rng: Optional[jax.Array]) -> tuple: ...

  def score_batch(self, params, batch: Batch) -> jax.Array: ...

  def predict_batch(self, params, batch: Batch) -> jax.Array: ...


def _smoothing_constant(label_smoothing: float, vocab_size: int) -> float:
  """Entropy of the smoothed target distribution, so a perfect model's loss
  is 0 whatever the smoothing (t5x's `normalizing_constant`)."""
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab_size - 1)
  entropy = 0.0
  if confidence > 0:
    entropy -= confidence * math.log(confidence)
  if low > 0:
    entropy -= (vocab_size - 1) * low * math.log(low)
  return entropy


def token_losses(logits: jax.Array, targets: jax.Array,
                 label_smoothing: float = 0.0, z_loss: float = 0.0):
  """Per-token cross-entropy and z-loss, both [batch, length].

  cross-entropy: against targets smoothed to `1 - label_smoothing` on the
  target and `label_smoothing / (vocab - 1)` elsewhere, minus that
  distribution's entropy. z-loss: `z_loss * log(Z)**2`, Z the softmax
  normaliser (keeps logits near log-probabilities; PaLM, t5x).
  """
  logits = logits.astype(jnp.float32)
  vocab_size = logits.shape[-1]
  # [batch, length]
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - log_z[..., None]
  target_log_prob = jnp.take_along_axis(log_probs, targets[..., None],
                                        axis=-1)[..., 0]
  if label_smoothing:
    low = label_smoothing / (vocab_size - 1)
    confidence = 1.0 - label_smoothing
    cross_ent = -((confidence - low) * target_log_prob +
                  low * jnp.sum(log_probs, axis=-1))
    cross_ent = cross_ent - _smoothing_constant(label_smoothing, vocab_size)
  else:
    cross_ent = -target_log_prob
  return cross_ent, z_loss * jnp.square(log_z)


def param_shapes(module: Transformer) -> Mapping[str, Any]:
  """`module`'s parameter tree as jax.ShapeDtypeStruct, nothing allocated.

  Parameter shapes do not depend on the batch or the lengths, so one token
  of one example is enough; tools compare this with a checkpoint's tree.
  """
  def init():
    tokens = jnp.ones((1, 1), jnp.int32)
    task_ids = None if module.conditioner is None else jnp.zeros(
        (1,), jnp.int32)
    return module.init(jax.random.PRNGKey(0), tokens, tokens, tokens,
                       task_ids, enable_dropout=False)['params']
  return jax.eval_shape(init)


class EncoderDecoderModel:
  """Loss, scoring and decoding around a `network.Transformer`.

  Attributes:
    module: the Transformer (its conditioner decides whether batches need
      `task_ids`).
    input_vocabulary, output_vocabulary: seqio vocabularies; decoding stops at
      `output_vocabulary.eos_id`.
    z_loss: coefficient of the auxiliary `log(Z)**2` loss.
    label_smoothing: mass spread uniformly over the non-target tokens.
    loss_normalizing_factor: the loss is the weighted token loss summed and
      divided by this constant, or, when None, by the sum of
      `decoder_loss_weights` (the number of target tokens), i.e. a mean per
      target token.
    decode_fn: a function of `decoding` (greedy, temperature_sample,
      beam_search) or one with the same signature.
    num_decodes: decodes per example when `predict_batch*` gets none (the beam
      size for beam search).
  """

  FEATURE_CONVERTER_CLS = TaskConditionedFeatureConverter

  def __init__(self, module: Transformer, input_vocabulary, output_vocabulary,
               *, z_loss: float = 1e-4, label_smoothing: float = 0.0,
               loss_normalizing_factor: Optional[float] = None,
               decode_fn: DecodeFn = decoding.greedy, num_decodes: int = 1):
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(
          f'label_smoothing must be in [0, 1), got {label_smoothing}.')
    if loss_normalizing_factor is not None and loss_normalizing_factor <= 0:
      raise ValueError('loss_normalizing_factor must be positive or None '
                       f'(per target token), got {loss_normalizing_factor}.')
    if output_vocabulary.eos_id is None:
      raise ValueError('The output vocabulary has no eos_id, so decoding '
                       'could never stop; use a vocabulary with one.')
    self.module = module
    self.input_vocabulary = input_vocabulary
    self.output_vocabulary = output_vocabulary
    self.z_loss = z_loss
    self.label_smoothing = label_smoothing
    self.loss_normalizing_factor = loss_normalizing_factor
    self.decode_fn = decode_fn
    self.num_decodes = num_decodes

  @property
  def num_tasks(self) -> Optional[int]:
    """Size of the task vocabulary the conditioner was built for, or None."""
    conditioner = self.module.conditioner
    return None if conditioner is None else conditioner.num_tasks

  # Host side.

  def validate_batch(self, batch: Mapping[str, Any],
                     needs_targets: bool = True) -> dict:
    """Checks a host (numpy) batch before it goes to the device.

    Args:
      batch: {feature: [batch, ...] numpy array}.
      needs_targets: False for prediction (predict_batch), which reads no
        `decoder_target_tokens`.

    Returns the batch with `task_ids` as int32; raises ValueError naming the
    problem otherwise.
    """
    required = TOKEN_FEATURES if needs_targets else TOKEN_FEATURES[:2]
    missing = [k for k in required if k not in batch]
    if missing:
      raise ValueError(
          f'The batch lacks {missing} (it has {sorted(batch)}). Batches come '
          f'from {self.FEATURE_CONVERTER_CLS.__name__}.')
    batch = dict(batch)
    enc_shape = np.shape(batch['encoder_input_tokens'])
    dec_shape = np.shape(batch['decoder_input_tokens'])
    if len(enc_shape) != 2 or len(dec_shape) != 2:
      raise ValueError('Token features must be [batch, length]; got '
                       f'encoder_input_tokens {enc_shape}, '
                       f'decoder_input_tokens {dec_shape}.')
    for name in ('decoder_target_tokens', 'decoder_loss_weights'):
      if name in batch and np.shape(batch[name]) != dec_shape:
        raise ValueError(f'{name} has shape {np.shape(batch[name])}, '
                         f'decoder_input_tokens {dec_shape}; they must match.')
    if enc_shape[0] != dec_shape[0]:
      raise ValueError(f'Batch sizes differ: encoder {enc_shape[0]}, '
                       f'decoder {dec_shape[0]}.')
    task_ids = require_task_ids(self.module.conditioner,
                                batch.get('task_ids'))
    if task_ids is None:
      return batch
    task_ids = check_task_ids(task_ids, self.num_tasks)
    if task_ids.shape != (enc_shape[0],):
      raise ValueError(f'task_ids must be [batch] = [{enc_shape[0]}], got '
                       f'shape {task_ids.shape}.')
    batch['task_ids'] = task_ids
    return batch

  # Device side: pure functions.

  def get_initial_variables(self, rng: jax.Array,
                            input_shapes: Mapping[str, tuple],
                            input_types: Optional[Mapping[str, Any]] = None
                            ) -> dict:
    """{'params', 'params_axes'} for batches of the given shapes.

    Works under `jax.eval_shape` (for shapes and shardings without
    allocating) and `jax.jit`.
    """
    return initial_variables(self.module, rng, input_shapes, input_types)

  def _logits(self, params, batch: Batch, dropout_rng=None, mutable=False):
    """Teacher-forced logits [batch, target_length, vocab]."""
    rngs = None if dropout_rng is None else {'dropout': dropout_rng}
    return self.module.apply(
        {'params': params}, batch['encoder_input_tokens'],
        batch['decoder_input_tokens'], batch['decoder_target_tokens'],
        batch.get('task_ids'), enable_dropout=dropout_rng is not None,
        rngs=rngs, mutable=mutable)

  def loss_fn(self, params, batch: Batch, dropout_rng: Optional[jax.Array]):
    """Weighted cross-entropy + z-loss; dropout when `dropout_rng` is given.

    Returns (loss, metrics) with scalar metrics 'loss', 'cross_ent_loss',
    'z_loss' (normalised like the loss), 'accuracy' (weighted), 'num_tokens'
    (target tokens) and 'weight_sum'.
    """
    targets = batch['decoder_target_tokens']
    weights = batch.get('decoder_loss_weights')
    if weights is None:
      weights = targets > 0
    weights = weights.astype(jnp.float32)
    logits = self._logits(params, batch, dropout_rng)
    cross_ent, z_loss = token_losses(logits, targets, self.label_smoothing,
                                     self.z_loss)
    weight_sum = jnp.sum(weights)
    if self.loss_normalizing_factor is None:
      # An all-padding batch has loss 0, not 0/0.
      factor = jnp.where(weight_sum > 0, weight_sum, 1.0)
    else:
      factor = jnp.asarray(self.loss_normalizing_factor, jnp.float32)
    cross_ent_loss = jnp.sum(cross_ent * weights) / factor
    z_loss = jnp.sum(z_loss * weights) / factor
    loss = cross_ent_loss + z_loss
    correct = jnp.argmax(logits, axis=-1) == targets
    metrics = {
        'loss': loss,
        'cross_ent_loss': cross_ent_loss,
        'z_loss': z_loss,
        'accuracy': jnp.sum(correct * weights) / jnp.where(
            weight_sum > 0, weight_sum, 1.0),
        'num_tokens': jnp.sum(targets > 0).astype(jnp.float32),
        'weight_sum': weight_sum,
    }
    return loss, metrics

  def score_batch(self, params, batch: Batch,
                  return_intermediates: bool = False):
    """Log-likelihood of the targets, [batch]: sum over tokens of
    `weight * log p(token)`.

    With `return_intermediates`, also returns what the network sowed (e.g.
    `prefix_attention_mass` per layer, for the paper's analysis) plus
    'token_scores' [batch, length].
    """
    targets = batch['decoder_target_tokens']
    weights = batch.get('decoder_loss_weights')
    if weights is None:
      weights = targets > 0
    if return_intermediates:
      logits, variables = self._logits(params, batch,
                                       mutable=['intermediates'])
      intermediates = dict(variables.get('intermediates', {}))
    else:
      logits = self._logits(params, batch)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_scores = jnp.take_along_axis(log_probs, targets[..., None],
                                       axis=-1)[..., 0]
    token_scores = token_scores * weights.astype(jnp.float32)
    scores = jnp.sum(token_scores, axis=-1)
    if return_intermediates:
      intermediates['token_scores'] = token_scores
      return scores, intermediates
    return scores

  def predict_batch(self, params, batch: Batch,
                    rng: Optional[jax.Array] = None) -> jax.Array:
    """Best decode per example, [batch, target_length] int32."""
    return self.predict_batch_with_aux(params, batch, rng)[0]

  def predict_batch_with_aux(self, params, batch: Batch,
                             rng: Optional[jax.Array] = None,
                             decoder_params: Optional[Mapping] = None,
                             return_all_decodes: bool = False,
                             num_decodes: Optional[int] = None):
    """Decodes with `decode_fn` over the cache; one conditioner call.

    Args:
      params: model parameters.
      batch: needs encoder_input_tokens, decoder_input_tokens (its length is
        the decode length) and task_ids for a conditioned model.
      rng: for sampling decoders.
      decoder_params: extra keyword arguments of `decode_fn` (e.g.
        {'temperature': 0.7}, {'alpha': 0.8}).
      return_all_decodes: return every decode, sorted by increasing score.
      num_decodes: decodes per example (beam size); default the model's.

    Returns:
      tokens [batch, length] (or [batch, num_decodes, length]) and
      {'scores': [batch] (or [batch, num_decodes])}.
    """
    num_decodes = self.num_decodes if num_decodes is None else num_decodes
    encoder_tokens = batch['encoder_input_tokens']
    batch_size, max_decode_len = batch['decoder_input_tokens'].shape
    encoded, cache = encode_and_create_cache(
        self.module, params, encoder_tokens, batch.get('task_ids'),
        max_decode_len)

    # The decode functions expand the cache; the step call needs the encoder
    # outputs (for its shape) and tokens (for the padding mask) expanded alike.
    encoded = decoding.expand_batch(encoded, num_decodes)
    encoder_tokens = decoding.expand_batch(encoder_tokens, num_decodes)
    tokens_to_logits = lambda tokens, cache: decode_step(
        self.module, params, cache, encoded, encoder_tokens, tokens)
    tokens, scores = self.decode_fn(
        tokens_to_logits, cache, batch_size=batch_size,
        max_decode_len=max_decode_len, num_decodes=num_decodes,
        eos_id=self.output_vocabulary.eos_id, rng=rng,
        **dict(decoder_params or {}))
    if return_all_decodes:
      return tokens, {'scores': scores}
    return tokens[:, -1], {'scores': scores[:, -1]}
