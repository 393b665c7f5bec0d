"""HyperFormer++ (Karimi Mahabadi et al. 2021): adapters from one hypernetwork.

For every task `tau` and conditioned layer `i` (one adapter per layer, after
the FFN, so a single adapter position `j`), the task projector turns
`[z_tau; e_i; e_j]` (task, layer and position embeddings, each [t']) into
`I` [t] (Dense, ReLU, Dense). One hypernetwork shared by all tasks and layers,
bias-free linear maps from `I`, emits the adapter's down/up weights and
biases and its layer norm's scale and bias (applied by `apply_adapter`:
`h + LN(up(gelu(down(h))))`). Encoder and decoder layers have distinct layer
embeddings.

Initialisation: the generated down/up kernels start fan-in scaled; the
generated layer-norm scale starts near 0 (1e-2) and its bias at 0, so each
adapter starts close to the identity like Houlsby's (a unit scale would add
a unit-variance term to every layer's output at initialisation).

Defaults: t' = 64, projector hidden 128, t = 64 (the paper's task projector
sizes as far as we know them; this project's own otherwise) and bottleneck
64 (as `Adapters`, for a like-for-like baseline).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hyperprompt.conditioning import placement as placement_lib
from hyperprompt.conditioning.interface import Conditioner, Conditioning
from hyperprompt.conditioning.mlp import Mlp
from hyperprompt.config import T5Config
from hyperprompt.layers import param_with_axes


class HyperFormer(Conditioner):
  """HyperFormer++: a shared hypernetwork generating per-task adapters.

  Attributes:
    bottleneck: r, the generated adapters' inner width.
    task_embed_dim: t', width of the task, layer and position embeddings.
    projector_hidden_dim: hidden width of the task projector.
    layer_task_dim: t, width of the projected embedding I.
    placement: 'encoder', 'decoder' or 'both'.
  """
  bottleneck: int = 64
  task_embed_dim: int = 64
  projector_hidden_dim: int = 128
  layer_task_dim: int = 64
  placement: str = 'both'

  @nn.compact
  def __call__(self, task_ids: jax.Array, config: T5Config,
               deterministic: bool = True) -> Conditioning:
    del deterministic
    layers = placement_lib.conditioned_layers(config, self.placement)
    num_tasks, num_layers, t_prime = (self.num_tasks, len(layers),
                                      self.task_embed_dim)
    embed = lambda name, n, axis: param_with_axes(
        name, nn.initializers.normal(1.0), (n, t_prime), jnp.float32,
        axes=(axis, 'task_embed'))
    task = embed('task_embedding', num_tasks, 'tasks')
    layer = embed('layer_embedding', num_layers, 'adapted_layers')
    # One row: the network has one adapter per layer.
    position = embed('position_embedding', 1, 'adapter_positions')
    # [T, L, 3t'] -> [T, L, t]
    inputs = jnp.concatenate([
        jnp.broadcast_to(task[:, None], (num_tasks, num_layers, t_prime)),
        jnp.broadcast_to(layer[None], (num_tasks, num_layers, t_prime)),
        jnp.broadcast_to(position[None], (num_tasks, num_layers, t_prime)),
    ], axis=-1)
    projected = Mlp(self.projector_hidden_dim, self.layer_task_dim,
                    axes=('task_embed', 'mlp', 'layer_task_embed'),
                    name='task_projector')(inputs)

    t, d, r = self.layer_task_dim, config.emb_dim, self.bottleneck
    normal = lambda scale: nn.initializers.normal(scale * t**-0.5)
    outputs = {
        'down': ((d, r), normal(d**-0.5)),
        'down_bias': ((r,), nn.initializers.zeros),
        'up': ((r, d), normal(r**-0.5)),
        'up_bias': ((d,), nn.initializers.zeros),
        'norm_scale': ((d,), normal(1e-2)),
        'norm_bias': ((d,), nn.initializers.zeros),
    }
    adapters = {}
    for name, (shape, init) in outputs.items():
      generator = param_with_axes(
          f'{name}_generator', init, (t, math.prod(shape)), jnp.float32,
          axes=('layer_task_embed', 'hyper_generated'))
      # [T, L, t] @ [t, size] -> [T, L, *shape], applied per task by the
      # layers.
      adapters[name] = (projected @ generator).reshape(
          (num_tasks, num_layers) + shape)
    return placement_lib.adapter_conditioning(config, layers, adapters,
                                              task_ids)
