"""Options libtpu reads from LIBTPU_INIT_ARGS once, when it loads.

    libtpu_options.set_defaults()   # before JAX first touches a TPU

libtpu's compiler runs its work on fibers whose default stack is too small
for the remat'd, scanned T5.1.1 train step: compiling it (bfloat16
activations, base and up, `REMAT_POLICY='full'`) overflowed the stack in the
convolution emitter's window-cost estimate (`FusedSpatialMajorConvolution`,
SIGSEGV "STACK OVERFLOW"; libtpu 0.0.42.1). A 16 MiB fiber stack compiles it
(BENCHMARKS.md, pod-slice memory, remat). The same compiler runs on a TPU VM,
so every command that compiles for TPU sets this before libtpu loads; a value
given in LIBTPU_INIT_ARGS is kept.
"""
import os
from typing import MutableMapping

FIBER_STACK_FLAG = '--fibers_default_thread_stack_size'
FIBER_STACK_BYTES = 16 * 2**20


def set_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
  """Adds the fiber stack size to LIBTPU_INIT_ARGS unless it names one.

  Only a process that has not loaded libtpu yet is affected: libtpu reads
  the variable once.
  """
  args = environ.get('LIBTPU_INIT_ARGS', '')
  if FIBER_STACK_FLAG not in args:
    environ['LIBTPU_INIT_ARGS'] = (
        f'{args} {FIBER_STACK_FLAG}={FIBER_STACK_BYTES}'.strip())
