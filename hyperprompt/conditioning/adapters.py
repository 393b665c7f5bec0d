"""Adapters (Houlsby et al. 2019), one per task and per layer.

A bottleneck `h + up(gelu(down(h)))` on each conditioned layer's FFN output
(the network applies `LayerConditioning.adapter`; see interface.py). Weights
are per task and layer; each layer applies its examples' tasks' weights
(`interface.apply_adapter`, which gathers them one layer at a time). The
network has one adapter per layer, after the FFN; Houlsby et al. also put one
after attention.

The weights' width d is split over the mesh's 'data' axis, like FSDP, also
with 1-D parameter partitioning (axes.ADAPTER_EMBED): replicated, they and
their gradients and Adafactor moments took 19% over the plain model at
T5.1.1-large (issue 13).

Initialisation is Houlsby's near-identity: small weights (stddev 1e-2), zero
biases. Default bottleneck 64, inside Houlsby's range (8 to 256).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from hyperprompt.conditioning import placement as placement_lib
from hyperprompt.conditioning.axes import ADAPTER_EMBED
from hyperprompt.conditioning.interface import Conditioner, Conditioning
from hyperprompt.config import T5Config
from hyperprompt.layers import param_with_axes


class Adapters(Conditioner):
  """Per-task, per-layer bottleneck adapters.

  Attributes:
    bottleneck: r, the adapter's inner width.
    placement: 'encoder', 'decoder' or 'both'.
  """
  bottleneck: int = 64
  placement: str = 'both'

  @nn.compact
  def __call__(self, task_ids: jax.Array, config: T5Config,
               deterministic: bool = True) -> Conditioning:
    del deterministic
    layers = placement_lib.conditioned_layers(config, self.placement)
    lead = (self.num_tasks, len(layers))
    lead_axes = ('tasks', 'adapted_layers')
    d, r = config.emb_dim, self.bottleneck
    small = nn.initializers.normal(1e-2)
    zeros = nn.initializers.zeros
    shapes = {
        'down': ((d, r), (ADAPTER_EMBED, 'adapter_bottleneck'), small),
        'down_bias': ((r,), ('adapter_bottleneck',), zeros),
        'up': ((r, d), ('adapter_bottleneck', ADAPTER_EMBED), small),
        'up_bias': ((d,), (ADAPTER_EMBED,), zeros),
    }
    # [T, L, ...], applied per task by the layers.
    adapters = {name: param_with_axes(name, init, lead + shape, jnp.float32,
                                      axes=lead_axes + axes)
                for name, (shape, axes, init) in shapes.items()}
    return placement_lib.adapter_conditioning(config, layers, adapters,
                                              task_ids)
