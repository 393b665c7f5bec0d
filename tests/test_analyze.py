"""The attention-mass analysis against NumPy, hand-made cases and invariants."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt import analyze
from hyperprompt import scanning
from hyperprompt.attention import MultiHeadAttention
from hyperprompt.conditioning.hyperprompt import HyperPromptShare
from hyperprompt.config import T5Config
from hyperprompt.network import Transformer

CONFIG = T5Config(vocab_size=32, emb_dim=8, num_heads=2, head_dim=3,
                  num_encoder_layers=2, num_decoder_layers=3, mlp_dim=16,
                  dropout_rate=0.0, relative_attention_num_buckets=8,
                  relative_attention_max_distance=16)


def _attention_mass(params, x, mask, prefix):
  """The sown mass of one MultiHeadAttention call, [batch, heads, q]."""
  _, state = MultiHeadAttention(CONFIG).apply(
      {'params': params}, x, x, mask, None, prefix,
      mutable=['intermediates'])
  (mass,) = state['intermediates'][analyze.MASS]
  return np.asarray(mass)


def _projection(params, name, x):
  """[batch, len, emb] -> [batch, len, heads, head_dim] with NumPy."""
  kernel = np.asarray(params[name]['kernel']).reshape(
      CONFIG.emb_dim, CONFIG.num_heads, CONFIG.head_dim)
  return np.einsum('ble,ehd->blhd', x, kernel)


def _setup(seed=0, batch=2, length=4, prompts=3):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, length, CONFIG.emb_dim)).astype(np.float32)
  prefix = tuple(rng.normal(size=(batch, prompts, CONFIG.num_heads,
                                  CONFIG.head_dim)).astype(np.float32)
                 for _ in range(2))
  params = MultiHeadAttention(CONFIG).init(
      jax.random.PRNGKey(seed), x, x, None, None, prefix)['params']
  return params, x, prefix


def test_mass_on_prompts_and_real_keys_sums_to_one():
  params, x, prefix = _setup()
  # Example 1's last key is padding.
  key_valid = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
  mask = np.broadcast_to(key_valid[:, None, None, :], (2, 1, 4, 4))
  mass = _attention_mass(params, x, mask, prefix)

  # Independent softmax over [prompts; real keys], real keys masked out.
  q = _projection(params, 'query', x)
  k = np.concatenate([prefix[0], _projection(params, 'key', x)], axis=1)
  logits = np.einsum('bqhd,bkhd->bhqk', q, k).astype(np.float64)
  visible = np.concatenate([np.ones((2, 3), bool), key_valid], axis=1)
  logits = np.where(visible[:, None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  on_prompts, on_real = weights[..., :3].sum(-1), weights[..., 3:].sum(-1)

  np.testing.assert_allclose(mass, on_prompts, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mass + on_real, 1.0, rtol=1e-6)
  assert 0.0 < mass.min() and mass.max() < 1.0


def _aligned_prefix(params, x, logit):
  """Prompt keys whose logit with every query is exactly `logit`: all
  queries are equal, and each head's prompt keys lie along its query."""
  q = _projection(params, 'query', x)[0, 0]  # [heads, head_dim]
  key = logit * q / np.sum(q * q, axis=-1, keepdims=True)
  key = np.broadcast_to(key, (x.shape[0], 2) + key.shape).astype(np.float32)
  return key, np.zeros_like(key)


@pytest.mark.parametrize('logit, expected', [(-60.0, 0.0), (60.0, 1.0)])
def test_prompt_logits_far_below_or_above_the_real_keys(logit, expected):
  params, x, _ = _setup()
  x = np.broadcast_to(x[:1, :1], x.shape).copy()  # Every query is the same.
  real_logits = np.einsum('bqhd,bkhd->bhqk', _projection(params, 'query', x),
                          _projection(params, 'key', x))
  assert np.abs(real_logits).max() < 10  # The prompts' +-60 dominate.
  mass = _attention_mass(params, x, None, _aligned_prefix(params, x, logit))
  np.testing.assert_allclose(mass, expected, atol=1e-12)


def test_prompts_stay_visible_when_every_real_key_is_masked():
  params, x, prefix = _setup()
  mask = np.zeros((2, 1, 4, 4), bool)
  mass = _attention_mass(params, x, mask, prefix)
  np.testing.assert_allclose(mass, 1.0, atol=1e-6)


def test_average_ignores_padding_queries_and_padding_examples():
  # [batch=3, heads=2, q=3]; 9.0 marks values at padding (must be ignored).
  encoder = np.array([
      [[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]],
      [[0.6, 0.8, 9.0], [0.2, 0.4, 9.0]],
      [[9.0, 9.0, 9.0], [9.0, 9.0, 9.0]],  # A batch-padding row.
  ])
  decoder = np.array([
      [[0.5, 9.0, 9.0], [0.7, 9.0, 9.0]],
      [[0.2, 0.4, 0.6], [0.0, 0.2, 0.4]],
      [[9.0, 9.0, 9.0], [9.0, 9.0, 9.0]],
  ])
  tokens = np.array([[5, 6, 7], [5, 6, 0], [0, 0, 0]])
  targets = np.array([[4, 0, 0], [4, 5, 6], [0, 0, 0]])
  means = analyze.example_means(
      {('encoder', 'self', 0): encoder, ('decoder', 'self', 1): decoder},
      tokens, targets)
  # Example 0: mean of 0.2 and 0.4; example 1: of 0.7 and 0.3.
  np.testing.assert_allclose(means[('encoder', 'self', 0)][:2], [0.3, 0.5])
  np.testing.assert_allclose(means[('decoder', 'self', 1)][:2], [0.6, 0.3])
  assert np.isnan(means[('encoder', 'self', 0)][2])  # No real query.

  average = analyze.MassAverage()
  average.add(means, num_real=3)
  average.add({site: np.array([0.1, 0.2, 0.3]) for site in means},
              num_real=1)  # Only the first row of this batch is real.
  result = average.result()
  np.testing.assert_allclose(result['encoder_self'], [(0.3 + 0.5 + 0.1) / 3])
  assert np.isnan(result['decoder_self'][0])  # Layer 0 has no prompts here.
  np.testing.assert_allclose(result['decoder_self'][1], (0.6 + 0.3 + 0.1) / 3)


def test_average_without_prompts_is_an_error():
  with pytest.raises(ValueError, match='no prompted attention'):
    analyze.MassAverage().result()


def _model_and_batch():
  model = Transformer(CONFIG, HyperPromptShare(num_tasks=3, prompt_length=2,
                                               bottleneck=4))
  tokens = np.array([[3, 4, 5, 1], [6, 7, 1, 0], [8, 1, 0, 0]], np.int32)
  targets = np.array([[9, 1, 0], [10, 11, 1], [12, 1, 0]], np.int32)
  decoder_inputs = np.pad(targets[:, :-1], [(0, 0), (1, 0)])
  task_ids = np.array([0, 2, 1], np.int32)
  init = jax.jit(lambda rng: model.init(rng, tokens, decoder_inputs, targets,
                                        task_ids, enable_dropout=False))
  params = init(jax.random.PRNGKey(1))['params']
  batch = {'encoder_input_tokens': tokens,
           'decoder_input_tokens': decoder_inputs,
           'decoder_target_tokens': targets, 'task_ids': task_ids}
  return model, params, batch


def test_transformer_masses_per_layer_and_padding_invariance():
  model, params, batch = _model_and_batch()
  result = analyze.attention_mass(model, params, [(batch, 3)])
  assert sorted(result) == ['decoder_self', 'encoder_self']
  assert len(result['encoder_self']) == CONFIG.num_encoder_layers
  assert len(result['decoder_self']) == CONFIG.num_decoder_layers
  values = np.array(result['encoder_self'] + result['decoder_self'])
  assert np.all((values > 0) & (values < 1))

  # More padding (longer rows, an extra padding example) changes nothing:
  # padding keys are masked and padding queries are not averaged.
  padded = {k: np.pad(v, [(0, 1)] + [(0, 3)] * (v.ndim - 1))
            for k, v in batch.items()}
  again = analyze.attention_mass(model, params, [(padded, 3)])
  for stack in result:
    np.testing.assert_allclose(again[stack], result[stack], rtol=1e-5)

  # The same numbers from the sown tensors directly, example by example.
  _, state = model.apply({'params': params}, batch['encoder_input_tokens'],
                         batch['decoder_input_tokens'],
                         batch['decoder_target_tokens'], batch['task_ids'],
                         enable_dropout=False, mutable=['intermediates'])
  sown = state['intermediates']['decoder']['layers_2']['self_attention'][
      analyze.MASS][0]  # [batch, heads, q]
  lengths = (batch['decoder_target_tokens'] > 0).sum(-1)
  manual = np.mean([np.asarray(sown[b, :, :n]).mean() for b, n in
                    enumerate(lengths)])
  np.testing.assert_allclose(result['decoder_self'][2], manual, rtol=1e-5)


def test_scanned_model_gives_the_unscanned_masses():
  """T5Config.scan_layers sows one stacked [layers, batch, heads, q] mass per
  stack; analyze splits it into the same per-layer sites as layers_<i>."""
  model, params, batch = _model_and_batch()
  scanned = model.clone(config=dataclasses.replace(CONFIG, scan_layers=True))
  expected = analyze.attention_mass(model, params, [(batch, 3)])
  result = analyze.attention_mass(scanned, scanning.scan_params(params),
                                  [(batch, 3)])
  assert sorted(result) == sorted(expected)
  for stack in expected:
    np.testing.assert_allclose(result[stack], expected[stack], rtol=1e-5)


def test_heat_maps_are_written(tmp_path):
  results = {'task_a': {'encoder_self': [0.2, 0.5],
                        'decoder_self': [0.1, 0.3, 0.4]},
             'task_b': {'encoder_self': [0.6, 0.5],
                        'decoder_self': [0.2, 0.3, float('nan')]}}
  analyze.plot_task(results['task_a'], 'task_a', str(tmp_path / 'a.png'))
  analyze.plot_tasks(results, str(tmp_path / 'all.png'))
  for name in ('a.png', 'all.png'):
    with open(tmp_path / name, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_command_line_on_a_saved_checkpoint(tmp_path):
  import gin  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from hyperprompt import checkpoints, gin_cli, models, tasks, trainer  # pylint: disable=g-import-not-at-top
  files = ['models/sizes/tiny.gin', 'models/conditioners/hyperprompt_share.gin',
           'runs/demo.gin']
  run = str(tmp_path / 'run')
  gin_cli.parse_gin(files, [f'MODEL_DIR = "{run}"'])
  model = gin.get_configurable(models.EncoderDecoderModel)()
  shapes = {'encoder_input_tokens': (1, 9), 'decoder_input_tokens': (1, 9)}
  params = jax.jit(lambda rng: model.get_initial_variables(rng, shapes)[
      'params'])(jax.random.PRNGKey(0))
  checkpointer = checkpoints.Checkpointer(
      run, tasks.task_vocabulary('hp_synthetic'), async_save=False)
  checkpointer.save(trainer.init_state(params, optax.sgd(0.1)), 0)
  checkpointer.close()

  output = tmp_path / 'analysis'
  results = analyze.main([
      *[f'--gin_file={f}' for f in files], f'--checkpoint={run}',
      '--task=hp_synthetic_first', '--task=hp_synthetic_copy',
      f'--output={output}', '--num_examples=6', '--batch_size=4'])
  assert list(results) == ['hp_synthetic_first', 'hp_synthetic_copy']
  for result in results.values():
    assert len(result['encoder_self']) == len(result['decoder_self']) == 2
    assert all(0 < m < 1 for m in result['encoder_self'] +
               result['decoder_self'])
  for name in ('prefix_attention_mass.json', 'hp_synthetic_first.png',
               'hp_synthetic_copy.png', 'all_tasks.png'):
    assert (output / name).exists(), name
