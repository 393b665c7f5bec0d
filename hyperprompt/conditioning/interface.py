"""The one conditioning interface: `task_ids -> Conditioning`.

Every method (HyperPrompt share/sep/global, prompt tuning, prefix tuning,
adapters, HyperFormer++, precomputed prefixes, none) is a `Conditioner`: a
Flax module, created as the `conditioner` submodule of the Transformer (so its
parameters live under `params/conditioner` and freeze masks are one subtree),
that maps the batch's task ids to a `Conditioning`. The network consumes the
Conditioning and nothing else about the method.

Conditioners compute their per-task outputs for all `num_tasks` tasks once, so
their cost does not grow with the batch. Prompts are gathered by `task_ids`
in the conditioner ([batch, l, heads, head_dim] per layer is small); adapter
weights ([batch, emb, r] per layer) are not: they reach the layers per task
with the task ids, and each layer picks its examples' weights itself
(`apply_adapter`).
"""
from typing import Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp
import numpy as np

from hyperprompt.conditioning.axes import ADAPTER_EMBED
from hyperprompt.config import T5Config
from hyperprompt.layers import with_sharding_constraint

Array = jax.Array
Prefix = Tuple[Array, Array]


@flax.struct.dataclass
class LayerConditioning:
  """What one transformer layer receives for the examples of a batch.

  Attributes:
    self_prefix: (key, value), each [batch, l, heads, head_dim], prepended to
      this layer's self-attention keys and values.
    cross_prefix: the same for encoder-decoder attention (decoder layers).
    adapter: bottleneck adapter applied after the FFN (`apply_adapter`),
      its weights per task: 'down' [T, emb, r], 'down_bias' [T, r], 'up'
      [T, r, emb], 'up_bias' [T, emb]; optionally 'norm_scale', 'norm_bias'
      [T, emb], a generated layer norm (HyperFormer++). With
      `adapter_task_ids` None the same weights are per example instead,
      [batch, ...] in place of [T, ...] (the decode cache, `per_example`).
    adapter_task_ids: [batch], each example's row of the per-task adapter
      weights; None when they are per example.
  """
  self_prefix: Optional[Prefix] = None
  cross_prefix: Optional[Prefix] = None
  adapter: Optional[Dict[str, Array]] = None
  adapter_task_ids: Optional[Array] = None


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


# Checkpoint name of the adapter's hidden pre-activation [batch, length, r],
# the one value the per-task path keeps for its backward pass.
_ADAPTER_HIDDEN = 'adapter_hidden'


def _bottleneck(h: Array, adapter: Dict[str, Array]) -> Array:
  """The adapter of each example, its weights with a leading [batch] dim."""
  dtype = h.dtype
  z = jnp.einsum('bld,bdr->blr', h, adapter['down'].astype(dtype))
  z = checkpoint_name(z + adapter['down_bias'][:, None, :].astype(dtype),
                      _ADAPTER_HIDDEN)
  z = jnp.einsum('blr,brd->bld', jax.nn.gelu(z), adapter['up'].astype(dtype))
  z = z + adapter['up_bias'][:, None, :].astype(dtype)
  if 'norm_scale' in adapter:
    z32 = z.astype(jnp.float32)
    mean = jnp.mean(z32, axis=-1, keepdims=True)
    var = jnp.var(z32, axis=-1, keepdims=True)
    z32 = (z32 - mean) * jax.lax.rsqrt(var + 1e-6)
    z = (z32 * adapter['norm_scale'][:, None, :] +
         adapter['norm_bias'][:, None, :]).astype(dtype)
  return h + z


def _gather_tasks(adapter: Dict[str, Array],
                  task_ids: Array) -> Dict[str, Array]:
  """Per-task weights [T, ...] -> each example's, [batch, ...]."""
  return {name: jnp.take(w, task_ids, axis=0) for name, w in adapter.items()}


# Logical axes of one layer's per-task adapter weights, by name.
_ADAPTER_AXES = {
    'down': ('tasks', ADAPTER_EMBED, 'adapter_bottleneck'),
    'down_bias': ('tasks', 'adapter_bottleneck'),
    'up': ('tasks', 'adapter_bottleneck', ADAPTER_EMBED),
    'up_bias': ('tasks', ADAPTER_EMBED),
    'norm_scale': ('tasks', ADAPTER_EMBED),
    'norm_bias': ('tasks', ADAPTER_EMBED),
}


def _gather_layer(h: Array, adapter: Dict[str, Array],
                  task_ids: Array) -> Array:
  """One layer's adapter from per-task weights, each kept split over 'data'
  like its parameter up to here (axes.ADAPTER_EMBED), so that the
  all-gather happens in the layer."""
  adapter = {name: with_sharding_constraint(w, _ADAPTER_AXES[name])
             for name, w in adapter.items()}
  return _bottleneck(h, _gather_tasks(adapter, task_ids))


# Each example's weights ([batch, emb, r], float32) exist only inside this
# function, one layer at a time: the backward pass gathers them again from
# the per-task weights instead of keeping them, and keeps only h, the task
# ids and the [batch, length, r] hidden pre-activation. Gathered outside
# the layers (as this project did until issue 13), every layer's copies and
# their gradients were live at once: [layers, batch, emb, r] twice over a
# scanned stack, +4.93% memory over the plain model at T5.1.1-XXL on
# v5e-256. The gradient reaches the per-task weights through the gather's
# transpose (a scatter-add by task id), also one layer at a time.
_per_task_bottleneck = jax.checkpoint(
    _gather_layer,
    policy=jax.checkpoint_policies.save_only_these_names(_ADAPTER_HIDDEN))


def apply_adapter(h: Array, adapter: Optional[Dict[str, Array]],
                  task_ids: Optional[Array] = None) -> Array:
  """Bottleneck adapter with each example's task's weights, on a sublayer's
  output.

  `h + up(gelu(down(h)))` (Houlsby et al. 2019); with 'norm_scale' and
  'norm_bias', the generated layer norm of HyperFormer++ (Karimi Mahabadi et
  al. 2021) normalises the up-projection: `h + LN(up(gelu(down(h))))`.
  The caller adds the layer's residual afterwards. `adapter` holds per-task
  weights and `task_ids` [batch] picks each example's, or (`task_ids` None)
  per-example weights; see LayerConditioning.
  Shapes: h [batch, length, emb] -> [batch, length, emb].
  """
  if adapter is None:
    return h
  if task_ids is None:
    return _bottleneck(h, adapter)
  return _per_task_bottleneck(h, adapter, task_ids)


def per_example(cond: LayerConditioning) -> LayerConditioning:
  """`cond` with its adapter weights gathered for each example: what the
  decode cache stores, since decoding expands and reorders every cache leaf
  along its first dim as a batch dim (decoding.cache_map)."""
  if cond.adapter_task_ids is None:
    return cond
  return cond.replace(
      adapter=_gather_tasks(cond.adapter, cond.adapter_task_ids),
      adapter_task_ids=None)


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
