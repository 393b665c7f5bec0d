"""The T5 backbone against Hugging Face transformers, published sizes and its
own cached decoder."""
import functools
import os
import re

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt import layers
from hyperprompt import pretrained
from hyperprompt.config import T5Config
from hyperprompt.layers import DenseGeneral
from hyperprompt.network import Transformer

import hf_reference

GIN_SIZES = os.path.join(os.path.dirname(__file__), '..', 'gin', 'models',
                         'sizes')


def _init(model, inputs, decoder_inputs, targets):
  init = functools.partial(model.init, enable_dropout=False)
  return jax.jit(init)(jax.random.PRNGKey(0), inputs, decoder_inputs, targets)


@pytest.mark.parametrize('variant', ['v1_1', 'v1_0'])
def test_matches_transformers_on_padded_batch(tmp_path, variant):
  hf_model = hf_reference.save_random_hf_t5(tmp_path, variant)
  config = pretrained.hf_config(str(tmp_path), dropout_rate=0.0)
  assert config.num_heads * config.head_dim != config.emb_dim
  model = Transformer(config)
  inputs, decoder_inputs, targets = hf_reference.padded_batch(
      config.vocab_size)
  assert max(inputs.shape[1], targets.shape[1]) > (
      config.relative_attention_max_distance)
  params = pretrained.load_hf(
      str(tmp_path), _init(model, inputs, decoder_inputs, targets)['params'])
  if variant == 'v1_1':
    # The output layer is lm_head's own weight, not the embedding's.
    assert not config.logits_via_embedding
    np.testing.assert_array_equal(params['decoder']['logits_dense']['kernel'],
                                  hf_model.lm_head.weight.detach().numpy().T)
  ours = model.apply({'params': params}, inputs, decoder_inputs, targets,
                     enable_dropout=False)
  reference = hf_reference.hf_logits(hf_model, inputs, decoder_inputs,
                                     targets)
  valid = targets > 0
  np.testing.assert_allclose(np.asarray(ours)[valid], reference[valid],
                             atol=1e-4, rtol=1e-4)


def test_hf_import_names_a_mismatched_parameter(tmp_path):
  hf_reference.save_random_hf_t5(tmp_path, 'v1_1')
  config = pretrained.hf_config(str(tmp_path), mlp_dim=44)
  model = Transformer(config)
  inputs, decoder_inputs, targets = hf_reference.padded_batch(
      config.vocab_size)
  template = _init(model, inputs, decoder_inputs, targets)['params']
  with pytest.raises(ValueError, match=r'encoder/layers_0/mlp/wi_0/kernel'):
    pretrained.load_hf(str(tmp_path), template)


def test_hf_import_refuses_an_untied_checkpoint_without_lm_head(tmp_path):
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  hf_reference.save_random_hf_t5(tmp_path, 'v1_1')
  weights = tmp_path / 'model.safetensors'
  state = load_file(str(weights))
  del state['lm_head.weight']
  save_file(state, str(weights))
  config = pretrained.hf_config(str(tmp_path))
  model = Transformer(config)
  template = _init(model, *hf_reference.padded_batch(config.vocab_size))
  # Filling the output layer from `shared` would load a wrong model quietly.
  with pytest.raises(ValueError, match='no lm_head.weight.*tie_word_embeddings'):
    pretrained.load_hf(str(tmp_path), template['params'])


def _tiny_config(**overrides):
  kwargs = dict(vocab_size=50, emb_dim=16, num_heads=3, head_dim=8,
                num_encoder_layers=2, num_decoder_layers=2, mlp_dim=24,
                dropout_rate=0.0, relative_attention_num_buckets=8,
                relative_attention_max_distance=16)
  kwargs.update(overrides)
  return T5Config(**kwargs)


@pytest.mark.parametrize('logits_via_embedding', [False, True])
def test_cached_decoding_equals_teacher_forcing(logits_via_embedding):
  config = _tiny_config(logits_via_embedding=logits_via_embedding)
  model = Transformer(config)
  rng = np.random.default_rng(1)
  inputs = rng.integers(1, 50, (2, 9)).astype(np.int32)
  inputs[1, 5:] = 0
  targets = rng.integers(1, 50, (2, 6)).astype(np.int32)
  decoder_inputs = np.pad(targets[:, :-1], [(0, 0), (1, 0)])
  params = _init(model, inputs, decoder_inputs, targets)['params']
  full = model.apply({'params': params}, inputs, decoder_inputs, targets,
                     enable_dropout=False)

  encoded = model.apply({'params': params}, inputs, enable_dropout=False,
                        method=model.encode)
  _, state = model.apply({'params': params}, encoded, inputs,
                         jnp.zeros_like(decoder_inputs), None,
                         enable_dropout=False, decode=True, mutable=['cache'],
                         method=model.decode)
  cache = state['cache']
  for t in range(targets.shape[1]):
    step_logits, state = model.apply(
        {'params': params, 'cache': cache}, encoded, inputs,
        decoder_inputs[:, t:t + 1], None, enable_dropout=False, decode=True,
        mutable=['cache'], method=model.decode)
    cache = state['cache']
    np.testing.assert_allclose(step_logits[:, 0], full[:, t], atol=1e-5,
                               rtol=1e-5)


# Published sizes: T5.1.1 from the t5x/T5 release notes; T5 v1.0 from Raffel
# et al. (2020), Table 14 caption ("60 million", "220 million").
PUBLISHED = {
    't5_1_1_small': 77e6, 't5_1_1_base': 248e6, 't5_1_1_large': 783e6,
    't5_1_1_xl': 2.85e9, 't5_1_1_xxl': 11.1e9, 't5_small': 60e6,
    't5_base': 220e6,
}


@pytest.mark.parametrize('size', sorted(PUBLISHED))
def test_gin_sizes_match_published_parameter_counts(size):
  gin.clear_config()
  gin.parse_config_file(os.path.join(GIN_SIZES, f'{size}.gin'))
  config = gin.get_configurable(T5Config)()
  gin.clear_config()
  model = Transformer(config)
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  shapes = jax.eval_shape(
      functools.partial(model.init, enable_dropout=False),
      jax.random.PRNGKey(0), tokens, tokens, tokens)['params']
  count = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert count == pytest.approx(PUBLISHED[size], rel=0.02)


def test_hf_import_refuses_separate_input_embeddings():
  state = {'shared.weight': np.zeros((5, 3), np.float32),
           'encoder.embed_tokens.weight': np.zeros((5, 3), np.float32),
           'decoder.embed_tokens.weight': np.ones((5, 3), np.float32)}
  with pytest.raises(ValueError, match='decoder.embed_tokens.weight differs'):
    pretrained.hf_to_flat(state)


def test_dense_general_contracts_trailing_axes_only():
  dense = DenseGeneral(3, kernel_axes=('embed', 'mlp'), axis=0)
  with pytest.raises(ValueError, match='contracts trailing axes; got axis 0'):
    dense.init(jax.random.PRNGKey(0), jnp.ones((2, 4)))


def _bfloat16_operands(x, kernel, d_out):
  """The bfloat16 matmul's value and VJP, and the same formula in float32
  on the same (bfloat16-rounded) operands, differentiated by jax.vjp."""
  got, vjp = jax.vjp(layers.matmul, x, kernel)
  # The kernel rounded to bfloat16 as the matmul uses it; its gradient is
  # the float32 one of what it multiplies (rounding passes it through).
  rounded = lambda k32: k32 + jax.lax.stop_gradient(
      k32.astype(jnp.bfloat16).astype(jnp.float32) - k32)
  reference = lambda x32, k32: x32 @ rounded(k32)
  want, ref_vjp = jax.vjp(reference, x.astype(jnp.float32), kernel)
  return (got, vjp(d_out)), (want, ref_vjp(d_out.astype(jnp.float32)))


def test_cpu_bfloat16_matmul_is_the_formula_with_a_float32_kernel_gradient():
  """On CPU a bfloat16 matmul (DenseGeneral's) multiplies bfloat16 operands
  into float32 sums, forward and backward: its value and the input's
  gradient are the float32 formula's rounded to bfloat16, and the kernel's
  gradient keeps float32."""
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (64, 48)).astype(jnp.bfloat16)
  kernel = jax.random.normal(keys[1], (48, 32))
  d_out = jax.random.normal(keys[2], (64, 32)).astype(jnp.bfloat16)
  (got, (d_x, d_kernel)), (want, (ref_d_x, ref_d_kernel)) = (
      _bfloat16_operands(x, kernel, d_out))
  assert got.dtype == d_x.dtype == jnp.bfloat16
  assert d_kernel.dtype == jnp.float32
  # float32 sums of the same products, in another order: equal once
  # rounded to bfloat16 but for the last bit.
  bf16_ulp = 2.0**-7
  np.testing.assert_allclose(np.asarray(got, np.float32), want,
                             rtol=bf16_ulp, atol=1e-6)
  np.testing.assert_allclose(np.asarray(d_x, np.float32), ref_d_x,
                             rtol=bf16_ulp, atol=1e-6)
  np.testing.assert_allclose(d_kernel, ref_d_kernel, rtol=1e-5, atol=1e-5)


def test_cpu_bfloat16_matmul_compiles_to_bfloat16_dots():
  """Why it exists: XLA:CPU multiplies a bfloat16 dot with a bfloat16
  result in float32 (after converting both operands), and does so for the
  plain matmul's forward and both backward dots; this one's forward dot and
  input-gradient dot take bfloat16 operands."""
  x = jnp.ones((64, 48), jnp.bfloat16)
  kernel = jnp.ones((48, 32), jnp.float32)
  d_out = jnp.ones((64, 32), jnp.bfloat16)
  plain = lambda x, k: jnp.dot(x, k.astype(jnp.bfloat16))

  def dot_operand_types(f):
    def value_and_vjp(x, k, d_out):
      out, vjp = jax.vjp(f, x, k)
      return out, vjp(d_out)
    text = jax.jit(value_and_vjp).lower(x, kernel,
                                        d_out).compile().as_text()
    types = dict(re.findall(r'%([\w.\-]+) = (\w+)\[', text))
    return sorted(types[a] for a, _ in re.findall(
        r' dot\(%([\w.\-]+), %([\w.\-]+)\)', text))

  assert dot_operand_types(plain) == ['f32', 'f32', 'f32']
  assert dot_operand_types(layers.matmul) == ['bf16', 'bf16', 'f32']


def test_matmul_takes_the_plain_dot_when_lowered_for_tpu():
  """Traced for a TPU mesh (as `hyperprompt compile` traces on a CPU host),
  the matmul is the plain dot: TPU programs do not change."""
  from hyperprompt import compile as compile_lib  # pylint: disable=g-import-not-at-top
  devices = compile_lib.topology_devices('v5e:2x2')
  mesh = jax.sharding.Mesh(np.array(devices).reshape(4), ('data',))
  seen = []

  def platform(x):
    seen.append(layers._lowering_platform())  # pylint: disable=protected-access
    return x

  x = jax.ShapeDtypeStruct((4,), jnp.float32)
  with jax.set_mesh(mesh):
    jax.jit(platform).trace(x)
  jax.jit(platform).trace(x)
  assert seen == ['tpu', 'cpu']
