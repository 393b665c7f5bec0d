"""Means, confidence intervals and paired comparisons over seeds.

Student-t intervals: with n seeds, mean ± t(0.975, n - 1) * sd / sqrt(n);
paired comparisons are t-tests on the per-seed differences of two methods
run with the same seeds (same initialisation seed and batch order). With
one seed there is no interval (NaN).
"""
import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean over n seeds and its 95% t-interval (low, high)."""
  mean: float
  low: float
  high: float
  n: int
  p: float = math.nan  # Two-sided p-value of mean == 0 (paired differences).

  @property
  def half_width(self) -> float:
    return (self.high - self.low) / 2

  def excludes_zero(self) -> bool:
    return self.low > 0 or self.high < 0

  def __str__(self) -> str:
    if math.isnan(self.half_width):
      return f'{self.mean:.1f}'
    return f'{self.mean:.1f} ± {self.half_width:.1f}'


def interval(values: Sequence[float]) -> Interval:
  """The mean of `values` with its 95% Student-t interval and the p-value
  of the hypothesis that the true mean is 0."""
  values = np.asarray(values, np.float64)
  n = len(values)
  if n == 0:
    raise ValueError('An interval needs at least one value.')
  mean = float(values.mean())
  if n < 2:
    return Interval(mean, math.nan, math.nan, n)
  sem = float(values.std(ddof=1)) / math.sqrt(n)
  half = float(scipy_stats.t.ppf((1 + LEVEL) / 2, n - 1)) * sem
  if sem == 0:
    p = 1.0 if mean == 0 else 0.0
  else:
    p = float(2 * scipy_stats.t.sf(abs(mean) / sem, n - 1))
  return Interval(mean, mean - half, mean + half, n, p)


def paired(a: Sequence[float], b: Sequence[float]) -> Interval:
  """a - b over seeds (a[i] and b[i] from the same seed)."""
  if len(a) != len(b):
    raise ValueError(f'Paired values need equal counts; got {len(a)} and '
                     f'{len(b)}.')
  return interval(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def verdict(difference: Interval) -> str:
  """On a claim that the difference is positive: 'agrees' when its interval
  lies above 0, 'disagrees' when below, else 'inconclusive, n=<n>'."""
  if difference.low > 0:
    return 'agrees'
  if difference.high < 0:
    return 'disagrees'
  return f'inconclusive, n={difference.n}'
