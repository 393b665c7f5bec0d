"""Shared test setup: CPU only, quiet TensorFlow, float32 matmuls, and one
persistent XLA compilation cache for the session."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Reference comparisons at 1e-4 need full-precision matmuls.
jax.config.update('jax_default_matmul_precision', 'highest')

# Many tests build the same tiny model again (fixtures, in-process runs, and
# the subprocess runs of the console script, the mesh and the two-process
# tests), and each new jit compiles it anew. JAX's persistent cache lets
# every later compile of the same program (XLA's key: the HLO, compile
# options, devices, flags and versions) load the executable instead. The
# directory is new for each session and removed at its end, so no test ever
# sees an executable from other code; subprocesses and pytest-xdist workers
# inherit it through the environment.
CACHE_DIR_ENV = 'JAX_COMPILATION_CACHE_DIR'
# XLA compiles of the tiny models take well under JAX's default 1 s.
MIN_COMPILE_TIME_ENV = 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'
MIN_COMPILE_TIME_SECS = '0'


def pytest_configure(config):
  if not hasattr(config, 'workerinput'):  # Not a pytest-xdist worker.
    config.jax_cache_dir = tempfile.mkdtemp(prefix='hyperprompt-tests-jax-')
    os.environ[CACHE_DIR_ENV] = config.jax_cache_dir
    os.environ[MIN_COMPILE_TIME_ENV] = MIN_COMPILE_TIME_SECS
  jax.config.update('jax_compilation_cache_dir', os.environ[CACHE_DIR_ENV])
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    float(os.environ[MIN_COMPILE_TIME_ENV]))


def pytest_unconfigure(config):
  if hasattr(config, 'jax_cache_dir'):
    shutil.rmtree(config.jax_cache_dir, ignore_errors=True)


@pytest.fixture(scope='session')
def tiny_trained_run(tmp_path_factory):
  """MODEL_DIR of runner_tiny's model after 2 steps on in-memory batches,
  with its checkpoint at step 2: "some trained run" for the tests that
  evaluate, infer, export or restore it. They leave its checkpoints as they
  are (evaluate writes its metrics beside them)."""
  import runner_tiny  # pylint: disable=g-import-not-at-top

  def batches(skip):
    for i in range(skip, 100):
      yield runner_tiny.random_batch(8, seed=i)

  model_dir = str(tmp_path_factory.mktemp('tiny_trained') / 'run')
  runner_tiny.train(model_dir=model_dir, train_steps=2, checkpoint_period=2,
                    train_batches=batches)
  return model_dir


@pytest.fixture
def start_tiny_training():
  """`start(model_dir, **kwargs)` starts runner_tiny's training script in a
  subprocess (stdout and stderr in `proc.stdout`), for the tests that kill
  or signal a run. Their runs are endless (train_steps=100000), so any still
  running when the test ends, failed or not, are killed rather than left to
  train on beside the rest of the suite."""
  procs = []

  def start(model_dir, **kwargs):
    script = os.path.join(os.path.dirname(__file__), 'runner_tiny.py')
    procs.append(subprocess.Popen(
        [sys.executable, script, json.dumps(dict(model_dir=model_dir,
                                                 **kwargs))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, JAX_PLATFORMS='cpu')))
    return procs[-1]

  yield start
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
