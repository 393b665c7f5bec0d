"""Task conditioning: one interface (`task_ids -> Conditioning`), one module per
method. See interface.py; registry.py lists the methods from
gin/models/conditioners/.

Importing this package imports every method, so gin files can refer to them
(`@hyperprompt.HyperPromptGlobal()`, `@prompt_tuning.PromptTuning()`, ...).
"""
from hyperprompt.conditioning.interface import (Conditioner, Conditioning,
                                                LayerConditioning,
                                                apply_adapter, check_task_ids)
from hyperprompt.conditioning import adapters
from hyperprompt.conditioning import hyperformer
from hyperprompt.conditioning import hyperprompt
from hyperprompt.conditioning import none
from hyperprompt.conditioning import precomputed
from hyperprompt.conditioning import prefix_tuning
from hyperprompt.conditioning import prompt_tuning
