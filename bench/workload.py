"""The measured workloads: model shapes, batch shapes and the batch itself.

Shapes come from the project's gin size files, so the benchmark measures the
configurations a user runs. Batches are full length (no padding) with random
tokens and task ids, identical for every system measured.
"""
import os
from typing import Dict, NamedTuple

import gin
import numpy as np

from hyperprompt import config as config_lib

SIZES_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'gin', 'models', 'sizes')

# Name -> gin size file. T5.1.1-small is the headline shape.
MODEL_SHAPES = {
    'tiny': 'tiny.gin',
    'small': 't5_1_1_small.gin',
    'base': 't5_1_1_base.gin',
    'large': 't5_1_1_large.gin',
    'xl': 't5_1_1_xl.gin',
    'xxl': 't5_1_1_xxl.gin',
}


# XLA:CPU options tried besides the defaults (bench.run runs each in its own
# process, as XLA reads XLA_FLAGS once). YNNPACK is the matmul library
# XLA:CPU uses by default; off, dots go to Eigen.
YNN_OFF = '--xla_cpu_experimental_ynn_fusion_type='
XLA_OPTIONS = {
    'YNNPACK off (Eigen dots)': YNN_OFF,
    'oneDNN on': '--xla_cpu_use_onednn=true',
}


class BatchShape(NamedTuple):
  batch: int = 8
  inputs: int = 128
  targets: int = 32

  @property
  def tokens(self) -> int:
    """Tokens processed per training step (inputs and targets)."""
    return self.batch * (self.inputs + self.targets)


def t5_config(shape: str, dtype: str = 'float32',
              dropout_rate: float = 0.1) -> config_lib.T5Config:
  """The T5Config of gin/models/sizes/<shape>, with this dtype and dropout."""
  if shape not in MODEL_SHAPES:
    raise ValueError(f'Unknown model shape {shape!r}; choose from '
                     f'{sorted(MODEL_SHAPES)}.')
  with gin.unlock_config():
    gin.clear_config()
    gin.parse_config_files_and_bindings(
        [os.path.join(SIZES_DIR, MODEL_SHAPES[shape])],
        [f"ACTIVATION_DTYPE = '{dtype}'", f'DROPOUT_RATE = {dropout_rate}'])
    cfg = gin.get_configurable(config_lib.T5Config)()
  gin.clear_config()
  return cfg


def make_batch(cfg: config_lib.T5Config, shape: BatchShape, num_tasks: int,
               seed: int = 0) -> Dict[str, np.ndarray]:
  """Random full-length batch in the feature converter's format."""
  rng = np.random.default_rng(seed)
  tokens = lambda n: rng.integers(2, cfg.vocab_size, (shape.batch, n),
                                  dtype=np.int32)
  targets = tokens(shape.targets)
  return {
      'encoder_input_tokens': tokens(shape.inputs),
      'decoder_input_tokens': np.pad(targets[:, :-1], [(0, 0), (1, 0)]),
      'decoder_target_tokens': targets,
      'decoder_loss_weights': np.ones(targets.shape, np.float32),
      'task_ids': rng.integers(0, num_tasks, shape.batch, dtype=np.int32),
  }
