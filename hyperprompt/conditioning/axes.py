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
are neither. Over the mesh, every one of them is replicated: conditioner
parameters are small next to the backbone. Their 'embed' and 'joined_kv'
dims (HyperPrompt-Global's generators, for one) follow the backbone's rules.
"""
from typing import Dict

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
}
NAMES = tuple(FACTOR_RULES)

# Not a parameter's axis: inside the model, the 'embed' dim of parameters
# that reach the layers as values (each layer's per-task adapter weights).
# The partitioner maps it where parameters' 'embed' goes ('data' with 2-D
# parameter partitioning), so a constraint with it keeps such a weight split
# like its parameter until the layer that uses it all-gathers its own slice,
# as every layer does its backbone weights. Without it XLA all-gathered
# every layer's adapter weights before the layer loop (issue 13).
PARAMETER_EMBED = 'parameter_embed'
