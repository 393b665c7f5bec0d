"""Frozen means not differentiated (hyperprompt.freezing, trainer.train_step).

- The partial step equals the reference that differentiates everything and
  zeroes the frozen updates (optax.multi_transform with set_to_zero, the
  textbook way to freeze in optax): same losses, same parameters after
  several steps; its grad_norm is the norm of the reference's trainable
  gradients.
- The optimizer state holds the trainable parameters' moments only.
- XLA's cost analysis: conditioning-only training costs fewer FLOPs than
  full training, and with prefixes in the decoder only, an encoder layer
  adds its forward FLOPs to the step and nothing for a backward pass.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import seqio

import tiny_model
from hyperprompt import freezing
from hyperprompt import models
from hyperprompt import network
from hyperprompt import partitioning
from hyperprompt import train_state
from hyperprompt import trainer
from hyperprompt.conditioning import prefix_tuning

NUM_TASKS = 3


def _model(placement='both', **config):
  conditioner = prefix_tuning.PrefixTuning(
      NUM_TASKS, prompt_length=2, prompt_dim=4, hidden_dim=6,
      placement=placement)
  vocabulary = seqio.PassThroughVocabulary(tiny_model.VOCAB_SIZE, eos_id=1)
  module = network.Transformer(tiny_model.tiny_config(**config), conditioner)
  return models.EncoderDecoderModel(module, vocabulary, vocabulary)


def _reference_step(model, optimizer, train):
  """The whole tree differentiated; frozen updates zeroed afterwards."""
  masked = optax.multi_transform(
      {'trainable': optimizer, 'frozen': optax.set_to_zero()},
      lambda p: freezing.trainable_labels(p, train))

  def step(params, opt_state, batch, rng):
    (_, metrics), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(
        params, batch, rng)
    updates, opt_state = masked.update(grads, opt_state, params)
    trainable, _ = freezing.split(grads, train)
    return (optax.apply_updates(params, updates), opt_state,
            metrics['loss'], optax.global_norm(trainable))
  return masked, jax.jit(step)


# Adafactor scales updates per parameter; AdamW clips by the global norm of
# the trained gradients, so it also checks which gradients that norm spans.
@pytest.mark.parametrize('train,make_optimizer', [
    ('conditioning', lambda: trainer.adafactor(1e-2)),
    ('backbone', lambda: trainer.adamw(1e-2, max_grad_norm=0.1))])
def test_partial_step_equals_masked_full_step(train, make_optimizer):
  model = _model()
  params = tiny_model.random_params(model)
  batch = model.validate_batch(tiny_model.random_batch(num_tasks=NUM_TASKS))
  masked, reference = _reference_step(model, make_optimizer(), train)
  optimizer = trainer.make_optimizer(params, optimizer_fn=lambda _: (
      make_optimizer()), train=train)
  assert isinstance(optimizer, freezing.Partial)
  step = jax.jit(lambda s, b, r: trainer.train_step(model, optimizer, s, b, r))

  state = trainer.init_state(params, optimizer)
  ref_params, ref_opt = params, masked.init(params)
  rng = jax.random.PRNGKey(0)
  for i in range(3):
    state, metrics = step(state, batch, rng)
    ref_params, ref_opt, ref_loss, ref_norm = reference(
        ref_params, ref_opt, batch, jax.random.fold_in(rng, i))
    np.testing.assert_allclose(metrics['loss'], ref_loss, rtol=1e-6)
    np.testing.assert_allclose(metrics['grad_norm'], ref_norm, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               state.params, ref_params)
  # The frozen part did not move, the trained part did.
  trainable0, frozen0 = freezing.split(params, train)
  trainable3, frozen3 = freezing.split(state.params, train)
  jax.tree.map(np.testing.assert_array_equal, frozen3, frozen0)
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(trainable3), jax.tree.leaves(trainable0)))


def test_optimizer_state_covers_the_trainable_part_only():
  model = _model()
  params = tiny_model.random_params(model)
  optimizer = trainer.make_optimizer(params, optimizer_fn=trainer.adamw,
                                     train='conditioning')
  state = jax.eval_shape(lambda p: trainer.init_state(p, optimizer), params)
  conditioner_sizes = sorted(
      x.size for x in jax.tree.leaves(params['conditioner']))
  # AdamW: a first and a second moment per trained parameter, nothing else
  # but scalar counts.
  moments = sorted(x.size for x in jax.tree.leaves(state.opt_state)
                   if x.shape)
  assert moments == sorted(conditioner_sizes * 2)
  for path, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    assert not keys or keys[0] == 'conditioner', path


def test_split_and_merge_are_inverse_and_check_train():
  model = _model()
  params = tiny_model.random_params(model)
  trainable, frozen = freezing.split(params, 'conditioning')
  assert set(trainable) == {'conditioner'}
  assert 'conditioner' not in frozen
  merged = freezing.merge(trainable, frozen)
  assert (jax.tree.structure(merged) == jax.tree.structure(params))
  with pytest.raises(ValueError, match='train must be one of'):
    freezing.split(params, 'prompts')


def _step_flops(model, params, batch, train):
  optimizer = trainer.make_optimizer(params, train=train)
  state = jax.eval_shape(lambda p: trainer.init_state(p, optimizer), params)
  step = jax.jit(lambda s, b, r: trainer.train_step(model, optimizer, s, b, r))
  compiled = step.lower(state, batch, jax.random.PRNGKey(0)).compile()
  return compiled.cost_analysis()['flops']


def _forward_flops(model, params, batch):
  compiled = jax.jit(lambda p, b: model.loss_fn(p, b, None)).lower(
      params, batch).compile()
  return compiled.cost_analysis()['flops']


def test_decoder_prefixes_remove_the_encoder_backward():
  # One encoder layer more adds its forward FLOPs to a conditioning-only step
  # (the encoder runs, but nothing trainable feeds it, so it has no backward)
  # and about three times that to a full step. Long inputs make the encoder
  # layer's cost stand out from the tiny model's fixed costs.
  batch = jax.tree.map(jnp.asarray, tiny_model.random_batch(
      batch_size=4, input_length=64, target_length=4, num_tasks=NUM_TASKS))
  flops = {}
  for layers in (1, 2):
    model = _model(placement='decoder', num_encoder_layers=layers,
                   num_decoder_layers=1)
    params = jax.eval_shape(lambda m=model: tiny_model.random_params(m))
    flops[layers] = {
        'forward': _forward_flops(model, params, batch),
        'all': _step_flops(model, params, batch, 'all'),
        'conditioning': _step_flops(model, params, batch, 'conditioning')}
  layer = {k: flops[2][k] - flops[1][k] for k in flops[1]}
  assert flops[2]['conditioning'] < flops[2]['all']
  assert layer['forward'] > 0
  np.testing.assert_allclose(layer['conditioning'], layer['forward'],
                             rtol=0.02)
  assert layer['all'] > 2.5 * layer['forward']


def test_state_shardings_follow_the_trainable_part():
  """train_state lays each moment of a trained parameter out like that
  parameter (matched by path, which `split` keeps from the root)."""
  model = _model()
  partitioner = partitioning.Partitioner(devices=[jax.devices()[0]])
  shapes = train_state.input_shapes(
      model, {'inputs': 7, 'targets': 6}, batch_size=2)
  params, params_axes = train_state.abstract_params(model, shapes,
                                                    partitioner)
  optimizer = trainer.make_optimizer(params, optimizer_fn=trainer.adamw,
                                     train='conditioning')
  shardings = train_state.state_shardings(partitioner, optimizer, params,
                                          params_axes)
  abstract = train_state.abstract_state(optimizer, params, shardings)
  by_path = {jax.tree_util.keystr(p): x.sharding.spec for p, x in
             jax.tree_util.tree_leaves_with_path(params)}
  matched = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract.opt_state):
    name = jax.tree_util.keystr(path)
    param = [p for p in by_path if name.endswith(p)]
    if leaf.shape:
      assert param and param[0].startswith("['conditioner']"), name
      assert leaf.sharding.spec == by_path[param[0]], name
      matched += 1
  assert matched == 2 * len(jax.tree.leaves(params['conditioner']))
  # Not vacuous: some conditioner parameters are split over 'model'.
  assert any('model' in spec for p, spec in by_path.items()
             if p.startswith("['conditioner']"))
