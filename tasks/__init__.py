"""seqio tasks and mixtures (installed as hyperprompt.tasks)."""
