"""Mixtures, their task vocabularies, and mixing rates.

`build_mixture(name, tasks)` fixes the mixture's task vocabulary (the task
order; a task's id is its index), registers each task as the seqio Task
`<name>_<key>` stamped with that id, and registers the seqio Mixture `name`.
A task therefore has one id wherever it is used, also when evaluated alone.

Registered here:
  hp_glue            hp_glue_cola ... hp_glue_rte          (8 tasks)
  hp_superglue       hp_superglue_boolq ... _wsc           (8 tasks)
  hp_glue_superglue  hp_glue_superglue_glue_cola ... _superglue_wsc (16 tasks)
  hp_synthetic       hp_synthetic_copy ... _last_odd       (9 tasks)

Mixing rates are computed when a dataset is built, from the published
training-set sizes, with the rate function bound in gin, e.g.

    hyperprompt.tasks.mixtures.mixing_rate.rate_fn = @hyperprompt.tasks.mixtures.temperature_rate
    hyperprompt.tasks.mixtures.temperature_rate.temperature = 2.0
"""
import functools
from typing import Callable, Mapping, Optional, Sequence, Union

import gin
import seqio

from hyperprompt.tasks.definition import register_task
from hyperprompt.tasks.definition import TaskDefinition
from hyperprompt.tasks.glue import GLUE
from hyperprompt.tasks.superglue import SUPERGLUE
from hyperprompt.tasks.synthetic import SYNTHETIC
from hyperprompt.tasks.task_vocab import TaskVocabulary

# Every task definition, by "<suite>_<task>" (e.g. "glue_rte").
DEFINITIONS = {
    **{f'glue_{k}': v for k, v in GLUE.items()},
    **{f'superglue_{k}': v for k, v in SUPERGLUE.items()},
    **{f'synthetic_{k}': v for k, v in SYNTHETIC.items()},
}


@gin.configurable(module='hyperprompt.tasks.mixtures')
def proportional_rate(num_examples: int, cap: Optional[int] = None) -> float:
  """Examples-proportional mixing: rate = min(n, cap) (T5's K)."""
  return float(num_examples if cap is None else min(num_examples, cap))


@gin.configurable(module='hyperprompt.tasks.mixtures')
def temperature_rate(num_examples: int, temperature: float = 2.0,
                     cap: Optional[int] = None) -> float:
  """Temperature sampling: rate = min(n, cap) ** (1 / T); T=1 is proportional,
  large T tends to equal rates."""
  return proportional_rate(num_examples, cap) ** (1.0 / temperature)


@gin.configurable(module='hyperprompt.tasks.mixtures')
def mixing_rate(num_examples: int,
                rate_fn: Callable[[int], float] = proportional_rate) -> float:
  """The rate of a task with `num_examples` training examples."""
  return rate_fn(num_examples)


def _rate_of(task: seqio.Task, num_examples: int) -> float:
  del task  # seqio passes it; the size comes from the definition.
  return mixing_rate(num_examples)


_VOCABULARIES: dict[str, TaskVocabulary] = {}


def build_mixture(
    name: str,
    tasks: Union[Mapping[str, TaskDefinition], Sequence[str]],
) -> tuple[TaskVocabulary, seqio.Mixture]:
  """Registers the tasks and the mixture `name`; returns both.

  Args:
    name: the mixture's name; its tasks are registered as `<name>_<key>`.
    tasks: {key: definition} in task-id order, or keys of `DEFINITIONS`
      (e.g. ["glue_rte", "superglue_boolq"]).

  Returns:
    The task vocabulary (names of the registered tasks, in id order) and the
    seqio Mixture, whose rates follow `mixing_rate` (set in gin).
  """
  if not isinstance(tasks, Mapping):
    unknown = [k for k in tasks if k not in DEFINITIONS]
    if unknown:
      raise KeyError(f'Unknown task definitions {unknown}; known: '
                     f'{list(DEFINITIONS)}.')
    tasks = {k: DEFINITIONS[k] for k in tasks}
  vocabulary = TaskVocabulary(f'{name}_{key}' for key in tasks)
  rated = []
  for task_name, definition in zip(vocabulary.names, tasks.values()):
    task = register_task(task_name, definition, vocabulary)
    rated.append((task, functools.partial(
        _rate_of, num_examples=definition.num_train_examples)))
  mixture = seqio.MixtureRegistry.add(name, rated)
  _VOCABULARIES[name] = vocabulary
  return vocabulary, mixture


def num_tasks(mixture_or_task_name: str) -> int:
  """The size of a mixture's task vocabulary: a conditioner's `num_tasks`.

  The run gin files bind `NUM_TASKS = @mixtures.num_tasks()`, so it is
  derived from the mixture and never typed by hand.
  """
  return len(task_vocabulary(mixture_or_task_name))


def task_vocabulary(mixture_or_task: str) -> TaskVocabulary:
  """The task vocabulary of a mixture from `build_mixture`, or of the mixture
  that registered the given task."""
  if mixture_or_task in _VOCABULARIES:
    return _VOCABULARIES[mixture_or_task]
  for vocabulary in _VOCABULARIES.values():
    if mixture_or_task in vocabulary.names:
      return vocabulary
  raise KeyError(f'{mixture_or_task!r} is not a mixture built by '
                 f'hyperprompt.tasks (or one of its tasks). Mixtures: '
                 f'{list(_VOCABULARIES)}.')


build_mixture('hp_glue', GLUE)
build_mixture('hp_superglue', SUPERGLUE)
build_mixture('hp_glue_superglue',
              [k for k in DEFINITIONS if not k.startswith('synthetic_')])
build_mixture('hp_synthetic', SYNTHETIC)
