"""The run's own progress on stderr, without other libraries' noise.

    quiet_logs.configure()   # once, at the start of a command

Each warning is shown once (seqio repeats its "uncached FunctionDataset"
warning for every task); orbax's notes about what a read-only restore does
not do are dropped. TensorFlow, which only reads data here, is imported with
its C++ start-up notices silenced (oneDNN, and CUDA probing on a machine
without a GPU); TF_CPP_MIN_LOG_LEVEL does not reach them, since they are
written before absl's logging is initialised.

libtpu (in the test and tpu extras) prints TPU_WORKER_HOSTNAMES and
accelerator-type notices whenever JAX tries its TPU backend, which it does
when JAX_PLATFORMS is unset. On a machine with no accelerator device at all
(no TPU, no GPU) CPU is the only backend JAX could choose, so `configure`
says so (`jax_platforms = 'cpu'`); with any accelerator present, or
JAX_PLATFORMS set, JAX chooses as always.
"""
import glob
import logging
import os
import sys
import tempfile

WARNING = logging.WARNING

# Orbax notes, on every eval, infer, export and analyze, that a restore opens
# the run read-only or restores only some items: what we asked for.
_EXPECTED = ('Given directory is read only',
             'read_only=True, setting save_interval_steps=0',
             'could not be restored')


class _OnceAndNotExpected(logging.Filter):
  """Passes INFO and below; each distinct warning once; none of _EXPECTED."""

  def __init__(self):
    super().__init__()
    self._seen = set()

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.WARNING:
      return True
    message = record.getMessage()
    if any(text in message for text in _EXPECTED):
      return False
    key = (record.name, message)
    if key in self._seen:
      return False
    self._seen.add(key)
    return True


# PCI vendors of accelerators: Google (TPU), NVIDIA, AMD/ATI (ROCm GPUs).
_ACCELERATOR_VENDORS = ('0x1ae0', '0x10de', '0x1002')
# Device files of TPUs (accel: v2-v4; vfio: v5e and later) and GPUs.
_ACCELERATOR_DEVICES = ('/dev/accel*', '/dev/vfio/*', '/dev/nvidia*',
                        '/dev/kfd')


def has_accelerator() -> bool:
  """Whether any TPU or GPU device may be present (PCI vendor or /dev)."""
  for path in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(path) as f:
        if f.read().strip() in _ACCELERATOR_VENDORS:
          return True
    except OSError:
      return True  # Cannot tell: let JAX look.
  return any(glob.glob(pattern) for pattern in _ACCELERATOR_DEVICES)


def cpu_without_accelerators() -> None:
  """JAX on CPU, without probing libtpu, where nothing else exists."""
  if 'JAX_PLATFORMS' in os.environ or has_accelerator():
    return
  os.environ['JAX_PLATFORMS'] = 'cpu'  # Also for child processes.
  if 'jax' in sys.modules:  # Imported before this: its config read the env.
    sys.modules['jax'].config.update('jax_platforms', 'cpu')


def configure(level: int = logging.INFO) -> None:
  """INFO from the run; WARNING and above, once each, from libraries; JAX
  on CPU without libtpu's notices where there is no accelerator."""
  cpu_without_accelerators()
  logging.basicConfig(level=level,
                      format='%(asctime)s %(levelname)s %(message)s',
                      force=True)
  # Orbax and absl log every file they touch; keep the run's own progress.
  for name in ('absl', 'orbax', 'jax', 'tensorflow'):
    logging.getLogger(name).setLevel(logging.WARNING)
  once = _OnceAndNotExpected()
  for handler in logging.getLogger().handlers:
    handler.addFilter(once)


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow for tf.data, hiding its GPUs, with its C++ notices
  silenced; if that fails, what it wrote is shown with the error."""
  if 'tensorflow' in sys.modules:
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      # tf.data only: keep accelerators for JAX. TF probes CUDA here.
      tf.config.set_visible_devices([], 'GPU')
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.buffer.write(captured.read())
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)
