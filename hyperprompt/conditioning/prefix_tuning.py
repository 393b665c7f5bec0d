"""Prefix tuning (Li and Liang 2021), per task and per prompted attention.

Each task has key and value prefixes `[l, h, d_h]` at every prompted
attention (same placement options and prefix-attention path as HyperPrompt).
For stable training they are reparametrised, as Li and Liang do, by a small
per-task matrix `P'` [T, l, k] and a feed-forward network (Dense, tanh,
Dense) that maps each row to all sites' keys and values at once:

    [P_k; P_v] for every site = MLP(P'[tau, i])      [2 * M * h * d_h]

The MLP is shared by the tasks (the prefixes stay per task through `P'`), so
its size does not grow with T. After training only P is kept: `collapse`
evaluates the MLP once and returns the params of the `Precomputed`
conditioner, which has no MLP.

Defaults: l = 16 (HyperPrompt's, for the same attention cost), k = 512 and a
hidden width of 512 (Li and Liang's reparametrisation width).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from hyperprompt.conditioning import placement as placement_lib
from hyperprompt.conditioning import precomputed
from hyperprompt.conditioning.interface import Conditioner, Conditioning
from hyperprompt.conditioning.mlp import Mlp
from hyperprompt.config import T5Config
from hyperprompt.layers import param_with_axes


class PrefixTuning(Conditioner):
  """Per-task prefixes `MLP(P')`.

  Attributes:
    prompt_length: l, prefix vectors per prompted attention.
    prompt_dim: k, width of the small per-task matrix P'.
    hidden_dim: hidden width of the reparametrisation MLP.
    placement: 'encoder', 'decoder' or 'both'.
    cross_attention: also prefix every decoder cross-attention.
  """
  prompt_length: int = 16
  prompt_dim: int = 512
  hidden_dim: int = 512
  placement: str = 'both'
  cross_attention: bool = False

  @nn.compact
  def __call__(self, task_ids: jax.Array, config: T5Config,
               deterministic: bool = True) -> Conditioning:
    del deterministic
    sites = placement_lib.prompt_sites(config, self.placement,
                                       self.cross_attention)
    num_sites = len(sites)
    small = param_with_axes(
        'prefix_embedding', nn.initializers.normal(1.0),
        (self.num_tasks, self.prompt_length, self.prompt_dim), jnp.float32,
        axes=('tasks', 'prompt_length', 'prefix_embed'))
    mlp = Mlp(self.hidden_dim, 2 * num_sites * config.joined_kv,
              axes=('prefix_embed', 'mlp', 'joined_kv'),
              activation=jnp.tanh, name='reparametrization')
    # [T, l, k] -> [T, l, 2 * M * h * d_h] -> [2, T, M, l, h, d_h]
    full = mlp(small).reshape(self.num_tasks, self.prompt_length, 2,
                              num_sites, config.num_heads, config.head_dim)
    full = full.transpose(2, 0, 3, 1, 4, 5)
    # Gather the batch's tasks: [T, M, ...] -> [batch, M, l, h, d_h]
    keys, values = (
        jnp.take(p, task_ids, axis=0).astype(config.activation_dtype)
        for p in full)
    return placement_lib.prefix_conditioning(config, sites, keys, values)


def collapse(model, params):
  """Evaluates the reparametrisation once: prefix tuning -> Precomputed.

  Args:
    model: a `Transformer` whose conditioner is a PrefixTuning.
    params: its params.

  Returns:
    params for `Transformer(model.config, Precomputed(num_tasks=T))`: the same
    backbone, and as conditioner the prefixes [T, L, l, h, d_h] themselves.
  """
  if not isinstance(model.conditioner, PrefixTuning):
    raise TypeError('collapse() takes a Transformer conditioned by '
                    f'PrefixTuning, not {type(model.conditioner).__name__}.')
  all_tasks = jnp.arange(model.conditioner.num_tasks)
  conditioning = model.apply({'params': params}, all_tasks,
                             method=model.condition)
  prefixes = precomputed.stack_prefixes(conditioning)
  conditioner = {name: jnp.asarray(p) for name, p in prefixes.items()}
  return dict(params, conditioner=conditioner)
