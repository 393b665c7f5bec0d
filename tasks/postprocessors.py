"""Decoded text -> values the metrics compare.

seqio calls a postprocessor as `fn(text, example=..., is_target=...)` on both
targets and model predictions. A prediction that is not a valid answer never
raises: it becomes a value that no metric can count as right (-1 for labels,
-1.0 for STS-B scores, which lie in [0, 5]).
"""
from typing import Sequence

INVALID_LABEL = -1
INVALID_SCORE = -1.0


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def label_to_id(text, label_names: Sequence[str], example=None,
                is_target=False) -> int:
  """The index of `text` in `label_names`, or -1 if it is not a label."""
  del example, is_target
  text = _text(text).strip()
  return label_names.index(text) if text in label_names else INVALID_LABEL


def string_to_float(text, example=None, is_target=False) -> float:
  """STS-B score as a float, or -1.0 when the text is not a number."""
  del example, is_target
  try:
    return float(_text(text).strip())
  except ValueError:
    return INVALID_SCORE


def multirc(text, example=None, is_target=False):
  """Label id; for targets, with the question it belongs to.

  Targets become {"group": "<paragraph>-<question>", "value": label} so the
  MultiRC metrics can regroup the answer options of each question.
  """
  value = label_to_id(text, ('False', 'True'))
  if not is_target:
    return value
  return {'group': _text(example['group']), 'value': value}


def record(text, example=None, is_target=False):
  """Predictions stay text; targets become the list of all gold answers."""
  if not is_target:
    return _text(text)
  return [_text(a) for a in example['answers']]
