"""A training run's logged metrics: MODEL_DIR/history.jsonl (and TensorBoard
events), read back and plotted to MODEL_DIR/curves.png."""
import json
import os
from typing import Mapping, Optional

import jax
import tensorflow as tf

from hyperprompt import atomic_files

HISTORY_FILE = 'history.jsonl'
CURVES_FILE = 'curves.png'


class History:
  """Logged metrics, appended to MODEL_DIR/history.jsonl and TensorBoard."""

  def __init__(self, model_dir: str):
    self.path = os.path.join(model_dir, HISTORY_FILE)
    try:
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
    except ModuleNotFoundError as e:
      raise ModuleNotFoundError(
          f'TensorBoard logging needs {e.name!r}: pip install tensorboard '
          '(clu.metric_writers imports it).') from e
    self.writer = metric_writers.create_default_writer(
        model_dir, just_logging=jax.process_index() > 0, asynchronous=False)

  def write(self, step: int, scalars: Mapping[str, float]):
    scalars = {k: float(v) for k, v in scalars.items()}
    self.writer.write_scalars(step, scalars)
    if jax.process_index() == 0:
      atomic_files.append_line(self.path, json.dumps({'step': step,
                                                      **scalars}))

  def close(self):
    self.writer.flush()
    self.writer.close()


def read_history(model_dir: str) -> list:
  path = os.path.join(model_dir, HISTORY_FILE)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_curves(model_dir: str) -> Optional[str]:
  """MODEL_DIR/curves.png: training loss and each eval metric by step."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = read_history(model_dir)
  if not rows:
    return None
  by_step = {}
  for row in rows:  # A resumed run may repeat steps; the last write wins.
    by_step.setdefault(row['step'], {}).update(row)
  steps = sorted(by_step)
  eval_keys = sorted({k for r in rows for k in r if k.startswith('eval/')})
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  xs = [s for s in steps if 'train/loss' in by_step[s]]
  axes[0].plot(xs, [by_step[s]['train/loss'] for s in xs])
  axes[0].set(xlabel='step', ylabel='loss', title='training loss')
  for key in eval_keys:
    xs = [s for s in steps if key in by_step[s]]
    axes[1].plot(xs, [by_step[s][key] for s in xs], marker='o',
                 label=key.removeprefix('eval/'))
  axes[1].set(xlabel='step', ylabel='metric', title='evaluation')
  if eval_keys:
    axes[1].legend(fontsize=6)
  fig.tight_layout()
  path = os.path.join(model_dir, CURVES_FILE)
  with atomic_files.open_for_write(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=100)
  plt.close(fig)
  return path
