"""The machine a run measured on, and its matmul peak.

Utilisation is only meaningful against a peak measured on the same machine in
the same run, so the peak is timed here (a large square matmul, best of
several), not read from a data sheet.
"""
import os
import platform
import time

import jax
import jax.numpy as jnp


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def cpu_flags() -> list:
  """The vector extensions that decide what a matmul kernel can use."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          flags = line.split(':', 1)[1].split()
          return sorted(f for f in flags
                        if f.startswith(('avx', 'amx', 'fma')))
  except OSError:
    pass
  return []


# What the benchmarks write (results, charts, the generated sections of the
# docs): changed by a run itself, so not what makes its code "dirty".
RESULT_FILES = (':(exclude)*.json', ':(exclude)*.png', ':(exclude)*.md')


def code_commit(root: str = os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))) -> str:
  """The commit of the code that runs (`git describe --always` of `root`,
  this checkout by default), with '-dirty' when a tracked file other than
  results and docs has changes, or says that there is none; record it at
  the start."""
  import subprocess  # pylint: disable=g-import-not-at-top
  git = lambda *args: subprocess.run(
      ['git', *args], cwd=root, capture_output=True, text=True,
      check=False).stdout.strip()
  commit = git('describe', '--always')
  if not commit:
    return 'none (not a git checkout)'
  changed = git('status', '--porcelain', '--untracked-files=no', '--', '.',
                *RESULT_FILES)
  return commit + ('-dirty' if changed else '')


def busy_processes(min_cpu: float = 10.0) -> list:
  """Other processes using CPU: 'pid nice %cpu command' (ps's %cpu, averaged
  over each process's lifetime). The load average alone does not say whether
  they compete: nice 19 ones mostly yield to the benchmark."""
  import subprocess  # pylint: disable=g-import-not-at-top
  out = subprocess.run(['ps', '-eo', 'pid=,ni=,pcpu=,args='],
                       capture_output=True, text=True, check=False).stdout
  busy = []
  for line in out.splitlines():
    pid, nice, cpu, args = line.split(None, 3)
    # Neither this process nor bench.run, its parent.
    if int(pid) not in (os.getpid(), os.getppid()) and float(cpu) >= min_cpu:
      busy.append(f'{pid} nice={nice} cpu={cpu}% {args[:80]}')
  return busy


def describe() -> dict:
  """CPU, cores, memory, library versions and the load right now."""
  import flax
  import numpy as np
  info = {
      'cpu': cpu_model(),
      'cpu_flags': cpu_flags(),
      'cores': os.cpu_count(),
      'jax': jax.__version__,
      'flax': flax.__version__,
      'numpy': np.__version__,
      'python': platform.python_version(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'load_average': os.getloadavg(),
      'busy_processes': busy_processes(),
  }
  try:
    with open('/proc/meminfo') as f:
      info['memory_gib'] = round(int(f.readline().split()[1]) / 2**20, 1)
  except OSError:
    pass
  for name in ('torch', 'transformers', 'peft'):
    try:
      info[name] = __import__(name).__version__
    except ImportError:
      info[name] = None
  return info


def _best_time(fn, repeats: int) -> float:
  fn()  # Compile and warm up.
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def matmul_peak(n: int = 2048, repeats: int = 8) -> dict:
  """Best-of-`repeats` FLOP/s of an `n x n x n` jnp.dot, f32 and bf16 inputs.

  The bf16 matmul accumulates in f32 (`preferred_element_type`), as the
  model's matmuls do.
  """
  peaks = {}
  for name, dtype in (('float32', jnp.float32), ('bfloat16', jnp.bfloat16)):
    a = jnp.ones((n, n), dtype)
    b = jnp.ones((n, n), dtype)
    dot = jax.jit(lambda a, b: jnp.dot(a, b,
                                       preferred_element_type=jnp.float32))
    seconds = _best_time(lambda: dot(a, b).block_until_ready(), repeats)
    peaks[name] = 2 * n**3 / seconds
  return peaks


def memory_bandwidth(mib: int = 512, repeats: int = 8) -> float:
  """Best-of-`repeats` bytes/s of reading a `mib` MiB f32 array (`jnp.sum`).

  Far larger than the caches, so it is main-memory bandwidth as XLA reads it
  with all cores: the bound of any step that streams its weights once (a
  batch-8 decode step).
  """
  x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  seconds = _best_time(lambda: total(x).block_until_ready(), repeats)
  return x.size * 4 / seconds


def torch_matmul_peak(n: int = 2048, repeats: int = 8) -> dict:
  """The same matmul in PyTorch, to show what its CPU kernels reach."""
  import torch
  peaks = {}
  for name, dtype in (('float32', torch.float32),
                      ('bfloat16', torch.bfloat16)):
    a = torch.ones((n, n), dtype=dtype)
    b = torch.ones((n, n), dtype=dtype)
    with torch.no_grad():
      seconds = _best_time(lambda: torch.mm(a, b), repeats)
    peaks[name] = 2 * n**3 / seconds
  return peaks
