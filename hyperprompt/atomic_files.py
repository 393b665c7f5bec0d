"""Files written whole or not at all: a temporary file, then a rename.

A run that dies mid-write (full disk, Ctrl-C, preemption) leaves the previous
file intact instead of a truncated one; readers never see half a file. Works
for local paths and gs:// (tf.io.gfile; on GCS the rename is a copy, still
never visible half-written).

    with atomic_files.open_for_write(path) as f:
      json.dump(results, f)
"""
import contextlib
import os
import uuid
from typing import IO, Iterator


def _gfile():
  # Imported on use: the model modules import this one (prefix files), and
  # building a model must not import TensorFlow.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


@contextlib.contextmanager
def open_for_write(path: str, mode: str = 'w') -> Iterator[IO]:
  """A file that replaces `path` when the block ends without an error.

  Args:
    path: the file to (re)write.
    mode: 'w' (text) or 'wb' (bytes).
  """
  if mode not in ('w', 'wb'):
    raise ValueError(f'mode must be "w" or "wb", not {mode!r}.')
  directory, name = os.path.split(path)
  # Beside the target, so that the rename stays on one filesystem.
  temporary = os.path.join(directory, f'.{name}.tmp-{uuid.uuid4().hex[:8]}')
  gfile = _gfile()
  try:
    with gfile.GFile(temporary, mode) as f:
      yield f
    gfile.rename(temporary, path, overwrite=True)
  except BaseException:
    if gfile.exists(temporary):
      gfile.remove(temporary)
    raise


def write_text(path: str, text: str) -> None:
  with open_for_write(path) as f:
    f.write(text)


def append_line(path: str, line: str) -> None:
  """Appends `line` and a newline to `path` as one whole line.

  Locally, one O_APPEND write: POSIX appends it whole, so history.jsonl never
  gains half a line, and a long run does not rewrite its history each time.
  Elsewhere (gs:// has no append) the file is rewritten atomically.
  """
  data = (line + '\n').encode('utf-8')
  if '://' not in path:
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      written = os.write(descriptor, data)
    finally:
      os.close(descriptor)
    if written != len(data):
      raise OSError(f'{path}: only {written} of {len(data)} bytes of a '
                    'history line were written (disk full?).')
    return
  existing = b''
  if _gfile().exists(path):
    with _gfile().GFile(path, 'rb') as f:
      existing = f.read()
  with open_for_write(path, 'wb') as f:
    f.write(existing + data)
