"""What a timed benchmark job records of its step times."""
from typing import Dict, Sequence

import numpy as np


def summary(times: Sequence[float]) -> Dict[str, float]:
  """Median, fastest and slowest of the timed steps (seconds), and how many:
  the report quotes the median and the chart draws the range."""
  return {'step_seconds': float(np.median(times)),
          'step_seconds_min': float(np.min(times)),
          'step_seconds_max': float(np.max(times)),
          'steps_timed': len(times)}
