"""How every command line reports a failure: one line, and a non-zero status.

A user's mistake (a misspelled mixture, a bad NUM_TASKS, a corrupt file) is
told in one message, printed as the last line on stderr; the traceback is
for developers and appears only with `--verbose` or HYPERPROMPT_VERBOSE=1.

    exit_on_error(lambda: train(...), argv)
"""
import os
import re
import sys
from typing import Callable, Sequence

VERBOSE_FLAG = '--verbose'
VERBOSE_ENV = 'HYPERPROMPT_VERBOSE'
# Exit status of a run stopped by Ctrl-C, as a shell reports SIGINT.
INTERRUPTED_STATUS = 130

# gin appends where a configurable was called, with the function's address;
# the message before it already says what is wrong.
_GIN_CALL = re.compile(r"\s*In call to configurable '[^']*' \(<[^>]*>\)")
# tf.data wraps an exception raised in Python (a data file's reader) with its
# traceback; the exception's own line is the last of these.
_TRACEBACK = 'Traceback (most recent call last):'
_EXCEPTION_LINE = re.compile(r'^(\w+(?:Error|Exception)): (.+)$', re.MULTILINE)


def verbose_requested(argv: Sequence[str]) -> bool:
  return VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENV, '') not in (
      '', '0')


def one_line(error: BaseException) -> str:
  """`error`'s message on one line, without gin's call-site suffixes."""
  message = _GIN_CALL.sub('', str(error))
  name = type(error).__name__
  if _TRACEBACK in message:
    raised = _EXCEPTION_LINE.findall(message.split(_TRACEBACK, 1)[1])
    if raised:
      name, message = raised[-1]
  message = ' '.join(message.split())
  return f'{name}: {message}' if message else name


def exit_on_error(fn: Callable[[], object], argv: Sequence[str]) -> None:
  """Runs `fn`; on an exception prints one line and exits non-zero.

  Never returns `fn`'s value (a console script would print it). With
  --verbose the exception propagates with its traceback.
  """
  if verbose_requested(argv):
    fn()
    return
  try:
    fn()
  except KeyboardInterrupt as e:
    print(f'Interrupted: {e}' if str(e) else 'Interrupted.', file=sys.stderr)
    sys.exit(INTERRUPTED_STATUS)
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {one_line(e)} (--verbose shows the traceback)',
          file=sys.stderr)
    sys.exit(1)
