"""The study's data: the synthetic suite as in-memory model features, its
three splits, and a span-corruption corpus for pretraining the backbone.

The examples are exactly those of the seqio tasks `hp_synthetic_<task>`
(`synthetic.generate`, the byte vocabulary, EOS appended), turned into the
features `TaskConditionedFeatureConverter` gives; the study skips tf.data
because hundreds of short runs on 2 CPU cores cannot afford a pipeline start
each.

Splits (per task): `train` is the first `num_train` examples of the seqio
train split, `heldout` the next `num_heldout` of that same split (learning
rates and best checkpoints are chosen on it), `test` the seqio validation
split, which no selection ever sees.
"""
from typing import Dict, Iterator, Sequence

import numpy as np

from hyperprompt import models
from hyperprompt.tasks import synthetic

VOCABULARY = synthetic.VOCABULARY
INPUT_LENGTH = synthetic.TASK_FEATURE_LENGTHS['inputs']
TARGET_LENGTH = synthetic.TASK_FEATURE_LENGTHS['targets']
SPLITS = ('train', 'heldout', 'test')
Features = Dict[str, np.ndarray]


def _encode(texts: Sequence[str], length: int) -> np.ndarray:
  """Texts -> [n, length] int32 byte ids + EOS, zero-padded."""
  return pad([list(VOCABULARY.encode(t)) for t in texts], length)


def pad(sequences: Sequence[Sequence[int]], length: int) -> np.ndarray:
  """Token id lists -> [n, length] int32 with EOS appended, zero-padded."""
  out = np.zeros((len(sequences), length), np.int32)
  for i, ids in enumerate(sequences):
    ids = list(ids) + [VOCABULARY.eos_id]
    if len(ids) > length:
      raise ValueError(f'{ids} needs {len(ids)} tokens; length {length}.')
    out[i, :len(ids)] = ids
  return out


def model_features(inputs: np.ndarray, targets: np.ndarray,
                   task_ids: np.ndarray) -> Features:
  """[n, length] encoded inputs and targets -> the model's features
  (hyperprompt.models.MODEL_FEATURES), as the feature converter makes them."""
  features = {
      'encoder_input_tokens': inputs,
      'decoder_target_tokens': targets,
      # Shifted right with 0 as the start token, as seqio's converter does.
      'decoder_input_tokens': np.pad(targets[:, :-1], [(0, 0), (1, 0)]),
      'decoder_loss_weights': (targets > 0).astype(np.float32),
      'task_ids': np.asarray(task_ids, np.int32),
  }
  assert set(features) == set(models.MODEL_FEATURES)
  return features


def features(tasks: Sequence[str], split: str, num_per_task: int,
             num_train: int = 0, seed: int = 0) -> Features:
  """Model features of `num_per_task` examples of each task, task by task.

  `split` is one of SPLITS; `heldout` starts after the `num_train` training
  examples of the seqio train split. The task id of `tasks[i]` is `i`.
  """
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; the splits are {SPLITS}.')
  source = 'validation' if split == 'test' else 'train'
  offset = num_train if split == 'heldout' else 0
  inputs, targets, task_ids = [], [], []
  for task_id, task in enumerate(tasks):
    examples = synthetic.generate(task, source, offset + num_per_task,
                                  seed)[offset:]
    inputs += [ex['inputs'] for ex in examples]
    targets += [ex['targets'] for ex in examples]
    task_ids += [task_id] * len(examples)
  return model_features(_encode(inputs, INPUT_LENGTH),
                        _encode(targets, TARGET_LENGTH), task_ids)


def replica_batches(data: Features, batch_size: int,
                    seeds: Sequence[int]) -> Iterator[Features]:
  """Endless [replicas, batch_size, ...] batches: replica i draws examples
  uniformly from all tasks with its own generator, seeded by `seeds[i]`, so
  runs with the same seed see the same batches whatever else differs."""
  rngs = [np.random.default_rng(s) for s in seeds]
  size = len(data['task_ids'])
  while True:
    index = np.stack([rng.integers(0, size, batch_size) for rng in rngs])
    yield {k: v[index] for k, v in data.items()}


def task_rows(data: Features) -> Dict[int, np.ndarray]:
  """{task id: row indices} of an evaluation set."""
  return {int(t): np.flatnonzero(data['task_ids'] == t)
          for t in np.unique(data['task_ids'])}


# --- Span corruption (T5's pretraining objective) ----------------------------

def sentinel(i: int, vocab_size: int) -> int:
  """T5's i-th sentinel: ids counted down from the top of the vocabulary
  (here above the 259 byte ids, so no text encodes to one)."""
  return vocab_size - 1 - i


def _segments(total: int, count: int, rng: np.random.Generator) -> list:
  """A random split of `total` items into `count` non-empty lengths."""
  cuts = np.sort(rng.choice(np.arange(1, total), count - 1, replace=False))
  return np.diff(np.concatenate([[0], cuts, [total]])).tolist()


def span_corrupt(tokens: Sequence[int], rng: np.random.Generator,
                 vocab_size: int, noise_density: float = 0.15,
                 mean_span_length: float = 3.0):
  """(inputs, targets) token lists of T5's span corruption.

  round(density * n) tokens (at least 1) in round(noise / mean span length)
  spans (at least 1) are dropped from the input, each span replaced by its
  own sentinel; the target lists each sentinel followed by the span it
  replaced. Spans and the kept stretches between them alternate, starting
  with a kept stretch, as in T5.
  """
  n = len(tokens)
  if n < 2:
    raise ValueError(f'Span corruption needs 2 tokens or more; got {n}.')
  num_noise = min(max(1, round(noise_density * n)), n - 1)
  num_spans = min(max(1, round(num_noise / mean_span_length)),
                  num_noise, n - num_noise)
  noise = _segments(num_noise, num_spans, rng)
  kept = _segments(n - num_noise, num_spans, rng)
  inputs, targets, position = [], [], 0
  for i, (k, s) in enumerate(zip(kept, noise)):
    inputs += list(tokens[position:position + k]) + [sentinel(i, vocab_size)]
    position += k
    targets += [sentinel(i, vocab_size)] + list(tokens[position:position + s])
    position += s
  return inputs, targets


# Task-free generative processes of the pretraining corpus: each draws a
# digit list of the given length whose digits can be inferred from each
# other, so span corruption has something to learn (a masked digit of a
# uniform draw cannot be).
def _runs(rng, n):
  """Runs of repeated digits: 33377111."""
  lengths = _segments(n, int(rng.integers(1, 4)), rng)
  return [int(d) for k in lengths for d in [rng.integers(0, 10)] * k]


def _repeats(rng, n):
  """A pattern of 2 or 3 digits repeated: 1231231."""
  pattern = rng.integers(0, 10, int(rng.integers(2, 4)))
  return [int(pattern[i % len(pattern)]) for i in range(n)]


def _progression(rng, n):
  """An arithmetic progression modulo 10: 2468024."""
  start, step = rng.integers(0, 10), rng.integers(1, 10)
  return [int((start + step * i) % 10) for i in range(n)]


def _sorted(rng, n):
  """Random digits in ascending or descending order: 1335789."""
  digits = np.sort(rng.integers(0, 10, n))
  return [int(d) for d in (digits if rng.integers(2) else digits[::-1])]


def _palindrome(rng, n):
  """A half mirrored: 1234321 (each digit equals its mirror image)."""
  half = [int(d) for d in rng.integers(0, 10, (n + 1) // 2)]
  return half + half[:n // 2][::-1]


def _repeated_half(rng, n):
  """A half written twice: 12341234."""
  half = [int(d) for d in rng.integers(0, 10, (n + 1) // 2)]
  return (half + half)[:n]


STRUCTURES = {'runs': _runs, 'repeats': _repeats,
              'progression': _progression, 'sorted': _sorted,
              'palindrome': _palindrome, 'repeated_half': _repeated_half}


def structured_digits(kind: str, rng: np.random.Generator) -> list:
  """One digit list of STRUCTURES[kind], 4 to synthetic.LENGTH long."""
  if kind not in STRUCTURES:
    raise ValueError(f'Unknown structure {kind!r}; the structures are '
                     f'{list(STRUCTURES)}.')
  return STRUCTURES[kind](rng, int(rng.integers(4, synthetic.LENGTH + 1)))


def pretraining_corpus(num_examples: int, seed: int, vocab_size: int
                       ) -> Features:
  """Span-corrupted model features of a generated, task-free corpus.

  Each text is drawn from one of len(STRUCTURES) + 1 sources with equal
  probability: a generative process of STRUCTURES, or an input of the
  suite's train split (uniform digits: the inputs the tasks read, never a
  held-out or test one). No text carries a task or an answer. task_ids are
  0: the backbone is pretrained without conditioning.
  """
  rng = np.random.default_rng([seed, 7])
  kinds = rng.integers(0, len(STRUCTURES) + 1, num_examples)
  suite_inputs = iter(synthetic.inputs('train', int((kinds == 0).sum()),
                                       seed))
  names = list(STRUCTURES)
  texts = [''.join(map(str, next(suite_inputs) if k == 0 else
                       structured_digits(names[k - 1], rng)))
           for k in kinds]
  pairs = [span_corrupt(list(VOCABULARY.encode(t)), rng, vocab_size)
           for t in texts]
  return model_features(pad([p[0] for p in pairs], INPUT_LENGTH),
                        pad([p[1] for p in pairs], TARGET_LENGTH),
                        np.zeros(len(pairs), np.int32))


def unstructured_floor(corpus: Features) -> float:
  """The pretraining loss of a model that knows span corruption's format
  but nothing of how digits depend on each other: per target token (the
  loss is normalised by the batch's target tokens), ln 10 for every masked
  digit and 0 for sentinels and EOS. A loss well below it means the model
  learned structure, not only the format."""
  targets = corpus['decoder_target_tokens']
  digits = np.isin(targets, VOCABULARY.encode('0123456789'))
  return float(np.log(10) * digits.sum() / (targets > 0).sum())
