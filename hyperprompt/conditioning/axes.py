"""The conditioners' logical axis names, in one table.

Every conditioner parameter is created with logical axis names
(`param_with_axes`). Names it shares with the backbone ('embed', 'joined_kv',
'mlp', 'heads', 'kv') follow the backbone's rules; the names below are the
conditioners' own. From this table come both our partitioner's rules
(partitioning.LOGICAL_AXIS_RULES) and the t5x bridge's partitioning and
Adafactor factor rules, so a new name is added here once.

Each name maps to its Adafactor factorisation: 'row'/'column' mark the two
dimensions a factored second moment keeps (t5x factors a parameter only when
it has both); 'batch' dimensions index independent matrices (tasks, prompted
sites, adapted layers) that are never averaged together; 'none' dimensions
are neither. Over the mesh (`mesh_rules`) they are replicated, conditioner
parameters being small next to the backbone, except the adapters' width
(ADAPTER_EMBED). Their 'embed' and 'joined_kv' dims (HyperPrompt-Global's
generators, for one) follow the backbone's rules.
"""
from typing import Dict, Optional, Tuple

FACTOR_RULES: Dict[str, str] = {
    'tasks': 'batch',
    'prompt_sites': 'batch',
    'adapted_layers': 'batch',
    'prompt_length': 'none',
    'prompt_kinds': 'batch',
    'adapter_positions': 'batch',
    'task_embed': 'none',
    'layer_task_hidden': 'none',
    'layer_task_embed': 'row',
    'hyper_generated': 'column',
    'hyper_bottleneck': 'column',
    'prefix_embed': 'row',
    'adapter_bottleneck': 'column',
    'adapter_embed': 'row',
}
NAMES = tuple(FACTOR_RULES)

# The model width (d) of the adapters' weights ([tasks, layers, d, r] and
# their biases, HyperFormer++'s generated ones too), split over the mesh's
# 'data' axis with 1-D and 2-D parameter partitioning alike: the adapters
# are sharded like FSDP even where the backbone is not. Each layer receives
# its per-task weights still split (the constraint in
# interface.apply_adapter) and all-gathers its own [tasks, d, r] inside the
# layer loop, as a 2-D partitioned layer does its backbone weights; their
# gradients are reduce-scattered back. Replicated (1-D, until issue 13), the
# adapters of T5.1.1-large (8 tasks, 48 layers, r 64: 50M parameters) took
# 201 MB of parameters on every device, as much again of (unfactored, r <
# 128) second moments, and more of gradients and their copies stacked for
# the layer scans: 19% over the plain model on the v4 slice. Without the
# in-layer constraint, XLA all-gathered every layer's weights before the
# layer loop.
ADAPTER_EMBED = 'adapter_embed'


def mesh_rules(data: str) -> Tuple[Tuple[str, Optional[str]], ...]:
  """(name, mesh axis) for every name above: `data` (the mesh's data axis)
  for ADAPTER_EMBED, None (replicated) for the rest. One table for our
  partitioner and t5x's."""
  return tuple((name, data if name == ADAPTER_EMBED else None)
               for name in NAMES)
