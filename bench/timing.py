"""What a timed benchmark job records of its step times."""
from typing import Dict, Sequence

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
