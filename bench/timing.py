"""How a benchmark job is timed, alone or paired with another, and what it
records of its step times.

A job is a `Timed`: `step()` runs one step to completion and `result(times)`
is the job's result given its timed steps. `run` times one job. `paired`
times two in one process, alternating one step of each (A B, then B A, ...),
so that both sides see the same machine: on the 2-core machines a step's
time varies by 10-40% within a minute (other tenants), more than the 3%
overhead or the 1.3x speed-up a target asks about. Their ratio is then taken
round by round, and `median_interval` gives its median with a
distribution-free confidence interval.
"""
import math
import time
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

# A timed job whose slowest step takes more than this many times its fastest
# shared the machine with other work for part of its run (undisturbed jobs
# on the 2-core machines spread by 1.02x to 1.3x). bench.run runs it again.
DISTURBED_SPREAD = 1.5


def summary(times: Sequence[float]) -> Dict[str, float]:
  """Median, fastest and slowest of the timed steps (seconds), and how many:
  the report quotes the median and the chart draws the range."""
  return {'step_seconds': float(np.median(times)),
          'step_seconds_min': float(np.min(times)),
          'step_seconds_max': float(np.max(times)),
          'steps_timed': len(times)}


def disturbed(result: Dict[str, float]) -> bool:
  """Whether a timed job's steps spread by more than DISTURBED_SPREAD."""
  return ('step_seconds_max' in result and result['step_seconds_max'] >
          DISTURBED_SPREAD * result['step_seconds_min'])


class Timed(NamedTuple):
  """A job ready to time.

  Attributes:
    step: runs one step (a training step, a whole greedy decode) and waits
      for its result.
    result: the job's result (`summary` of the times, and what else it
      reports) given the seconds of its timed steps.
  """
  step: Callable[[], None]
  result: Callable[[Sequence[float]], Dict]


def _seconds(step: Callable[[], None]) -> float:
  start = time.perf_counter()
  step()
  return time.perf_counter() - start


def run(job: Timed, warmup: int, steps: int) -> Dict:
  """`warmup` untimed steps, then `steps` timed ones: the job's result."""
  for _ in range(warmup):
    job.step()
  return job.result([_seconds(job.step) for _ in range(steps)])


def paired(a: Timed, b: Timed, warmup: int,
           rounds: int) -> Tuple[List[float], List[float]]:
  """Times `rounds` steps of each of `a` and `b`, interleaved: each round
  runs one step of each, `a` first in even rounds and `b` first in odd
  ones (so neither always follows the other). Returns both sides' step
  seconds, round by round."""
  for job in (a, b):
    for _ in range(warmup):
      job.step()
  times_a, times_b = [], []
  for i in range(rounds):
    if i % 2:
      times_b.append(_seconds(b.step))
      times_a.append(_seconds(a.step))
    else:
      times_a.append(_seconds(a.step))
      times_b.append(_seconds(b.step))
  return times_a, times_b


def median_interval(values: Sequence[float],
                    confidence: float = 0.95) -> Tuple[float, float, float]:
  """(median, low, high): the median of `values` and a distribution-free
  confidence interval for it, from order statistics: [x_(k), x_(n+1-k)]
  (1-based, sorted) with the largest k for which P(Binomial(n, 1/2) < k) <=
  (1 - confidence) / 2. It assumes only that the values are independent
  draws from one distribution. With too few values for that confidence
  (n < 6 at 95%) the interval is the whole range, [min, max]."""
  x = np.sort(np.asarray(values, dtype=float))
  n = len(x)
  if n == 0:
    raise ValueError('median_interval of no values.')
  tail = (1.0 - confidence) / 2
  below = lambda k: sum(math.comb(n, i) for i in range(k)) / 2**n
  k = 1
  while k + 1 <= n // 2 and below(k + 1) <= tail:
    k += 1
  return float(np.median(x)), float(x[k - 1]), float(x[n - k])
