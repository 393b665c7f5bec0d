"""A very small HyperPrompt-Global T5 on the synthetic suite, for the runner
tests; also a script (`python tests/runner_tiny.py '<json kwargs>'`) that
trains it with runner.train, for tests that kill or signal a run."""
import json
import logging
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import seqio

from hyperprompt import models, network, runner
from hyperprompt.conditioning.hyperprompt import HyperPromptGlobal
from hyperprompt.config import T5Config
from hyperprompt.tasks import synthetic

MIXTURE = 'hp_synthetic'
# How long a test waits for the script's first step or checkpoint: generous,
# since a loaded machine can take minutes to start JAX and compile.
STARTUP_TIMEOUT_S = 600
NUM_TASKS = len(synthetic.TASKS)
LENGTHS = dict(synthetic.TASK_FEATURE_LENGTHS)


def tiny_model(dropout_rate: float = 0.0,
               conditioner=None) -> models.EncoderDecoderModel:
  """HyperPrompt-Global unless another `conditioner` is given."""
  # Every sharded dim is even, so a 'model' axis of 2 divides it.
  config = T5Config(vocab_size=264, emb_dim=16, num_heads=2, head_dim=8,
                    num_encoder_layers=1, num_decoder_layers=1, mlp_dim=32,
                    dropout_rate=dropout_rate,
                    relative_attention_num_buckets=8,
                    relative_attention_max_distance=16)
  conditioner = conditioner or HyperPromptGlobal(
      num_tasks=NUM_TASKS, prompt_length=2, bottleneck=4, layer_task_dim=6,
      task_embed_dim=4)
  vocab = seqio.ByteVocabulary()
  return models.EncoderDecoderModel(network.Transformer(config, conditioner),
                                    vocab, vocab)


def random_batch(batch_size: int, seed: int) -> dict:
  """Model features with random digits and task ids (in-memory data)."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(3, 60, size=(batch_size, LENGTHS['inputs']))
  tgt = rng.integers(3, 60, size=(batch_size, LENGTHS['targets']))
  tgt[:, -2:] = 0  # Some padding.
  return {
      'encoder_input_tokens': enc.astype(np.int32),
      'decoder_target_tokens': tgt.astype(np.int32),
      'decoder_input_tokens': np.pad(tgt[:, :-1], [(0, 0), (1, 0)]
                                     ).astype(np.int32),
      'decoder_loss_weights': (tgt > 0).astype(np.float32),
      'task_ids': rng.integers(0, NUM_TASKS, size=batch_size
                               ).astype(np.int32),
  }


def train(**kwargs):
  defaults = dict(model=tiny_model(), mixture_or_task_name=MIXTURE,
                  task_feature_lengths=LENGTHS, batch_size=8, eval_period=0,
                  log_period=1, plot=False)
  defaults.update(kwargs)
  return runner.train(**defaults)


if __name__ == '__main__':
  logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                      format='%(message)s', force=True)
  jax.config.update('jax_default_matmul_precision', 'highest')
  train(**json.loads(sys.argv[1]))
