"""Tiny Transformers with each conditioning method, for the conditioning
tests. heads * head_dim (3 * 8 = 24) differs from emb_dim (16) on purpose."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from hyperprompt.conditioning import adapters
from hyperprompt.conditioning import hyperformer
from hyperprompt.conditioning import hyperprompt
from hyperprompt.conditioning import prefix_tuning
from hyperprompt.conditioning import prompt_tuning
from hyperprompt.config import T5Config
from hyperprompt.network import Transformer

NUM_TASKS = 3
CONFIG = T5Config(vocab_size=50, emb_dim=16, num_heads=3, head_dim=8,
                  num_encoder_layers=2, num_decoder_layers=2, mlp_dim=24,
                  dropout_rate=0.0, relative_attention_num_buckets=8,
                  relative_attention_max_distance=16)

# Small sizes so every method is cheap; the defaults are checked elsewhere.
CONDITIONERS = {
    'share': lambda: hyperprompt.HyperPromptShare(
        NUM_TASKS, prompt_length=3, bottleneck=5),
    'sep': lambda: hyperprompt.HyperPromptSep(
        NUM_TASKS, prompt_length=3, bottleneck=5),
    'global': lambda: hyperprompt.HyperPromptGlobal(
        NUM_TASKS, prompt_length=3, bottleneck=5, task_embed_dim=6,
        layer_task_dim=7, cross_attention=True),
    'prompt_tuning': lambda: prompt_tuning.PromptTuning(
        NUM_TASKS, prompt_length=4),
    'prefix_tuning': lambda: prefix_tuning.PrefixTuning(
        NUM_TASKS, prompt_length=3, prompt_dim=6, hidden_dim=10,
        cross_attention=True),
    'adapters': lambda: adapters.Adapters(NUM_TASKS, bottleneck=4),
    'hyperformer': lambda: hyperformer.HyperFormer(
        NUM_TASKS, bottleneck=4, task_embed_dim=6, projector_hidden_dim=8,
        layer_task_dim=5),
}


def batch(batch_size=4, seed=0):
  """(inputs, decoder_inputs, targets, task_ids), with some padding."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(1, CONFIG.vocab_size, (batch_size, 7)).astype(np.int32)
  inputs[1, 5:] = 0
  targets = rng.integers(1, CONFIG.vocab_size, (batch_size, 5)).astype(
      np.int32)
  targets[2, 4:] = 0
  decoder_inputs = np.pad(targets[:, :-1], [(0, 0), (1, 0)])
  task_ids = (np.arange(batch_size) % NUM_TASKS).astype(np.int32)
  return inputs, decoder_inputs, targets, task_ids


# Eager, not jit-ed: these tiny models run each call in a fraction of a
# second once JAX has compiled their few primitive shapes, while compiling
# every model and method whole costs seconds each.
def init(model, seed=0):
  inputs, decoder_inputs, targets, task_ids = batch()
  return model.init(jax.random.PRNGKey(seed), inputs, decoder_inputs, targets,
                    task_ids, enable_dropout=False)['params']


def logits_fn(model):
  """(params, inputs, decoder_inputs, targets, task_ids) -> logits."""
  return lambda params, *args: model.apply({'params': params}, *args,
                                           enable_dropout=False)


@functools.lru_cache(maxsize=None)
def model(name):
  return Transformer(CONFIG, CONDITIONERS[name]())


@functools.lru_cache(maxsize=None)
def params(name):
  """Initial params of `model(name)`, computed once per test session."""
  return init(model(name))
