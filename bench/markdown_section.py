"""Generated sections of BENCHMARKS.md: each tool owns the text between its
begin and end markers and leaves the rest of the file as people wrote it."""
import os

BENCHMARKS_MD = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'BENCHMARKS.md')


def replace(section: str, begin: str, end: str,
            path: str = BENCHMARKS_MD) -> None:
  """Writes `section` (which starts with `begin` and ends with `end`) over
  the text between the markers in `path`, or appends it if they are absent."""
  text = ''
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  if begin in text and end in text:
    text = text[:text.index(begin)] + section + text[
        text.index(end) + len(end):]
  else:
    text = (text.rstrip('\n') + '\n\n' if text else '') + section + '\n'
  with open(path, 'w') as f:
    f.write(text)
