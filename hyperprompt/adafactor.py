"""Adafactor as T5.1.1 trains with it, fused per parameter.

The numbers and the state are those of `optax.adafactor` with t5x's T5.1.1
settings (factored second moments, decay rate 0.8, no momentum, update
clipping at 1.0, updates scaled by the parameter's RMS). The state is the
moments part of optax's (its `FactoredState`), so the partitioning rules for
Adafactor's factored moments apply unchanged.

Why not `optax.adafactor` itself: it is a chain of five transformations,
each a separate pass over every parameter-sized array. Here each parameter's
update is one expression (XLA fuses the passes), the parameter-scale fallback
needs no parameter-sized select, and the factored means are contractions
with ones, which XLA:CPU runs in its matmul library rather than as slow
reductions over the leading axis of a row-major matrix. It equals optax to
float rounding (tests/test_adafactor.py); BENCHMARKS.md has the step times.

Scanned layer stacks (`T5Config.scan_layers`, parameters under
`encoder/layers` and `decoder/layers` with a leading layer axis) are updated
layer by layer, as t5x treats its 'layers' axis as a batch axis: factoring,
update clipping and the parameter scale use each layer's slice, so a scanned
model trains exactly like the unrolled one.
"""
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperprompt import scanning

# Parameters whose two largest dims are both at least this big get factored
# second moments (row and column), others a full one (t5x: 128).
MIN_DIM_SIZE_TO_FACTOR = 128


def factored_dims(shape, min_dim_size: int = MIN_DIM_SIZE_TO_FACTOR
                  ) -> Optional[Tuple[int, int]]:
  """(second largest dim, largest dim) if the moment is factored, else None.

  The same rule as optax's Adafactor (ties broken by dim order).
  """
  if len(shape) < 2:
    return None
  order = np.argsort(shape)
  if shape[order[-2]] < min_dim_size:
    return None
  return int(order[-2]), int(order[-1])


def _stacked_layers(path) -> bool:
  """Whether the leaf at `path` is a scanned stack's parameter (leading
  layer axis): `.../encoder/layers/...` or `.../decoder/layers/...`."""
  keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
  return any(a in scanning.STACKS and b == scanning.SCANNED
             for a, b in zip(keys, keys[1:]))


def _factored(shape, stacked: bool, min_dim_size: int
              ) -> Optional[Tuple[int, int]]:
  """factored_dims of one layer's slice, as dims of the whole array."""
  if not stacked:
    return factored_dims(shape, min_dim_size)
  dims = factored_dims(shape[1:], min_dim_size)
  return None if dims is None else (dims[0] + 1, dims[1] + 1)


def _rms(x: jax.Array, stacked: bool) -> jax.Array:
  """RMS of x, or of each layer's slice (keeping dims to broadcast)."""
  if not stacked:
    return jnp.sqrt(jnp.mean(jnp.square(x)))
  return jnp.sqrt(jnp.mean(jnp.square(x), axis=tuple(range(1, x.ndim)),
                           keepdims=True))


def _mean(x: jax.Array, axis: int) -> jax.Array:
  """Mean over `axis` as a contraction with ones.

  XLA:CPU reduces a leading axis of a row-major matrix slowly (74 ms for the
  [512, 32128] logits kernel of T5.1.1-small); as a dot it runs in the matmul
  library.
  """
  ones = jnp.full((x.shape[axis],), 1.0 / x.shape[axis], x.dtype)
  return jnp.tensordot(x, ones, axes=([axis], [0]),
                       precision=jax.lax.Precision.HIGHEST)


def adafactor(learning_rate: optax.ScalarOrSchedule, *,
              decay_rate: float = 0.8, clipping_threshold: float = 1.0,
              min_param_scale: float = 1e-3, eps: float = 1e-30,
              min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR
              ) -> optax.GradientTransformation:
  """Adafactor (Shazeer and Stern 2018) without momentum.

  For a gradient g of a parameter p at step t (counting from 0):
    beta = 1 - (t + 1) ** -decay_rate
    factored:  r = beta r + (1 - beta) mean_cols(g^2 + eps)
               c = beta c + (1 - beta) mean_rows(g^2 + eps)
               u = g / sqrt(r / mean(r)) / sqrt(c)     (outer product)
    otherwise: v = beta v + (1 - beta) (g^2 + eps);  u = g / sqrt(v)
    u = u / max(1, rms(u) / clipping_threshold)
    update = -lr(t) * max(rms(p), min_param_scale) * u

  Returns a GradientTransformation whose state is optax's `FactoredState`.
  """
  schedule = learning_rate if callable(learning_rate) else (
      lambda _: learning_rate)

  def init(params):
    def moments(path, p):
      dims = _factored(p.shape, _stacked_layers(path), min_dim_size_to_factor)
      placeholder = jnp.zeros((1,), p.dtype)
      if dims is None:
        return placeholder, placeholder, jnp.zeros_like(p)
      row_dim, col_dim = dims
      return (jnp.zeros(np.delete(p.shape, col_dim), p.dtype),
              jnp.zeros(np.delete(p.shape, row_dim), p.dtype), placeholder)
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    v_row, v_col, v = (zip(*(moments(*pl) for pl in with_paths))
                       if with_paths else ((), (), ()))
    unflatten = lambda xs: jax.tree.unflatten(treedef, xs)
    return optax.FactoredState(count=jnp.zeros([], jnp.int32),
                               v_row=unflatten(v_row), v_col=unflatten(v_col),
                               v=unflatten(v))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError('adafactor scales updates by the parameter RMS; pass '
                       'params to update().')
    step = state.count
    beta = 1.0 - (step + 1).astype(jnp.float32) ** -decay_rate
    lr = schedule(step)

    def one(g, v_row, v_col, v, p, stacked):
      dims = _factored(p.shape, stacked, min_dim_size_to_factor)
      g_sq = jnp.square(g) + eps
      if dims is None:
        v = (beta * v + (1.0 - beta) * g_sq).astype(p.dtype)
        scale = jax.lax.rsqrt(v)
      else:
        row_dim, col_dim = dims
        v_row = (beta * v_row + (1.0 - beta) * _mean(g_sq, col_dim)
                 ).astype(p.dtype)
        v_col = (beta * v_col + (1.0 - beta) * _mean(g_sq, row_dim)
                 ).astype(p.dtype)
        reduced_row_dim = row_dim - 1 if row_dim > col_dim else row_dim
        row_factor = jax.lax.rsqrt(
            v_row / jnp.mean(v_row, axis=reduced_row_dim, keepdims=True))
        scale = (jnp.expand_dims(row_factor, col_dim) *
                 jnp.expand_dims(jax.lax.rsqrt(v_col), row_dim))
      rms_u = _rms(g * scale, stacked)
      rms_p = _rms(p, stacked)
      factor = (-lr * jnp.maximum(rms_p, min_param_scale) /
                jnp.maximum(1.0, rms_u / clipping_threshold))
      return (g * scale * factor).astype(p.dtype), v_row, v_col, v

    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = [one(*args) for args in zip(
        treedef.flatten_up_to(grads), treedef.flatten_up_to(state.v_row),
        treedef.flatten_up_to(state.v_col), treedef.flatten_up_to(state.v),
        [p for _, p in with_paths],
        [_stacked_layers(path) for path, _ in with_paths])]
    unflatten = lambda i: jax.tree.unflatten(treedef, [o[i] for o in out])
    new_state = optax.FactoredState(
        count=optax.safe_increment(step), v_row=unflatten(1),
        v_col=unflatten(2), v=unflatten(3))
    return unflatten(0), new_state

  return optax.GradientTransformation(init, update)
