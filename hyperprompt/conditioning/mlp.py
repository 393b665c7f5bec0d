"""A two-layer perceptron with biases: Dense -> activation -> Dense.

HyperPrompt-Global's `h_t`, HyperFormer++'s task projector and prefix
tuning's reparametrisation are all this small network.
"""
from typing import Callable, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from hyperprompt.layers import default_kernel_init, param_with_axes


class Mlp(nn.Module):
  """[..., in] -> [..., out_dim], with `2` kernels and `2` biases.

  Attributes:
    hidden_dim: width of the hidden layer.
    out_dim: width of the output.
    activation: between the two layers.
    axes: logical names of the (input, hidden, output) widths.
  """
  hidden_dim: int
  out_dim: int
  axes: Tuple[str, str, str]
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_axis, hidden_axis, out_axis = self.axes
    def dense(name, inputs, features, axes):
      kernel = param_with_axes(f'{name}_kernel', default_kernel_init,
                               (inputs.shape[-1], features), jnp.float32,
                               axes=axes)
      bias = param_with_axes(f'{name}_bias', nn.initializers.zeros,
                             (features,), jnp.float32, axes=axes[1:])
      return inputs @ kernel + bias
    h = self.activation(dense('hidden', x, self.hidden_dim,
                              (in_axis, hidden_axis)))
    return dense('out', h, self.out_dim, (hidden_axis, out_axis))

