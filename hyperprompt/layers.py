"""T5 building blocks: dense, RMS layer norm, gated MLP, embeddings, relative
position bias.

Every parameter is created with `param_with_axes`, so it carries logical axis
names (in the `params_axes` collection, exactly as t5x expects) and sharding is
a table of rules in `partitioning.py`, never code. Parameters are float32;
activations are cast to `config.activation_dtype`.
"""
import functools
from typing import Callable, Sequence, Tuple

import flax.linen as nn
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np

from hyperprompt.config import T5Config

param_with_axes = nn_partitioning.param_with_axes
with_sharding_constraint = nn_partitioning.with_sharding_constraint

Initializer = Callable[..., jax.Array]
default_kernel_init = nn.initializers.variance_scaling(1.0, 'fan_in',
                                                       'truncated_normal')


def _as_tuple(x) -> Tuple[int, ...]:
  return tuple(x) if isinstance(x, Sequence) else (x,)


def _lowering_platform() -> str:
  """The platform the enclosing trace is lowered for: the mesh's (a TPU
  topology's when `hyperprompt compile` compiles for TPU on a CPU host),
  else the default backend's."""
  device = jax.sharding.get_abstract_mesh().abstract_device
  return device.platform if device is not None else jax.default_backend()


@jax.custom_vjp
def _cpu_bfloat16_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [m, k] (bfloat16) @ kernel [k, n] (float32, used in bfloat16) ->
  [m, n] bfloat16, every dot of the forward and backward pass with bfloat16
  operands and a float32 result.

  XLA:CPU has no matmul kernel with a bfloat16 result: it converts both
  operands to float32 and multiplies in float32, so the bfloat16 step was
  no faster than the float32 one (1.01x its time on AMD EPYC, where a
  bfloat16-operand dot with a float32 result runs at 1.6x the float32 rate).
  Autodiff of the same dot would give the backward dots bfloat16 results
  again, hence the custom VJP; the kernel's gradient comes out in float32.
  """
  return _cpu_bfloat16_matmul_fwd(x, kernel)[0]


def _cpu_bfloat16_matmul_fwd(x, kernel):
  out = jnp.dot(x, kernel.astype(x.dtype), preferred_element_type=jnp.float32)
  # The float32 kernel is a parameter, live anyway; cast again when needed.
  return out.astype(x.dtype), (x, kernel)


def _cpu_bfloat16_matmul_bwd(residuals, d_out):
  x, kernel = residuals
  # d_x = d_out @ kernel^T, contracting the kernel in place.
  d_x = jax.lax.dot_general(d_out, kernel.astype(x.dtype), (((1,), (1,)),
                                                            ((), ())),
                            preferred_element_type=jnp.float32)
  # d_kernel = x^T @ d_out. XLA:CPU's bfloat16 dots do not contract a
  # left operand's leading axis (it would multiply in float32 again, after
  # converting both operands), so x is transposed into a bfloat16 copy; the
  # barrier keeps XLA from folding the transpose back into the dot.
  x_t = jax.lax.optimization_barrier(x.T)
  d_kernel = jnp.dot(x_t, d_out, preferred_element_type=jnp.float32)
  return d_x.astype(x.dtype), d_kernel.astype(kernel.dtype)


_cpu_bfloat16_matmul.defvjp(_cpu_bfloat16_matmul_fwd,
                            _cpu_bfloat16_matmul_bwd)


def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [m, k] @ kernel [k, n] in x's dtype (the kernel is cast to it).

  On CPU a bfloat16 `x` takes `_cpu_bfloat16_matmul`; elsewhere (TPU, GPU:
  a bfloat16 dot accumulates in float32 there anyway) the plain dot, so the
  TPU program is the same with or without this function.
  """
  if x.dtype == jnp.bfloat16 and _lowering_platform() == 'cpu':
    return _cpu_bfloat16_matmul(x, kernel)
  return jnp.dot(x, kernel.astype(x.dtype))


class DenseGeneral(nn.Module):
  """A bias-free linear map over one or more trailing axes.

  The kernel is stored flat, `[prod(in_dims), prod(features)]`, as in t5x
  checkpoints. The contraction is one 2-D `matmul`, `[prod(batch dims),
  prod(in_dims)] x kernel`: with the batch dims merged, the kernel's gradient
  is a single-contraction dot of two row-major operands, which XLA:CPU runs in
  place; over `[batch, length]` it first copied a transposed operand (1 to 4
  MB per weight per step at T5.1.1-small).

  Attributes:
    features: output dims, e.g. `(heads, head_dim)`.
    axis: input axes contracted, the trailing ones, e.g. `-1` or `(-2, -1)`.
    kernel_axes: logical names of the two flat kernel axes.
  """
  features: int | Sequence[int]
  kernel_axes: Tuple[str, str]
  axis: int | Sequence[int] = -1
  dtype: jnp.dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    features = _as_tuple(self.features)
    axis = tuple(a % inputs.ndim for a in _as_tuple(self.axis))
    if axis != tuple(range(inputs.ndim - len(axis), inputs.ndim)):
      raise ValueError(f'DenseGeneral contracts trailing axes; got axis '
                       f'{self.axis} of an input of rank {inputs.ndim}.')
    batch_dims = inputs.shape[:inputs.ndim - len(axis)]
    in_dims = tuple(inputs.shape[a] for a in axis)
    kernel = param_with_axes(
        'kernel',
        lambda key, shape, dtype: self.kernel_init(
            key, in_dims + features, dtype).reshape(shape),
        (int(np.prod(in_dims)), int(np.prod(features))),
        jnp.float32,
        axes=self.kernel_axes)
    # [prod(batch_dims), prod(in_dims)] x [prod(in_dims), prod(features)]
    flat = jnp.asarray(inputs, self.dtype).reshape(
        int(np.prod(batch_dims)), kernel.shape[0])
    out = matmul(flat, kernel)
    return out.reshape(batch_dims + features)


class RMSNorm(nn.Module):
  """T5 layer norm: scale only, no mean subtraction, statistics in float32."""
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # [batch, length, emb_dim] -> [batch, length, emb_dim]
    x = jnp.asarray(x, jnp.float32)
    mean2 = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    y = jnp.asarray(x * jax.lax.rsqrt(mean2 + self.epsilon), self.dtype)
    scale = param_with_axes('scale', nn.initializers.ones, (x.shape[-1],),
                            jnp.float32, axes=('embed',))
    return y * jnp.asarray(scale, self.dtype)


_ACTIVATIONS = {
    'relu': jax.nn.relu,
    # tanh approximation, as T5.1.1 ("gelu_new" in transformers).
    'gelu': functools.partial(jax.nn.gelu, approximate=True),
    'linear': lambda x: x,
}


class MlpBlock(nn.Module):
  """T5 feed-forward block.

  One activation gives T5 v1.0's `wo(relu(wi x))`; several give T5.1.1's gated
  form `wo(gelu(wi_0 x) * wi_1 x)`.
  """
  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    unknown = set(cfg.mlp_activations) - set(_ACTIVATIONS)
    if unknown:
      raise ValueError(f'Unknown mlp_activations {sorted(unknown)}; choose '
                       f'from {sorted(_ACTIVATIONS)}.')
    dense = functools.partial(DenseGeneral, cfg.mlp_dim,
                              kernel_axes=('embed', 'mlp'),
                              dtype=cfg.activation_dtype)
    if len(cfg.mlp_activations) == 1:
      # [batch, length, emb_dim] -> [batch, length, mlp_dim]
      h = _ACTIVATIONS[cfg.mlp_activations[0]](dense(name='wi')(x))
    else:
      h = 1.0
      for i, act in enumerate(cfg.mlp_activations):
        h = h * _ACTIVATIONS[act](dense(name=f'wi_{i}')(x))
    h = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(
        h, deterministic=deterministic)
    h = with_sharding_constraint(h, ('batch', 'length', 'mlp'))
    # [batch, length, mlp_dim] -> [batch, length, emb_dim]
    return DenseGeneral(x.shape[-1], kernel_axes=('mlp', 'embed'),
                        dtype=cfg.activation_dtype, name='wo')(h)


class Embed(nn.Module):
  """Token embedding; `attend` gives logits against the same table."""
  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.float32
  embedding_init: Initializer = nn.initializers.normal(stddev=1.0)

  def setup(self):
    self.embedding = param_with_axes(
        'embedding', self.embedding_init,
        (self.num_embeddings, self.features), jnp.float32,
        axes=('vocab', 'embed'))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    # [batch, length] -> [batch, length, emb_dim]
    table = jnp.asarray(self.embedding, self.dtype)
    return with_sharding_constraint(jnp.take(table, tokens, axis=0),
                                    ('batch', 'length', 'embed'))

  def attend(self, query: jax.Array) -> jax.Array:
    # [batch, length, emb_dim] -> [batch, length, vocab]
    table = jnp.asarray(self.embedding, self.dtype)
    return jnp.einsum('bld,vd->blv', jnp.asarray(query, self.dtype), table)


def relative_position_bucket(relative_position: jax.Array,
                             bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
  """T5's bucketing of `key_pos - query_pos`.

  Half the buckets (per direction, if bidirectional) are exact small offsets;
  the rest grow logarithmically up to `max_distance`, beyond which all offsets
  share the last bucket.
  """
  n = -relative_position
  bucket = 0
  if bidirectional:
    num_buckets //= 2
    bucket = (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  n_float = jnp.maximum(n, 1).astype(jnp.float32)
  log_bucket = max_exact + (
      jnp.log(n_float / max_exact) / np.log(max_distance / max_exact) *
      (num_buckets - max_exact)).astype(jnp.int32)
  log_bucket = jnp.minimum(log_bucket, num_buckets - 1)
  return bucket + jnp.where(is_small, n, log_bucket)


class RelativePositionBiases(nn.Module):
  """Per-head scalar bias from bucketed relative positions, shared per stack."""
  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: jax.Array,
               key_positions: jax.Array) -> jax.Array:
    """[q_length], [k_length] -> bias [1, heads, q_length, k_length]."""
    cfg = self.config
    buckets = relative_position_bucket(
        key_positions[None, :] - query_positions[:, None],
        bidirectional=self.bidirectional,
        num_buckets=cfg.relative_attention_num_buckets,
        max_distance=cfg.relative_attention_max_distance)
    table = param_with_axes(
        'rel_embedding', nn.initializers.normal(stddev=1.0),
        (cfg.num_heads, cfg.relative_attention_num_buckets), jnp.float32,
        axes=('heads', 'relpos_buckets'))
    # [heads, buckets] gathered -> [heads, q_length, k_length]
    bias = jnp.take(jnp.asarray(table, cfg.activation_dtype), buckets, axis=1)
    return bias[None]
