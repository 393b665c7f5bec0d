"""Text-to-text formatting on hand-written examples in the TFDS format."""
import functools

import gin
import tensorflow as tf

from hyperprompt.tasks import preprocessors
from hyperprompt.tasks.glue import GLUE
from hyperprompt.tasks.superglue import SUPERGLUE


def _run(preprocessor, example):
  ds = preprocessor(tf.data.Dataset.from_tensors(example))
  return [{k: v.decode() if isinstance(v, bytes) else v for k, v in ex.items()}
          for ex in ds.as_numpy_iterator()]


def _format(definition, example):
  (preprocessor,) = definition.preprocessors
  return _run(preprocessor, example)


def test_rte_pair():
  ex = {"sentence1": "A cat sat.", "sentence2": "An animal sat.",
        "label": tf.constant(0, tf.int64), "idx": 3}
  assert _format(GLUE["rte"], ex) == [{
      "inputs": "rte sentence1: A cat sat. sentence2: An animal sat.",
      "targets": "entailment"}]


def test_mnli_three_labels():
  for label, name in enumerate(["entailment", "neutral", "contradiction"]):
    ex = {"premise": "P.", "hypothesis": "H.",
          "label": tf.constant(label, tf.int64), "idx": 0}
    assert _format(GLUE["mnli"], ex) == [
        {"inputs": "mnli premise: P. hypothesis: H.", "targets": name}]


def test_stsb_float_label_rounded_to_a_fifth():
  for score, text in [(3.17, "3.2"), (4.44, "4.4"), (0.0, "0.0"),
                      (5.0, "5.0"), (1.35, "1.4")]:
    ex = {"sentence1": "a", "sentence2": "b",
          "label": tf.constant(score, tf.float32), "idx": 0}
    assert _format(GLUE["stsb"], ex)[0]["targets"] == text


def test_copa_choices():
  ex = {"premise": "The man broke his toe.", "question": "cause",
        "choice1": "He dropped a hammer on his foot.",
        "choice2": "He got a hole in his sock.",
        "label": tf.constant(0, tf.int64), "idx": 0}
  assert _format(SUPERGLUE["copa"], ex) == [{
      "inputs": "copa premise: The man broke his toe. question: cause "
                "choice1: He dropped a hammer on his foot. "
                "choice2: He got a hole in his sock.",
      "targets": "choice1"}]


def test_multirc_keeps_its_question_group():
  ex = {"paragraph": "Sue ran.", "question": "Who ran?", "answer": "Sue",
        "label": tf.constant(1, tf.int64),
        "idx": {"paragraph": 4, "question": 2, "answer": 9}}
  assert _format(SUPERGLUE["multirc"], ex) == [{
      "inputs": "multirc question: Who ran? answer: Sue paragraph: Sue ran.",
      "targets": "True", "group": "4-2"}]


def test_record_one_example_per_answer_with_all_answers():
  ex = {"passage": "Rain in Paris today.@highlight\nParis wet@highlight\nOK",
        "query": "The rain fell on @placeholder.",
        "entities": ["Paris", "France"], "answers": ["Paris", "paris"],
        "idx": {"passage": 0, "query": 1}}
  out = _format(SUPERGLUE["record"], ex)
  inputs = ("record query: The rain fell on @placeholder. entities: Paris, "
            "France passage: Rain in Paris today.. Paris wet. OK")
  assert [o["inputs"] for o in out] == [inputs, inputs]
  assert [o["targets"] for o in out] == ["Paris", "paris"]
  assert [list(o["answers"]) for o in out] == [[b"Paris", b"paris"]] * 2


def test_wsc_marks_both_spans():
  ex = {"text": "Mark told Pete many lies about himself , which Pete "
                "included in his book .",
        "span1_index": 0, "span1_text": "Mark",
        "span2_index": 12, "span2_text": "his",
        "label": tf.constant(0, tf.int64), "idx": 0}
  assert _format(SUPERGLUE["wsc"], ex) == [{
      "inputs": "wsc text: #Mark# told Pete many lies about himself , which "
                "Pete included in *his* book .",
      "targets": "False"}]
  ex.update(span1_index=2, span1_text="Pete many lies")
  assert _format(SUPERGLUE["wsc"], ex)[0]["inputs"].startswith(
      "wsc text: Mark told #Pete many lies# about")


def test_wic_and_boolq_fields():
  ex = {"word": "bank", "sentence1": "River bank.", "sentence2": "Bank loan.",
        "start1": 6, "start2": 0, "end1": 10, "end2": 4,
        "label": tf.constant(1, tf.int64), "idx": 0}
  assert _format(SUPERGLUE["wic"], ex)[0] == {
      "inputs": "wic sentence1: River bank. sentence2: Bank loan. word: bank",
      "targets": "True"}
  ex = {"question": "is it?", "passage": "It is.",
        "label": tf.constant(1, tf.int64), "idx": 0}
  assert _format(SUPERGLUE["boolq"], ex)[0]["inputs"] == (
      "boolq question: is it? passage: It is.")


def test_task_prefix_can_be_turned_off_in_gin_and_task_id_is_added():
  ex = {"sentence": "Great film.", "label": tf.constant(1, tf.int64),
        "idx": 0}
  with gin.unlock_config():
    gin.bind_parameter(
        "hyperprompt.tasks.preprocessors.include_task_prefix.enabled", False)
  try:
    assert _format(GLUE["sst2"], ex)[0]["inputs"] == "sentence: Great film."
  finally:
    gin.clear_config()
  (out,) = _run(functools.partial(preprocessors.add_task_id, task_id=5),
                {"inputs": "x"})
  assert out["task_id"].tolist() == [5]
  assert preprocessors.add_task_id(
      tf.data.Dataset.from_tensors({"inputs": "x"}), task_id=5
  ).element_spec["task_id"] == tf.TensorSpec([1], tf.int32)
