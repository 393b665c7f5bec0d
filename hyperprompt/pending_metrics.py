"""The training loop's one-step-late check of the loss.

Fetching a step's metrics waits for that step to finish, so the loop leaves
them on device until the next step has been dispatched (`PendingMetrics`);
a non-finite loss then stops training with where the last good checkpoint is.
"""
import math
from typing import Any, Dict, Optional

import jax

from hyperprompt import checkpoints


def _raise_if_not_finite(loss: float, step: int, model_dir: str,
                         last_saved: Optional[int]):
  if math.isfinite(loss):
    return
  where = (f'the last good checkpoint is step {last_saved} in '
           f'{checkpoints.checkpoint_dir(model_dir)}' if last_saved is not None
           else 'no checkpoint was saved yet')
  raise FloatingPointError(
      f'Training loss is {loss} at step {step}; stopping ({where}). Lower the '
      'learning rate, check the data for empty targets, or train in float32.')


class PendingMetrics:
  """The last dispatched step's metrics, left on device until checked.

  Fetching a step's metrics waits for that step to finish. The loop checks
  step N's loss only once step N+1 has been dispatched (JAX dispatch is
  asynchronous), so the host reads N+2's batch while the device computes. A
  save, an evaluation or a log line checks first: no checkpoint ever holds a
  state whose loss, or any earlier one, was not finite.
  """

  def __init__(self, model_dir: str):
    self.model_dir = model_dir
    self.step: Optional[int] = None
    self.metrics = None  # {name: scalar on device}

  def put(self, step: int, metrics):
    assert self.metrics is None, 'check the pending metrics first'
    self.step, self.metrics = step, metrics

  def check(self, last_saved: Optional[int]) -> Optional[Dict[str, Any]]:
    """Fetches the pending metrics; raises if their loss is not finite.

    Returns them on host ({name: numpy scalar}), or None if none pend.
    """
    if self.metrics is None:
      return None
    metrics, step = jax.device_get(self.metrics), self.step
    self.step, self.metrics = None, None
    _raise_if_not_finite(float(metrics['loss']), step, self.model_dir,
                         last_saved)
    return metrics
