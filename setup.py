"""hyperprompt: HyperPrompt (He et al., ICML 2022) for T5 in JAX/Flax."""
import setuptools

INSTALL_REQUIRES = [
    "jax>=0.5,<0.11",
    "jaxlib>=0.5,<0.11",
    "flax>=0.10,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "seqio>=0.0.19",
    "tensorflow>=2.16,<2.22",
    "tensorflow-text>=2.16,<2.22",
    "tensorflow-datasets>=4.9.6,<5",
    "gin-config>=0.5,<0.6",
    "clu>=0.0.12",
    "tensorboard>=2.16,<2.22",  # clu's metric writers import it.
    "tensorstore>=0.1.65",
    "sentencepiece>=0.2",
    "safetensors>=0.4",
    "scikit-learn>=1.4",
    "scipy>=1.11",
    "matplotlib>=3.8",
    "numpy>=1.26",
]

EXTRAS = {
    # torch 2.13.0 is the CPU build the reference tests need; transformers' T5
    # is the independent numerical reference. libtpu is what jax[tpu]==0.10.2
    # pins: it compiles for TPU topologies without a TPU (hyperprompt.compile).
    # pytest-xdist: `make test` runs the suite on two workers.
    "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0",
             "transformers>=4.45,<6", "libtpu==0.0.42.*"],
    "bench": ["torch==2.13.0", "transformers>=4.45,<6", "peft>=0.13"],
    "tpu": ["jax[tpu]>=0.5,<0.11"],
    # t5x is not on PyPI; install it from its source repository first (README).
    "t5x": [],
}

setuptools.setup(
    name="hyperprompt",
    version="0.1.0",
    description="HyperPrompt: prompt-based task conditioning of T5, in JAX/Flax.",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["hyperprompt", "hyperprompt.*"])
    + ["hyperprompt.tasks", "hyperprompt.gin"],
    # tasks/ and gin/ sit at the top of the repository but install under
    # hyperprompt so no generic top-level `tasks` module is created.
    package_dir={"hyperprompt.tasks": "tasks", "hyperprompt.gin": "gin"},
    package_data={"hyperprompt.gin": ["*.gin", "*/*.gin", "*/*/*.gin"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["hyperprompt=hyperprompt.main:console_main"]},
)
