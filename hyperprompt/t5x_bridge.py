"""Running our task-conditioned Transformer with t5x's train/eval/infer.

Import this module only where t5x is installed (it is not on PyPI; see the
README): importing `hyperprompt` itself never imports t5x.

- `EncoderDecoderModel`: t5x's EncoderDecoderModel for `network.Transformer`,
  usable as `MODEL` in t5x gin. It feeds the batch's `task_ids` to the
  network in training, evaluation, scoring and decoding. It overrides only
  what differs from t5x's model and reuses hyperprompt.models' pure helpers:
  initialisation on dummy inputs, the decode set-up (condition once, encode,
  create the cache from the real encoder output; t5x's own set-up uses dummy
  inputs) and the one-step decode, stepped by t5x's decode function (beam
  search or sampling, whose beam expansion leaves `cache_index`/`cached_bias`
  alone).
- The feature converter is hyperprompt.feature_converter's
  `TaskConditionedFeatureConverter` (task_id -> task_ids; packing is refused).
- `logical_factor_rules` / `conditioner_axis_rules`: the conditioners'
  logical axis names for t5x's Adafactor and partitioner.
Gin files: gin/t5x/.
"""
from typing import Any, Mapping, MutableMapping, Optional, Tuple

from flax import core as flax_core
import jax
import jax.numpy as jnp

try:
  from t5x import adafactor
  from t5x import decoding
  from t5x import models
except ImportError as e:
  raise ImportError(
      'hyperprompt.t5x_bridge needs t5x, which is not on PyPI. Install it '
      'from its source repository (git clone https://github.com/google-'
      'research/t5x && pip install -e ./t5x), or use hyperprompt\'s own '
      'runner (python -m hyperprompt.main).') from e

from hyperprompt import models as hp_models
from hyperprompt.conditioning import axes as conditioner_axes
from hyperprompt import tasks  # Registers the mixtures t5x's gin names.
from hyperprompt.feature_converter import TaskConditionedFeatureConverter

PyTree = Any


def logical_factor_rules():
  """t5x's standard Adafactor factor rules plus the conditioners'."""
  extra = {name: adafactor.factor_name_to_factordim(rule)
           for name, rule in conditioner_axes.FACTOR_RULES.items()}
  return flax_core.freeze(
      {**flax_core.unfreeze(adafactor.standard_logical_factor_rules()),
       **extra})


def conditioner_axis_rules() -> Tuple[Tuple[str, Optional[str]], ...]:
  """Partitioner rules for the conditioners' axis names: replicated but
  for the adapters' width, over 'data' (conditioning/axes.py).

  Conditioner parameters are small next to the backbone; their 'embed' and
  'joined_kv' dimensions follow t5x's standard rules. For
  `partitioning.standard_logical_axis_rules.additional_rules`.
  """
  return conditioner_axes.mesh_rules('data')


def _reject_packing(features: Mapping[str, Any]) -> None:
  packed = sorted(k for k in features
                  if k.endswith('_segment_ids') or k.endswith('_positions'))
  if packed:
    raise ValueError(
        f'Packed batches (features {packed}) cannot be task-conditioned: a '
        'row must hold one example of one task. Set pack = False on every '
        'utils.DatasetConfig (gin/t5x/finetune.gin does so for training).')


class EncoderDecoderModel(models.EncoderDecoderModel):
  """t5x's encoder-decoder model for hyperprompt's `network.Transformer`."""

  FEATURE_CONVERTER_CLS = TaskConditionedFeatureConverter

  def get_initial_variables(
      self, rng: jax.Array, input_shapes: Mapping[str, Any],
      input_types: Optional[Mapping[str, jnp.dtype]] = None
  ) -> flax_core.scope.FrozenVariableDict:
    """{'params', 'params_axes'} of the network, from the batch shapes."""
    _reject_packing(input_shapes)
    return flax_core.freeze(hp_models.initial_variables(
        self.module, rng, input_shapes, input_types))

  def _compute_logits(
      self, params: PyTree, batch: Mapping[str, jnp.ndarray],
      dropout_rng: Optional[jax.Array] = None,
      mutable: flax_core.scope.CollectionFilter = False,
      other_variables: Optional[PyTree] = None):
    """Teacher-forced logits [batch, target_length, vocab]."""
    _reject_packing(batch)
    rngs = {'dropout': dropout_rng} if dropout_rng is not None else None
    return self.module.apply(
        {'params': params, **(other_variables or {})},
        batch['encoder_input_tokens'], batch['decoder_input_tokens'],
        batch['decoder_target_tokens'], batch.get('task_ids'),
        decode=False, enable_dropout=rngs is not None, rngs=rngs,
        mutable=mutable)

  def _compute_logits_from_slice(
      self, decoding_state: decoding.DecodingState, params: PyTree,
      encoded_inputs: jnp.ndarray, raw_inputs: jnp.ndarray,
      max_decode_length: int) -> Tuple[jnp.ndarray, PyTree]:
    """One decode step: tokens [batch * beams, 1] -> (logits [batch * beams,
    vocab], new cache). The cache's length fixes the decode length."""
    del max_decode_length
    return hp_models.decode_step(self.module, params, decoding_state.cache,
                                 encoded_inputs, raw_inputs,
                                 decoding_state.cur_token)

  def predict_batch_with_aux(
      self, params: PyTree, batch: Mapping[str, jnp.ndarray],
      rng: Optional[jax.Array] = None,
      decoder_params: Optional[MutableMapping[str, Any]] = None,
      return_all_decodes: Optional[bool] = None,
      num_decodes: Optional[int] = None,
      prompt_with_targets: bool = False,
  ) -> Tuple[jnp.ndarray, Mapping[str, jnp.ndarray]]:
    """Decodes with `decode_fn`; see t5x's EncoderDecoderModel.

    Returns:
      tokens [batch, length] (or [batch, num_decodes, length] with
      `return_all_decodes`) and {'scores': [batch] (or [batch, num_decodes])}.
    """
    if prompt_with_targets:
      raise NotImplementedError(
          'prompt_with_targets needs a prefilled decode cache, which '
          'hyperprompt.network does not implement; decode from scratch.')
    if return_all_decodes is None:
      return_all_decodes = self._default_decoder_params.return_all_decodes
    if num_decodes is None:
      num_decodes = self._default_decoder_params.num_decodes
    encoder_input_tokens = batch['encoder_input_tokens']
    decoder_input_tokens = batch['decoder_input_tokens']
    # encoded [batch, encoded_len, emb_dim]
    encoded, cache = hp_models.encode_and_create_cache(
        self.module, params, encoder_input_tokens, batch.get('task_ids'),
        decoder_input_tokens.shape[1])
    tokens_to_logits = lambda state: self._compute_logits_from_slice(
        state, params=params,
        # [batch * num_decodes, ...]: each example repeated in place.
        encoded_inputs=decoding.flat_batch_beam_expand(encoded, num_decodes),
        raw_inputs=decoding.flat_batch_beam_expand(encoder_input_tokens,
                                                   num_decodes),
        max_decode_length=decoder_input_tokens.shape[1])
    decoder_params = dict(decoder_params or {})
    if rng is not None:
      if decoder_params.get('decode_rng') is not None:
        raise ValueError('Got an RNG both as `rng` and as '
                         "decoder_params['decode_rng']; pass one.")
      decoder_params['decode_rng'] = rng
    decoder_params.setdefault('eos_id', self.output_vocabulary.eos_id or 1)
    # decodes [batch, num_decodes, length], scores [batch, num_decodes],
    # sorted by increasing log-probability.
    decodes, scores = self._decode_fn(
        inputs=jnp.zeros_like(decoder_input_tokens), cache=cache,
        tokens_to_logits=tokens_to_logits, num_decodes=num_decodes,
        cache_offset=0, **decoder_params)
    if return_all_decodes:
      return decodes, {'scores': scores}
    return decodes[:, -1, :], {'scores': scores[:, -1]}
