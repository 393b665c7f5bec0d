"""The synthetic suite: deterministic, and unsolvable without the task."""
import collections

import numpy as np
import seqio

import hyperprompt.tasks  # Registers hp_synthetic.
from hyperprompt.feature_converter import TaskConditionedFeatureConverter
from hyperprompt.tasks import synthetic


def test_same_seed_same_examples_other_seed_different():
  a = synthetic.generate("sort", "train", 50, seed=3)
  assert a == synthetic.generate("sort", "train", 50, seed=3)
  assert a != synthetic.generate("sort", "train", 50, seed=4)
  assert a[0] == {"inputs": a[0]["inputs"],
                  "targets": "".join(sorted(a[0]["inputs"]))}


def test_splits_are_disjoint_and_all_tasks_share_inputs():
  train = {ex["inputs"] for ex in synthetic.generate("copy", "train", 3000)}
  valid = {ex["inputs"] for ex in synthetic.generate("copy", "validation",
                                                     300)}
  assert not train & valid
  firsts = synthetic.generate("first", "validation", 300)
  assert [ex["inputs"] for ex in firsts] == [
      ex["inputs"] for ex in synthetic.generate("copy", "validation", 300)]
  assert all(len(ex["inputs"]) == synthetic.LENGTH for ex in firsts)
  assert all(ex["targets"] == ex["inputs"][0] for ex in firsts)


def test_task_blind_bayes_predictor_is_at_chance_on_conflicting_tasks():
  n = 4000
  for group in synthetic.CONFLICTING_GROUPS:
    outputs = {t: synthetic.generate(t, "train", n, seed=7) for t in group}
    # The Bayes-optimal task-blind predictor: for each input, the answer
    # most frequent across the group's tasks (tasks equally likely).
    answers_by_input = collections.defaultdict(collections.Counter)
    for t in group:
      for ex in outputs[t]:
        answers_by_input[ex["inputs"]][ex["targets"]] += 1
    blind_hits = sum(max(c.values()) for c in answers_by_input.values())
    blind_accuracy = blind_hits / sum(
        sum(c.values()) for c in answers_by_input.values())
    assert blind_accuracy == 0.5
    # Chance: the best input-blind predictor that knows the task predicts
    # each task's majority answer.
    chance = np.mean([
        max(collections.Counter(ex["targets"] for ex in outputs[t]).values())
        / n for t in group])
    assert blind_accuracy <= chance < 0.53
    # A task-aware predictor solves them: outputs differ across the group.
    for i in range(n):
      assert len({outputs[t][i]["targets"] for t in group}) == len(group)


def test_registered_mixture_batches_with_task_ids():
  names = hyperprompt.tasks.task_vocabulary("hp_synthetic").names
  assert names == tuple(f"hp_synthetic_{t}" for t in synthetic.TASKS)
  ds = seqio.get_dataset(
      "hp_synthetic", synthetic.TASK_FEATURE_LENGTHS,
      TaskConditionedFeatureConverter(), "validation", shuffle=False,
      batch_size=64)
  batch = next(ds.as_numpy_iterator())
  assert batch["encoder_input_tokens"].shape == (64, synthetic.LENGTH + 1)
  assert set(batch["task_ids"]) <= set(range(len(names)))
  vocab = synthetic.VOCABULARY
  for tokens, targets, task_id in zip(batch["encoder_input_tokens"],
                                      batch["decoder_target_tokens"],
                                      batch["task_ids"]):
    task = names[task_id][len("hp_synthetic_"):]
    digits = np.array([int(c) for c in vocab.decode(tokens.tolist())])
    assert vocab.decode(targets.tolist()) == synthetic.TASKS[task][0](digits)
