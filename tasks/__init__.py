"""seqio tasks and mixtures (installed as hyperprompt.tasks).

Importing this package registers the mixtures hp_glue, hp_superglue,
hp_glue_superglue and hp_synthetic and all their tasks; see mixtures.py.
"""
from hyperprompt.tasks import mixtures  # Registers everything.
from hyperprompt.tasks.mixtures import build_mixture
from hyperprompt.tasks.mixtures import task_vocabulary
from hyperprompt.tasks.task_vocab import TaskVocabulary
