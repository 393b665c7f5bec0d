"""EncoderDecoderModel: loss and scores against NumPy, host-side batch checks,
initial variables, gin."""
import gin
import jax
import numpy as np
import pytest

from hyperprompt import models

import tiny_model as tm


def _numpy_loss(logits, targets, weights, label_smoothing, z_loss, factor):
  """Softmax cross-entropy against smoothed one-hot targets, minus the
  smoothed distribution's entropy, plus z_loss * log(Z)^2; weighted, summed
  and divided by `factor` (None: the sum of weights)."""
  logits = np.asarray(logits, np.float64)
  vocab = logits.shape[-1]
  log_z = np.log(np.sum(np.exp(logits), axis=-1))
  log_probs = logits - log_z[..., None]
  on, off = 1.0 - label_smoothing, label_smoothing / (vocab - 1)
  soft = np.full(logits.shape, off)
  np.put_along_axis(soft, targets[..., None], on, axis=-1)
  entropy = -np.sum(np.where(soft > 0, soft * np.log(np.maximum(soft, 1e-30)),
                             0.0), axis=-1)
  cross_ent = -np.sum(soft * log_probs, axis=-1) - entropy
  z = z_loss * log_z ** 2
  factor = np.sum(weights) if factor is None else factor
  return (np.sum(cross_ent * weights) / factor, np.sum(z * weights) / factor)


@pytest.fixture(scope='module')
def conditioned():
  model = tm.make_model(num_tasks=3)
  params = tm.random_params(model)
  batch = tm.random_batch(num_tasks=3, seed=1)
  logits = jax.jit(lambda p, b: model.module.apply(
      {'params': p}, b['encoder_input_tokens'], b['decoder_input_tokens'],
      b['decoder_target_tokens'], b['task_ids'], enable_dropout=False))(
          params, batch)
  return model, params, batch, np.asarray(logits)


@pytest.mark.parametrize('label_smoothing,z_loss,factor', [
    (0.0, 1e-4, None), (0.1, 1e-2, None), (0.2, 0.0, 7.0)])
def test_loss_matches_numpy(conditioned, label_smoothing, z_loss, factor):
  model, params, batch, logits = conditioned
  model = tm.make_model(num_tasks=3, z_loss=z_loss,
                        label_smoothing=label_smoothing,
                        loss_normalizing_factor=factor)
  batch = dict(batch)
  # Non-binary weights, so weighting and normalising are both exercised.
  batch['decoder_loss_weights'] = batch['decoder_loss_weights'] * np.linspace(
      0.5, 1.5, batch['decoder_loss_weights'].size).reshape(
          batch['decoder_loss_weights'].shape).astype(np.float32)
  loss, metrics = jax.jit(model.loss_fn)(params, batch, None)
  cross_ent, z = _numpy_loss(logits, batch['decoder_target_tokens'],
                             batch['decoder_loss_weights'], label_smoothing,
                             z_loss, factor)
  np.testing.assert_allclose(loss, cross_ent + z, rtol=1e-5)
  np.testing.assert_allclose(metrics['cross_ent_loss'], cross_ent, rtol=1e-5)
  np.testing.assert_allclose(metrics['z_loss'], z, rtol=1e-5, atol=1e-9)
  targets = batch['decoder_target_tokens']
  assert metrics['num_tokens'] == np.sum(targets > 0)
  weights = batch['decoder_loss_weights']
  accuracy = np.sum((logits.argmax(-1) == targets) * weights) / weights.sum()
  np.testing.assert_allclose(metrics['accuracy'], accuracy, rtol=1e-6)


def test_loss_gradient_and_dropout_path(conditioned):
  model, params, batch, _ = conditioned
  grads = jax.jit(jax.grad(lambda p: model.loss_fn(
      p, batch, jax.random.PRNGKey(0))[0]))(params)
  # The conditioner is trained through the loss, and nothing is NaN.
  assert np.all(np.isfinite(np.concatenate(
      [np.ravel(g) for g in jax.tree.leaves(grads)])))
  assert np.abs(grads['conditioner']['decoder_0']).sum() > 0


def test_score_batch_is_sum_of_token_log_probs(conditioned):
  model, params, batch, logits = conditioned
  scores, intermediates = jax.jit(
      lambda p, b: model.score_batch(p, b, return_intermediates=True))(
          params, batch)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  token = np.take_along_axis(
      log_probs, batch['decoder_target_tokens'][..., None], -1)[..., 0]
  expected = np.sum(token * (batch['decoder_target_tokens'] > 0), axis=-1)
  np.testing.assert_allclose(scores, expected, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(model.score_batch)(params, batch),
                             expected, rtol=1e-5)
  # The attention mass on the prompts, for the paper's analysis.
  mass = intermediates['decoder']['layers_0']['self_attention'][
      'prefix_attention_mass'][0]
  assert mass.shape == (3, tm.tiny_config().num_heads, 6)
  assert np.all((mass > 0) & (mass <= 1)) and np.min(mass) < 0.99


def test_validate_batch_errors(conditioned):
  model, _, batch, _ = conditioned
  ok = model.validate_batch(batch)
  assert ok['task_ids'].dtype == np.int32
  bad = dict(batch, task_ids=np.array([0, 3, 1]))
  with pytest.raises(ValueError, match=r'out of range: \[3\] with 3 tasks'):
    model.validate_batch(bad)
  negative = dict(batch, task_ids=np.array([0, -1, 1]))
  with pytest.raises(ValueError, match='out of range'):
    model.validate_batch(negative)
  missing = {k: v for k, v in batch.items() if k != 'task_ids'}
  with pytest.raises(ValueError, match='conditioned.*no `task_ids`'):
    model.validate_batch(missing)
  no_inputs = {k: v for k, v in batch.items() if k != 'encoder_input_tokens'}
  with pytest.raises(ValueError, match='lacks .*encoder_input_tokens'):
    model.validate_batch(no_inputs)
  with pytest.raises(ValueError, match=r'task_ids must be \[batch\]'):
    model.validate_batch(dict(batch, task_ids=np.array([0, 1])))
  no_targets = {k: v for k, v in batch.items()
                if k not in ('decoder_target_tokens', 'decoder_loss_weights')}
  with pytest.raises(ValueError, match='lacks .*decoder_target_tokens'):
    model.validate_batch(no_targets)
  # Prediction reads no targets.
  assert 'decoder_target_tokens' not in model.validate_batch(
      no_targets, needs_targets=False)
  # A plain T5 needs no task ids.
  plain = tm.make_model()
  assert plain.num_tasks is None
  assert 'task_ids' not in plain.validate_batch(missing)


def test_get_initial_variables_under_eval_shape():
  # eval_shape is how a runner gets shapes and shardings without allocating.
  # (Compiling the init program itself takes seconds, so it is left to the
  # runner's tests.)
  model = tm.make_model(num_tasks=3)
  shapes = {'encoder_input_tokens': (2, 5), 'decoder_input_tokens': (2, 4)}
  variables = jax.eval_shape(
      lambda rng: model.get_initial_variables(rng, shapes),
      jax.random.PRNGKey(0))
  assert set(variables) == {'params', 'params_axes'}
  assert variables['params']['decoder']['logits_dense']['kernel'].shape == (
      16, tm.VOCAB_SIZE)
  # Logical axes for every backbone kernel, as t5x's partitioner reads them.
  axes = variables['params_axes']['decoder']['logits_dense']['kernel_axes']
  assert tuple(axes.names) == ('embed', 'vocab')
  assert variables['params']['conditioner']['encoder_0'].shape[0] == 3


def test_model_from_gin_with_dynamic_registration():
  gin.clear_config()
  gin.parse_config("""
      from __gin__ import dynamic_registration
      import seqio
      from hyperprompt import config
      from hyperprompt import decoding
      from hyperprompt import models
      from hyperprompt import network

      VOCAB = @seqio.PassThroughVocabulary()
      seqio.PassThroughVocabulary.size = 40
      seqio.PassThroughVocabulary.eos_id = 1
      config.T5Config.vocab_size = 40
      network.Transformer.config = @config.T5Config()
      models.EncoderDecoderModel.module = @network.Transformer()
      models.EncoderDecoderModel.input_vocabulary = %VOCAB
      models.EncoderDecoderModel.output_vocabulary = %VOCAB
      models.EncoderDecoderModel.decode_fn = @decoding.beam_search
      models.EncoderDecoderModel.num_decodes = 3
      models.EncoderDecoderModel.label_smoothing = 0.1
      decoding.beam_search.alpha = 0.0
  """)
  try:
    model = gin.get_configurable(models.EncoderDecoderModel)()
  finally:
    gin.clear_config()
  assert model.num_tasks is None and model.num_decodes == 3
  assert model.label_smoothing == 0.1
  assert model.module.config.vocab_size == 40
  assert model.output_vocabulary.eos_id == 1


def test_constructor_rejects_bad_settings():
  with pytest.raises(ValueError, match='label_smoothing'):
    tm.make_model(label_smoothing=1.0)
  with pytest.raises(ValueError, match='loss_normalizing_factor'):
    tm.make_model(loss_normalizing_factor=0.0)
