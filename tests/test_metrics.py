"""Metrics against scikit-learn / scipy and hand-computed values."""
import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from hyperprompt.tasks import metrics
from hyperprompt.tasks import postprocessors

T = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
P = [1, 0, 0, 1, 1, 1, 0, 1, 1, 0]


def test_accuracy_f1_mcc_match_sklearn():
  assert metrics.accuracy(T, P)["accuracy"] == pytest.approx(
      100 * sklearn.metrics.accuracy_score(T, P))
  assert metrics.binary_f1(T, P)["f1"] == pytest.approx(
      100 * sklearn.metrics.f1_score(T, P))
  assert metrics.matthews_corrcoef(T, P)["matthews_corrcoef"] == pytest.approx(
      100 * sklearn.metrics.matthews_corrcoef(T, P))
  t3, p3 = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 1, 1, 0, 0]
  assert metrics.macro_f1(t3, p3)["macro_f1"] == pytest.approx(
      100 * sklearn.metrics.f1_score(t3, p3, average="macro"))


def test_invalid_predictions_count_as_wrong():
  p = [1, -1, -1, 1, 1, 1, 0, 1, 1, 0]  # Two unparseable, targets 0 and 1.
  flipped = [1, 1, 0, 1, 1, 1, 0, 1, 1, 0]  # Those two made wrong by hand.
  assert metrics.accuracy(T, p)["accuracy"] == 50.0
  assert metrics.binary_f1(T, p)["f1"] == pytest.approx(
      100 * sklearn.metrics.f1_score(T, flipped))
  assert metrics.matthews_corrcoef(T, p)["matthews_corrcoef"] == pytest.approx(
      100 * sklearn.metrics.matthews_corrcoef(T, flipped))
  labels = ("entailment", "neutral", "contradiction")
  assert postprocessors.label_to_id(b"neutral", labels) == 1
  assert postprocessors.label_to_id(b"maybe", labels) == -1
  assert postprocessors.string_to_float(b"3.4") == 3.4
  assert postprocessors.string_to_float(b"three") == -1.0


def test_correlations_match_scipy():
  t = [0.0, 1.2, 2.4, 3.0, 4.8, 5.0, 2.2]
  p = [0.4, 1.0, 2.8, 2.6, 4.0, 4.4, -1.0]
  assert metrics.pearson(t, p)["pearson"] == pytest.approx(
      100 * scipy.stats.pearsonr(t, p)[0])
  assert metrics.spearman(t, p)["spearman"] == pytest.approx(
      100 * scipy.stats.spearmanr(t, p)[0])
  assert metrics.pearson(t, [3.0] * 7)["pearson"] == 0.0  # Constant: no NaN.


def test_multirc_exact_match_and_f1a_by_hand():
  targets = [{"group": g, "value": v} for g, v in
             [("0-0", 1), ("0-0", 0), ("0-1", 1), ("0-1", 1), ("1-0", 0)]]
  predictions = [1, 0, 1, 0, 0]
  out = metrics.multirc(targets, predictions)
  # Questions 0-0 and 1-0 fully right, 0-1 not: EM 2/3.
  assert out["exact_match"] == pytest.approx(100 * 2 / 3)
  # Over all options: TP=2, FP=0, FN=1 -> F1 = 4/5.
  assert out["f1a"] == pytest.approx(80.0)


def test_record_max_over_answers_with_squad_normalisation():
  targets = [["The Eiffel Tower", "Eiffel Tower"], ["Barack Obama"],
             ["New York City"]]
  predictions = ["eiffel tower!", "Obama", "Boston"]
  out = metrics.record(targets, predictions)
  assert out["exact_match"] == pytest.approx(100 / 3)
  # F1: 1 (exact after normalisation), 2*(1*0.5)/1.5 = 2/3, 0.
  assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)


def test_benchmark_averages_average_metrics_within_then_across_tasks():
  scores = {task: {m: 80.0 for m in names}
            for task, names in metrics.GLUE_METRICS.items()}
  scores["mrpc"] = {"accuracy": 90.0, "f1": 70.0, "ignored": 0.0}
  scores["cola"] = {"matthews_corrcoef": 40.0}
  # Tasks: 6 at 80, mrpc at 80, cola at 40 -> (7 * 80 + 40) / 8.
  assert metrics.glue_average(scores) == pytest.approx((7 * 80 + 40) / 8)
  sg = {task: {m: 50.0 for m in names}
        for task, names in metrics.SUPERGLUE_METRICS.items()}
  sg["cb"] = {"accuracy": 90.0, "macro_f1": 70.0}
  assert metrics.superglue_average(sg) == pytest.approx((7 * 50 + 80) / 8)
  del sg["wsc"]
  with pytest.raises(ValueError, match="wsc/accuracy"):
    metrics.superglue_average(sg)


def test_exact_match_on_strings():
  assert metrics.exact_match(["123", "321"], ["123", "32"]) == {
      "exact_match": 50.0}
  assert np.isclose(metrics.accuracy(["yes", "no"], ["yes", "yes"])[
      "accuracy"], 50.0)
