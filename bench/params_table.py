"""Parameter overhead of each conditioner, small to XXL, from shapes only.

The rows are `hyperprompt.params.overhead_table`'s (the table the study and
`python -m hyperprompt.params --all_methods` give too); HyperPrompt rows are
also checked against METHOD.md's closed-form counts.
"""
from bench import workload
from hyperprompt import params as params_lib
from hyperprompt.conditioning import hyperprompt
from hyperprompt.conditioning import placement
from hyperprompt.conditioning import registry

SIZES = ('small', 'base', 'large', 'xl', 'xxl')
TASK_COUNTS = (8, 16)


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
  """overhead_table's rows for every size and task count, each with
  'formula': METHOD.md's count, or None for a method it does not cover."""
  configs = {size: workload.t5_config(size) for size in SIZES}
  rows = params_lib.overhead_table(configs, TASK_COUNTS)
  for row in rows:
    row['formula'] = method_formula(
        configs[row['size']],
        registry.conditioner(row['conditioner'], row['tasks']))
  return rows
