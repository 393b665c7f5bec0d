"""A tiny T5 and a test-only conditioner for the model and decoding tests.

`FixedPrefixes` gives every task its own random key/value prefixes in every
self-attention layer: the simplest conditioner that makes decoding depend on
the task, independent of the project's real conditioners.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import seqio

from hyperprompt.conditioning.interface import (Conditioner, Conditioning,
                                                LayerConditioning)
from hyperprompt.config import T5Config
from hyperprompt.models import EncoderDecoderModel
from hyperprompt.network import Transformer

VOCAB_SIZE = 40
EOS_ID = 1
# Large enough that tasks decode differently.
PREFIX_SCALE = 1.0


def tiny_config(**overrides) -> T5Config:
  kwargs = dict(vocab_size=VOCAB_SIZE, emb_dim=16, num_heads=2, head_dim=6,
                num_encoder_layers=2, num_decoder_layers=2, mlp_dim=24,
                dropout_rate=0.0, relative_attention_num_buckets=8,
                relative_attention_max_distance=16)
  kwargs.update(overrides)
  return T5Config(**kwargs)


class FixedPrefixes(Conditioner):
  """Per task and layer, a learned (key, value) prefix of `length` positions."""
  length: int = 2

  @nn.compact
  def __call__(self, task_ids, config: T5Config, deterministic: bool = True):
    def layer(name):
      # [tasks, 2, length, heads, head_dim], gathered to [batch, ...].
      table = self.param(
          name, nn.initializers.normal(PREFIX_SCALE),
          (self.num_tasks, 2, self.length, config.num_heads, config.head_dim))
      prefix = jnp.take(table, task_ids, axis=0)
      return LayerConditioning(self_prefix=(prefix[:, 0], prefix[:, 1]))
    return Conditioning(
        encoder=tuple(layer(f'encoder_{i}')
                      for i in range(config.num_encoder_layers)),
        decoder=tuple(layer(f'decoder_{i}')
                      for i in range(config.num_decoder_layers)))


def make_model(num_tasks=None, conditioner=None,
               **model_kwargs) -> EncoderDecoderModel:
  """A tiny model: FixedPrefixes over `num_tasks`, `conditioner`, or plain."""
  if conditioner is None and num_tasks is not None:
    conditioner = FixedPrefixes(num_tasks)
  vocabulary = seqio.PassThroughVocabulary(VOCAB_SIZE, eos_id=EOS_ID)
  return EncoderDecoderModel(Transformer(tiny_config(), conditioner),
                             vocabulary, vocabulary, **model_kwargs)


def random_params(model, batch_size=3, input_length=7, target_length=6,
                  seed=0):
  """Random parameters in the tree `get_initial_variables` describes.

  Filled with NumPy (kernels ~ N(0, 1/fan_in), norm scales ~ 1) rather than
  by running the initialisers: compiling the init program costs seconds.
  """
  shapes = {'encoder_input_tokens': (batch_size, input_length),
            'decoder_input_tokens': (batch_size, target_length)}
  tree = jax.eval_shape(lambda rng: model.get_initial_variables(rng, shapes),
                        jax.random.PRNGKey(0))['params']
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    x = rng.standard_normal(leaf.shape)
    if 'scale' in name:
      x = 1.0 + 0.1 * x
    elif 'conditioner' in name:
      x = PREFIX_SCALE * x
    elif 'kernel' in name:
      x = x / np.sqrt(leaf.shape[0])
    return jnp.asarray(x, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, tree)


def random_batch(batch_size=3, input_length=7, target_length=6, seed=0,
                 num_tasks=None):
  """Padded numpy batch as the feature converter makes it (EOS-ended)."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(2, VOCAB_SIZE, (batch_size, input_length))
  targets = rng.integers(2, VOCAB_SIZE, (batch_size, target_length))
  for row in range(batch_size):
    n_in = rng.integers(2, input_length + 1)
    inputs[row, n_in - 1] = EOS_ID
    inputs[row, n_in:] = 0
    n_out = rng.integers(1, target_length + 1)
    targets[row, n_out - 1] = EOS_ID
    targets[row, n_out:] = 0
  batch = {
      'encoder_input_tokens': inputs.astype(np.int32),
      'decoder_target_tokens': targets.astype(np.int32),
      'decoder_input_tokens': np.pad(targets[:, :-1],
                                     [(0, 0), (1, 0)]).astype(np.int32),
      'decoder_loss_weights': (targets > 0).astype(np.float32),
  }
  if num_tasks is not None:
    batch['task_ids'] = rng.integers(0, num_tasks, batch_size).astype(np.int32)
  return batch
