"""Task vocabulary, mixture registration and mixing rates."""
import gin
import pytest
import seqio

import hyperprompt.tasks
from hyperprompt.tasks import glue
from hyperprompt.tasks import mixtures
from hyperprompt.tasks import superglue
from hyperprompt.tasks.task_vocab import TaskVocabulary


def test_task_vocabulary_api(tmp_path):
  vocab = TaskVocabulary(["a", "b", "c"])
  assert (len(vocab), vocab.id("c"), vocab.name(1)) == (3, 2, "b")
  with pytest.raises(KeyError, match=r"Known tasks, in id order: \['a', 'b'"):
    vocab.id("z")
  with pytest.raises(IndexError):
    vocab.name(-1)
  with pytest.raises(ValueError, match="repeated"):
    TaskVocabulary(["a", "a"])
  vocab.save(str(tmp_path / "tasks.json"))
  restored = TaskVocabulary.load(str(tmp_path / "tasks.json"))
  assert restored == vocab
  vocab.check_matches(restored)
  with pytest.raises(ValueError, match="id 1: run has 'b', checkpoint has 'c'"):
    vocab.check_matches(TaskVocabulary(["a", "c", "b"]))
  assert vocab != TaskVocabulary(["a", "b"])


def test_standard_mixtures_fix_task_ids_by_position():
  both = hyperprompt.tasks.task_vocabulary("hp_glue_superglue")
  assert len(both) == 16
  assert both.names[0] == "hp_glue_superglue_glue_cola"
  assert both.names[-1] == "hp_glue_superglue_superglue_wsc"
  sg = hyperprompt.tasks.task_vocabulary("hp_superglue")
  assert sg.names == tuple(f"hp_superglue_{k}" for k in superglue.SUPERGLUE)
  assert hyperprompt.tasks.task_vocabulary("hp_superglue_cb") is sg
  mixture = seqio.get_mixture_or_task("hp_glue")
  assert sorted(t.name for t in mixture.tasks) == sorted(
      hyperprompt.tasks.task_vocabulary("hp_glue").names)
  with pytest.raises(KeyError, match="Mixtures:"):
    hyperprompt.tasks.task_vocabulary("glue_rte")


def test_build_mixture_from_names_registers_tasks_with_their_ids():
  vocab, mixture = hyperprompt.tasks.build_mixture(
      "hp_test_custom", ["superglue_cb", "glue_rte", "synthetic_copy"])
  assert vocab.names == ("hp_test_custom_superglue_cb",
                         "hp_test_custom_glue_rte",
                         "hp_test_custom_synthetic_copy")
  assert mixture.name == "hp_test_custom"
  ds = seqio.get_mixture_or_task("hp_test_custom_synthetic_copy").get_dataset(
      {"inputs": 9, "targets": 9}, "validation", shuffle=False)
  assert {int(ex["task_id"][0]) for ex in ds.take(5).as_numpy_iterator()} == {2}
  with pytest.raises(KeyError, match="known: "):
    hyperprompt.tasks.build_mixture("hp_test_bad", ["glue_wnli"])


def _rates(mixture_name):
  mixture = seqio.get_mixture_or_task(mixture_name)
  return {t.name: mixture.get_rate(t) for t in mixture.tasks}


def test_proportional_rates_with_cap_follow_min_n_cap():
  rates = _rates("hp_glue")
  assert rates["hp_glue_rte"] == 2_490
  assert rates["hp_glue_mnli"] == 392_702
  with gin.unlock_config():
    gin.bind_parameter("hyperprompt.tasks.mixtures.proportional_rate.cap",
                       2**16)
  try:
    rates = _rates("hp_glue")
  finally:
    gin.clear_config()
  for short, n in glue.NUM_TRAIN_EXAMPLES.items():
    assert rates[f"hp_glue_{short}"] == min(n, 2**16)
  assert rates["hp_glue_qqp"] == 65_536 and rates["hp_glue_cola"] == 8_551


def test_temperature_rates_follow_n_to_the_one_over_t():
  gin.parse_config("""
      hyperprompt.tasks.mixtures.mixing_rate.rate_fn = \
          @hyperprompt.tasks.mixtures.temperature_rate
      hyperprompt.tasks.mixtures.temperature_rate.temperature = 3.0
  """)
  try:
    rates = _rates("hp_superglue")
  finally:
    gin.clear_config()
  for short, n in superglue.NUM_TRAIN_EXAMPLES.items():
    assert rates[f"hp_superglue_{short}"] == pytest.approx(n ** (1 / 3))
  # Relative rates flatten: CB vs ReCoRD goes from 1:403 to about 1:7.4.
  assert rates["hp_superglue_record"] / rates["hp_superglue_cb"] == (
      pytest.approx((100_730 / 250) ** (1 / 3)))
  assert mixtures.temperature_rate(1000, temperature=1.0, cap=500) == 500.0
