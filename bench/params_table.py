"""Parameter overhead of each conditioner, small to XXL, from shapes only.

The backbone comes from `hyperprompt.params.parameter_counts` (jax.eval_shape
of the whole model's init); each conditioner is counted by `eval_shape` of
its own init, which is the same `params['conditioner']` subtree without
re-tracing the backbone for every row. HyperPrompt rows are also checked
against METHOD.md's closed-form counts.
"""
import jax
import jax.numpy as jnp
import numpy as np

from bench import ours
from bench import workload
from hyperprompt import params as params_lib
from hyperprompt.conditioning import hyperprompt
from hyperprompt.conditioning import placement

SIZES = ('small', 'base', 'large', 'xl', 'xxl')
TASK_COUNTS = (8, 16)


def _conditioner_count(cfg, conditioner) -> int:
  task_ids = jax.ShapeDtypeStruct((1,), jnp.int32)
  shapes = jax.eval_shape(
      lambda ids: conditioner.init(jax.random.PRNGKey(0), ids, cfg),
      task_ids)['params']
  return int(sum(np.prod(x.shape, dtype=np.int64)
                 for x in jax.tree.leaves(shapes)))


def method_formula(cfg, conditioner):
  """METHOD.md section 3's parameter count of a HyperPrompt variant."""
  if not isinstance(conditioner, hyperprompt.HyperPrompt):
    return None
  T, l, b = conditioner.num_tasks, conditioner.prompt_length, \
      conditioner.bottleneck
  d, hd = cfg.emb_dim, cfg.joined_kv
  M = len(placement.prompt_sites(cfg, conditioner.placement,
                                 conditioner.cross_attention))
  if isinstance(conditioner, hyperprompt.HyperPromptShare):
    return T * l * d + 2 * M * b * (d + hd)
  if isinstance(conditioner, hyperprompt.HyperPromptSep):
    return T * l * d + 2 * T * M * b * (d + hd)
  tp, t = conditioner.task_embed_dim, conditioner.layer_task_dim
  h_t = 2 * tp * t + t + t * t + t
  return T * l * d + (T + M) * tp + h_t + 2 * t * b * (d + hd)


def table():
  """Rows {size, tasks, conditioner, backbone, conditioning, percent,
  formula} for every size, task count and conditioner."""
  rows = []
  for size in SIZES:
    cfg = workload.t5_config(size)
    backbone = params_lib.parameter_counts(cfg, None)['backbone']
    for num_tasks in TASK_COUNTS:
      for name in ours.conditioner_names():
        if name == 'none':
          continue
        conditioner = ours.make_conditioner(name, num_tasks)
        count = _conditioner_count(cfg, conditioner)
        rows.append({
            'size': size, 'tasks': num_tasks, 'conditioner': name,
            'backbone': backbone, 'conditioning': count,
            'percent': 100.0 * count / backbone,
            'formula': method_formula(cfg, conditioner),
        })
  return rows
