"""None: multi-task T5 without task conditioning.

Every example is handled by the same network whatever its task (T5's
optional task-name text prefix is a data-side choice). With this conditioner
the Transformer is, bit for bit, the plain network `Transformer(config)`.
"""
import jax

from hyperprompt.conditioning.interface import Conditioner, Conditioning
from hyperprompt.config import T5Config


class NoConditioning(Conditioner):
  """Returns `Conditioning.empty`; has no parameters."""

  def __call__(self, task_ids: jax.Array, config: T5Config,
               deterministic: bool = True) -> Conditioning:
    del task_ids, deterministic  # The task does not change the network.
    return Conditioning.empty(config)
