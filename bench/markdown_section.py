"""Generated sections of BENCHMARKS.md: each tool owns the text between its
begin and end markers and leaves the rest of the file as people wrote it."""
import os
from typing import Sequence

BENCHMARKS_MD = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'BENCHMARKS.md')


def replace(section: str, begin: str, end: str, path: str = BENCHMARKS_MD,
            before: Sequence[str] = ()) -> None:
  """Writes `section` (which starts with `begin` and ends with `end`) over
  the text between the markers in `path`; if they are absent, inserts it on
  its own just before the first of `before` in the file (the begin markers
  of the sections that follow it, so it lands after the text that follows
  the previous section), or appends it when none of them is there."""
  text = ''
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  if begin in text and end in text:
    text = text[:text.index(begin)] + section + text[
        text.index(end) + len(end):]
  elif any(b in text for b in before):
    at = text.index(next(b for b in before if b in text))
    text = text[:at] + section + '\n\n' + text[at:]
  else:
    text = (text.rstrip('\n') + '\n\n' if text else '') + section + '\n'
  with open(path, 'w') as f:
    f.write(text)
