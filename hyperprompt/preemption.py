"""Stopping a training run cleanly on SIGTERM (TPU maintenance, preemption)
and Ctrl-C: the loop saves at the end of the current step, then exits."""
import logging
import signal
from typing import Optional

import jax
from jax.experimental import multihost_utils
import numpy as np


class Preemption:
  """Turns SIGTERM (TPU maintenance, preemption) and Ctrl-C into a
  save-and-exit at the end of the current step; a second Ctrl-C aborts at
  once (KeyboardInterrupt, no save)."""

  def __init__(self):
    self.requested = False
    self.signal_name: Optional[str] = None
    self._previous = {sig: signal.signal(sig, self._handle)
                      for sig in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.signal_name == 'Ctrl-C':
      raise KeyboardInterrupt('Second Ctrl-C: aborted without saving.')
    self.signal_name = 'Ctrl-C' if signum == signal.SIGINT else 'SIGTERM'
    logging.warning('%s received: saving a checkpoint at the end of this '
                    'step, then exiting%s.', self.signal_name,
                    ' (Ctrl-C again aborts at once)'
                    if signum == signal.SIGINT else '')
    self.requested = True

  def stop_requested(self) -> bool:
    """Whether a stop was asked for (on any host)."""
    if jax.process_count() > 1:
      # All hosts must agree on the step at which they save.
      return bool(multihost_utils.process_allgather(
          np.array(self.requested)).any())
    return self.requested

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
