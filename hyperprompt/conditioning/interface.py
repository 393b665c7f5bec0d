"""The one conditioning interface: `task_ids -> Conditioning`.

Every method (HyperPrompt share/sep/global, prompt tuning, prefix tuning,
adapters, HyperFormer++, precomputed prefixes, none) is a `Conditioner`: a
Flax module, created as the `conditioner` submodule of the Transformer (so its
parameters live under `params/conditioner` and freeze masks are one subtree),
that maps the batch's task ids to a `Conditioning`. The network consumes the
Conditioning and nothing else about the method.

Conditioners compute their per-task outputs for all `num_tasks` tasks once and
gather them by `task_ids`, so their cost does not grow with the batch.
"""
from typing import Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hyperprompt.config import T5Config

Array = jax.Array
Prefix = Tuple[Array, Array]


@flax.struct.dataclass
class LayerConditioning:
  """What one transformer layer receives for the examples of a batch.

  Attributes:
    self_prefix: (key, value), each [batch, l, heads, head_dim], prepended to
      this layer's self-attention keys and values.
    cross_prefix: the same for encoder-decoder attention (decoder layers).
    adapter: per-example bottleneck adapter applied after the FFN:
      'down' [batch, emb, r], 'down_bias' [batch, r], 'up' [batch, r, emb],
      'up_bias' [batch, emb]; optionally 'norm_scale', 'norm_bias'
      [batch, emb], a generated layer norm (HyperFormer++).
  """
  self_prefix: Optional[Prefix] = None
  cross_prefix: Optional[Prefix] = None
  adapter: Optional[Dict[str, Array]] = None


@flax.struct.dataclass
class Conditioning:
  """Everything a conditioner gives the network for one batch.

  Attributes:
    encoder: one LayerConditioning per encoder layer.
    decoder: one LayerConditioning per decoder layer.
    input_prompts: [batch, p, emb_dim] prepended to the encoder's input
      embeddings (prompt tuning), or None.
  """
  encoder: Tuple[LayerConditioning, ...]
  decoder: Tuple[LayerConditioning, ...]
  input_prompts: Optional[Array] = None

  @classmethod
  def empty(cls, config: T5Config) -> 'Conditioning':
    """No conditioning at all: the plain multi-task T5."""
    return cls(
        encoder=tuple(LayerConditioning()
                      for _ in range(config.num_encoder_layers)),
        decoder=tuple(LayerConditioning()
                      for _ in range(config.num_decoder_layers)))


def apply_adapter(h: Array, adapter: Optional[Dict[str, Array]]) -> Array:
  """Bottleneck adapter with per-example weights, on a sublayer's output.

  `h + up(gelu(down(h)))` (Houlsby et al. 2019); with 'norm_scale' and
  'norm_bias', the generated layer norm of HyperFormer++ (Karimi Mahabadi et
  al. 2021) normalises the up-projection: `h + LN(up(gelu(down(h))))`.
  The caller adds the layer's residual afterwards.
  Shapes: h [batch, length, emb] -> [batch, length, emb].
  """
  if adapter is None:
    return h
  dtype = h.dtype
  z = jnp.einsum('bld,bdr->blr', h, adapter['down'].astype(dtype))
  z = jax.nn.gelu(z + adapter['down_bias'][:, None, :].astype(dtype))
  z = jnp.einsum('blr,brd->bld', z, adapter['up'].astype(dtype))
  z = z + adapter['up_bias'][:, None, :].astype(dtype)
  if 'norm_scale' in adapter:
    z32 = z.astype(jnp.float32)
    mean = jnp.mean(z32, axis=-1, keepdims=True)
    var = jnp.var(z32, axis=-1, keepdims=True)
    z32 = (z32 - mean) * jax.lax.rsqrt(var + 1e-6)
    z = (z32 * adapter['norm_scale'][:, None, :] +
         adapter['norm_bias'][:, None, :]).astype(dtype)
  return h + z


def stack_layers(per_layer: Tuple[LayerConditioning, ...]
                 ) -> LayerConditioning:
  """One stack's per-layer conditioning as one LayerConditioning whose arrays
  have a leading [layers] axis: what a scanned layer stack scans over.

  Every layer of a stack must receive the same kind of conditioning (all
  placements in this project condition whole stacks).
  """
  structures = {jax.tree.structure(c) for c in per_layer}
  if len(structures) > 1:
    raise ValueError(
        'With scan_layers every layer of a stack must get the same kind of '
        f'conditioning; got {len(structures)} different kinds '
        f'({sorted(map(str, structures))}). Condition whole stacks, or set '
        'T5Config.scan_layers = False.')
  return jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)


def require_task_ids(conditioner: Optional['Conditioner'],
                     task_ids: Optional[Array]) -> Optional[Array]:
  """`task_ids` for a conditioned network, None for a plain one.

  Raises when a conditioner has no task ids to condition on: the one place
  this error is raised, for host batches and traced calls alike.
  """
  if conditioner is None:
    return None
  if task_ids is None:
    raise ValueError(
        f'This model is task-conditioned ({type(conditioner).__name__} over '
        f'{conditioner.num_tasks} tasks) but got no `task_ids`. Feed data '
        'through hyperprompt.feature_converter.TaskConditionedFeatureConverter'
        ' from a hyperprompt.tasks task or mixture, which adds them.')
  return task_ids


class Conditioner(nn.Module):
  """Base of every conditioning method.

  Subclasses implement `__call__(task_ids, config, deterministic)` and return
  a `Conditioning`. `num_tasks` is the size of the mixture's task vocabulary.
  """
  num_tasks: int

  def __call__(self, task_ids: Array, config: T5Config,
               deterministic: bool = True) -> Conditioning:
    raise NotImplementedError


def check_task_ids(task_ids, num_tasks: int) -> np.ndarray:
  """Validates task ids on the host, before they reach the device.

  `jnp.take` clamps out-of-range indices silently, so a bad id would quietly
  condition the example on another task; this raises instead.
  """
  ids = np.asarray(task_ids)
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f'task_ids must be integers, got dtype {ids.dtype}.')
  bad = ids[(ids < 0) | (ids >= num_tasks)]
  if bad.size:
    raise ValueError(
        f'task_ids out of range: {sorted(set(bad.tolist()))[:10]} with '
        f'{num_tasks} tasks in the task vocabulary (valid ids are 0..'
        f'{num_tasks - 1}). Check that the data and the model use the same '
        'mixture.')
  return ids.astype(np.int32)
