"""Shared test setup: CPU only, quiet TensorFlow, float32 matmuls."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top

# Reference comparisons at 1e-4 need full-precision matmuls.
jax.config.update('jax_default_matmul_precision', 'highest')
