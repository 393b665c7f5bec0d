"""Task conditioning: one interface (`task_ids -> Conditioning`), one module per
method. See interface.py."""
from hyperprompt.conditioning.interface import (Conditioner, Conditioning,
                                                LayerConditioning,
                                                apply_adapter, check_task_ids)
