"""Conditioning methods through the real Transformer: METHOD.md's parameter
formulas and prompt equations, mixed-task batches, per-task adapters against
the per-example formula, gradients, freezing, the plain network with `none`,
and the T5-XXL overhead of the defaults."""
import os

import gin
import jax
from jax import ad_checkpoint
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperprompt import freezing
from hyperprompt import params as params_lib
from hyperprompt.conditioning import check_task_ids
from hyperprompt.conditioning import hyperprompt
from hyperprompt.conditioning import none
from hyperprompt.conditioning import registry
from hyperprompt.conditioning.interface import (LayerConditioning,
                                                apply_adapter, per_example)
from hyperprompt.config import T5Config
from hyperprompt.network import Transformer

import conditioning_models as cm

GIN_DIR = os.path.join(os.path.dirname(__file__), '..', 'gin', 'models')


def _config(d, h, dh, enc, dec):
  return T5Config(vocab_size=40, emb_dim=d, num_heads=h, head_dim=dh,
                  num_encoder_layers=enc, num_decoder_layers=dec, mlp_dim=8,
                  dropout_rate=0.0)


# (d, h, d_h, encoder layers, decoder layers, placement, cross_attention)
SHAPES = [
    (16, 3, 8, 2, 2, 'both', False),
    (64, 4, 24, 2, 3, 'encoder', False),
    (32, 2, 16, 1, 2, 'decoder', True),
    (20, 5, 4, 3, 1, 'both', True),
]


def _num_sites(enc, dec, placement, cross):
  return ({'both': enc + dec, 'encoder': enc, 'decoder': dec}[placement] +
          (dec if cross else 0))


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('variant', ['share', 'sep', 'global'])
def test_parameter_counts_match_method_formulas(variant, shape):
  d, h, dh, enc, dec, placement, cross = shape
  T, l, b, t, tp = 5, 3, 4, 6, 7  # pylint: disable=invalid-name
  M = _num_sites(enc, dec, placement, cross)  # pylint: disable=invalid-name
  common = dict(num_tasks=T, prompt_length=l, bottleneck=b,
                placement=placement, cross_attention=cross)
  if variant == 'share':
    conditioner = hyperprompt.HyperPromptShare(**common)
    expected = T * l * d + 2 * M * b * (d + h * dh)
  elif variant == 'sep':
    conditioner = hyperprompt.HyperPromptSep(**common)
    expected = T * l * d + 2 * T * M * b * (d + h * dh)
  else:
    conditioner = hyperprompt.HyperPromptGlobal(
        layer_task_dim=t, task_embed_dim=tp, **common)
    h_t = 2 * tp * t + t + t * t + t  # Dense(2t' -> t), ReLU, Dense(t -> t)
    expected = (T * l * d + (T + M) * tp + h_t + 2 * t * b * (d + h * dh))
  counts = params_lib.parameter_counts(_config(d, h, dh, enc, dec),
                                       conditioner)
  assert counts['conditioning'] == expected
  assert counts['total'] == counts['backbone'] + expected


def test_overhead_table_is_the_models_conditioner_subtree():
  """Each row counts the conditioner alone; the whole model's init must give
  the same subtree, and percent is conditioning / backbone."""
  configs = {'a': _config(16, 3, 8, 2, 2), 'b': _config(20, 5, 4, 3, 1)}
  rows = params_lib.overhead_table(configs, [2, 5],
                                   ['hyperprompt_global', 'adapters'])
  assert [(r['size'], r['tasks'], r['conditioner']) for r in rows] == [
      (s, t, m) for s in 'ab' for t in (2, 5)
      for m in ('hyperprompt_global', 'adapters')]
  for row in rows:
    whole = params_lib.parameter_counts(
        configs[row['size']],
        registry.conditioner(row['conditioner'], row['tasks']))
    assert {k: row[k] for k in whole} == whole
  text = params_lib.overhead_markdown(rows)
  assert text[2].startswith(f'| backbone parameters | '
                            f'{rows[0]["backbone"] / 1e6:,.1f}M |')
  assert text[3].startswith('| HyperPrompt-Global | ')


def test_global_grows_with_tasks_only_by_prompt_and_task_embedding():
  config = _config(16, 3, 8, 2, 2)
  count = lambda n: params_lib.parameter_counts(
      config, hyperprompt.HyperPromptGlobal(n, prompt_length=3, bottleneck=4,
                                            layer_task_dim=6,
                                            task_embed_dim=7))['conditioning']
  assert count(10) - count(3) == 7 * (3 * 16 + 7)


def _relu(x):
  return np.maximum(x, 0)


@pytest.mark.parametrize('variant', ['share', 'sep', 'global'])
def test_prompts_follow_method_equations(variant):
  model = cm.model(variant)
  params = cm.params(variant)
  p = jax.tree.map(np.asarray, params['conditioner'])
  task_ids = np.array([2, 0], np.int32)
  conditioning = model.apply({'params': params}, task_ids,
                             method=model.condition)
  enc, dec = cm.CONFIG.num_encoder_layers, cm.CONFIG.num_decoder_layers
  # Sites: encoder self 0..enc-1, decoder self, then decoder cross (global).
  sites = [('encoder', 'self', 1, 1), ('decoder', 'self', 0, enc)]
  if variant == 'global':
    sites.append(('decoder', 'cross', 1, enc + dec + 1))
  shape = (-1, cm.CONFIG.num_heads, cm.CONFIG.head_dim)
  for row, task in enumerate(task_ids):
    for stack, kind, layer, m in sites:
      prefix = getattr(getattr(conditioning, stack)[layer], f'{kind}_prefix')
      for part, ours in zip(('key', 'value'), prefix):
        if variant == 'share':
          down, up = p[f'{part}_down'][m], p[f'{part}_up'][m]
        elif variant == 'sep':
          down, up = p[f'{part}_down'][task, m], p[f'{part}_up'][task, m]
        else:
          mlp = p['layer_task_projector']
          x = np.concatenate([p['task_embedding'][task],
                              p['layer_embedding'][m]])
          i = _relu(x @ mlp['hidden_kernel'] + mlp['hidden_bias'])
          i = i @ mlp['out_kernel'] + mlp['out_bias']
          # METHOD.md's H_D [t, d*b] and H_U [t, b*h*d_h] are stored
          # unflattened, keys and values stacked: [2, t, d, b], [2, t, b, hd].
          kind = ('key', 'value').index(part)
          h_d, h_u = p['down_generator'][kind], p['up_generator'][kind]
          down = (i @ h_d.reshape(h_d.shape[0], -1)).reshape(h_d.shape[1:])
          up = (i @ h_u.reshape(h_u.shape[0], -1)).reshape(h_u.shape[1:])
        expected = _relu(p['task_prompts'][task] @ down) @ up
        np.testing.assert_allclose(ours[row], expected.reshape(shape),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name', sorted(cm.CONDITIONERS))
def test_mixed_batch_equals_each_task_alone_and_tasks_differ(name):
  params = cm.params(name)
  logits = cm.logits_fn(cm.model(name))
  inputs, decoder_inputs, targets, task_ids = cm.batch(batch_size=9)
  mixed = np.asarray(logits(params, inputs, decoder_inputs, targets,
                            task_ids))
  # Each task alone: its three examples, tiled to the same batch of 9.
  for task in range(cm.NUM_TASKS):
    rows = np.flatnonzero(task_ids == task)
    tiled = np.tile(rows, 3)
    alone = logits(params, inputs[tiled], decoder_inputs[tiled],
                   targets[tiled], task_ids[tiled])
    np.testing.assert_allclose(mixed[rows], np.asarray(alone)[:3], atol=1e-5,
                               rtol=1e-5)
  # One example under every task: different outputs.
  same = np.zeros(9, int)
  per_task = np.asarray(logits(params, inputs[same], decoder_inputs[same],
                               targets[same], task_ids))
  for a in range(cm.NUM_TASKS):
    for b in range(a):
      assert np.abs(per_task[a] - per_task[b]).max() > 1e-6, (a, b)


def _per_example_adapter(h, weights, task_ids):
  """apply_adapter's docstring formula, one example at a time with its task's
  weights: h + up(gelu(down(h))), with the layer norm when given."""
  gelu = lambda z: 0.5 * z * (1 + jnp.tanh(np.sqrt(2 / np.pi) *
                                           (z + 0.044715 * z**3)))
  out = []
  for x, task in zip(h, task_ids):
    w = {name: v[task] for name, v in weights.items()}
    z = gelu(x @ w['down'] + w['down_bias']) @ w['up'] + w['up_bias']
    if 'norm_scale' in w:
      z = (z - z.mean(-1, keepdims=True)) / jnp.sqrt(
          z.var(-1, keepdims=True) + 1e-6) * w['norm_scale'] + w['norm_bias']
    out.append(x + z)
  return jnp.stack(out)


@pytest.mark.parametrize('norm', [False, True],
                         ids=['adapters', 'hyperformer_norm'])
def test_per_task_adapter_is_the_per_example_formula_without_its_copies(
    norm, capsys):
  """Layers get per-task adapter weights and the batch's task ids (training),
  or per-example weights (the decode cache, `per_example`). Both give the
  per-example formula and its gradients, and the backward pass of the
  per-task form keeps no per-example weights ([batch, emb, r])."""
  batch, length, d, r, tasks = 5, 3, 6, 4, 3
  rng = np.random.default_rng(0)
  shapes = {'down': (d, r), 'down_bias': (r,), 'up': (r, d), 'up_bias': (d,)}
  if norm:
    shapes.update(norm_scale=(d,), norm_bias=(d,))
  weights = {name: rng.normal(size=(tasks,) + shape).astype(np.float32)
             for name, shape in shapes.items()}
  h = rng.normal(size=(batch, length, d)).astype(np.float32)
  task_ids = np.array([2, 0, 1, 2, 0], np.int32)
  expected = _per_example_adapter(h, weights, task_ids)
  np.testing.assert_allclose(apply_adapter(h, weights, task_ids), expected,
                             rtol=1e-5, atol=1e-5)
  cached = per_example(LayerConditioning(adapter=weights,
                                         adapter_task_ids=task_ids))
  assert cached.adapter_task_ids is None
  assert cached.adapter['down'].shape == (batch, d, r)
  np.testing.assert_allclose(apply_adapter(h, cached.adapter), expected,
                             rtol=1e-5, atol=1e-5)

  # Gradients for h and every per-task weight: the per-task path
  # (a scatter-add by task id, recomputed gathers) against autodiff of the
  # per-example formula.
  cotangent = rng.normal(size=h.shape).astype(np.float32)
  ours = lambda h, w: jnp.sum(apply_adapter(h, w, task_ids) * cotangent)
  formula = lambda h, w: jnp.sum(_per_example_adapter(h, w, task_ids) *
                                 cotangent)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
      jax.grad(ours, argnums=(0, 1))(h, weights),
      jax.grad(formula, argnums=(0, 1))(h, weights))

  def saved(f):
    capsys.readouterr()
    ad_checkpoint.print_saved_residuals(f, h, weights)
    return capsys.readouterr().out.replace(' ', '')
  copies = (f'[{batch},{d},{r}]', f'[{batch},{r},{d}]')
  gathered_first = lambda h, w: jnp.sum(apply_adapter(h, per_example(
      LayerConditioning(adapter=w, adapter_task_ids=task_ids)).adapter) *
                                        cotangent)
  # The check sees them where weights are gathered before the layer (as
  # the adapters did before issue 13).
  assert all(c in saved(gathered_first) for c in copies)
  assert not any(c in saved(ours) for c in copies), saved(ours)


def test_out_of_range_task_ids_are_rejected_on_the_host():
  assert check_task_ids(np.array([0, 2]), 3).tolist() == [0, 2]
  for bad in ([0, 3], [-1, 0]):
    with pytest.raises(ValueError, match='out of range'):
      check_task_ids(np.array(bad), 3)
  with pytest.raises(ValueError, match='integers'):
    check_task_ids(np.array([0.0, 1.0]), 3)


def _loss(model, params, weights):
  inputs, decoder_inputs, targets, task_ids = cm.batch()
  logits = model.apply({'params': params}, inputs, decoder_inputs, targets,
                       task_ids, enable_dropout=False)
  return jnp.sum(logits * weights)


@pytest.mark.parametrize('name', sorted(cm.CONDITIONERS))
def test_gradients_reach_every_conditioning_parameter(name):
  model = cm.model(name)
  params = cm.params(name)
  weights = jax.random.normal(jax.random.PRNGKey(3),
                              (4, 5, cm.CONFIG.vocab_size))
  grads = jax.grad(lambda p: _loss(model, p, weights))(params)
  flat = jax.tree_util.tree_leaves_with_path(grads['conditioner'])
  assert flat
  for path, grad in flat:
    assert np.any(np.asarray(grad) != 0), jax.tree_util.keystr(path)


@pytest.mark.parametrize('train', ['conditioning', 'backbone'])
def test_freezing_splits_off_the_trained_part(train):
  """Every conditioner leaf (and only those) trains under 'conditioning'; the
  rest under 'backbone'. test_freezing checks the step built on the split."""
  params = cm.params('global')
  trainable, frozen = freezing.split(params, train)
  paths = lambda tree: {jax.tree_util.keystr(p) for p, _ in
                        jax.tree_util.tree_leaves_with_path(tree)}
  assert paths(trainable) | paths(frozen) == paths(params)
  assert not paths(trainable) & paths(frozen)
  conditioner = {p for p in paths(params) if p.startswith("['conditioner']")}
  assert paths(trainable) == (conditioner if train == 'conditioning'
                              else paths(params) - conditioner)


def test_freezing_all_keeps_the_optimizer_and_checks_its_argument():
  params = cm.params('global')
  optimizer = optax.adam(1e-2)
  assert freezing.freeze(optimizer, params, train='all') is optimizer
  with pytest.raises(ValueError, match='train must be one of'):
    freezing.freeze(optimizer, params, train='prompts')
  plain = cm.init(Transformer(cm.CONFIG))
  with pytest.raises(ValueError, match="no 'conditioner' subtree"):
    freezing.freeze(optimizer, plain, train='conditioning')


def test_none_is_bit_for_bit_the_plain_network():
  plain, vanilla = (Transformer(cm.CONFIG),
                    Transformer(cm.CONFIG, none.NoConditioning(cm.NUM_TASKS)))
  plain_params, vanilla_params = cm.init(plain), cm.init(vanilla)
  jax.tree.map(np.testing.assert_array_equal, plain_params, vanilla_params)
  inputs, decoder_inputs, targets, task_ids = cm.batch()
  np.testing.assert_array_equal(
      cm.logits_fn(plain)(plain_params, inputs, decoder_inputs, targets),
      cm.logits_fn(vanilla)(plain_params, inputs, decoder_inputs, targets,
                            task_ids))


def test_default_global_is_near_paper_overhead_at_t5_xxl(capsys):
  params_lib.main([
      f'--gin_file={GIN_DIR}/sizes/t5_1_1_xxl.gin',
      '--gin_file=models/conditioners/hyperprompt_global.gin',
      '--gin.NUM_TASKS=8'])
  gin.clear_config()
  out = capsys.readouterr().out
  # METHOD.md's Global formula at the defaults l=16, b=32, t=28, t'=32.
  d = hd = 4096
  M, T, l, b, t, tp = 48, 8, 16, 32, 28, 32  # pylint: disable=invalid-name
  expected = (T * l * d + (T + M) * tp + (2 * tp * t + t + t * t + t) +
              2 * t * b * (d + hd))
  assert f'conditioning: {expected:>16,d}' in out
  percent = float(out.split('overhead:')[1].split('%')[0])
  assert 0.13 <= percent <= 0.15, out
