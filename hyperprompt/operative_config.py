"""gin's operative config of a training run, saved beside its checkpoints as
t5x saves it."""
import logging
import os
from typing import Optional

import gin
import jax
import tensorflow as tf

from hyperprompt import atomic_files

CONFIG_FILE = 'config.gin'


def write(model_dir: str) -> Optional[str]:
  """Writes gin's operative config to MODEL_DIR/config.gin and logs it.

  As t5x: the configuration the run actually uses, every parameter of every
  configurable called so far (the model, optimizer and partitioner are
  built by now), to reproduce or compare the run. A resumed run whose
  config differs keeps the original and writes config_<N>.gin beside it, N
  the number of configs already there. Returns the path written, or None
  without gin configuration (a Python caller).
  """
  config = gin.operative_config_str()
  if not config.strip() or jax.process_index() > 0:
    return None
  path = os.path.join(model_dir, CONFIG_FILE)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      if f.read() == config:
        return path
    path = os.path.join(model_dir, f'config_'
                        f'{len(tf.io.gfile.glob(os.path.join(model_dir, "config*.gin")))}'
                        '.gin')
    logging.warning('The gin configuration differs from the one this run '
                    'started with (%s); writing %s.',
                    os.path.join(model_dir, CONFIG_FILE), path)
  atomic_files.write_text(path, config)
  logging.info('Operative gin configuration (%s):\n%s', path, config)
  return path
