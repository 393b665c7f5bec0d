"""HyperPrompt for T5 in JAX/Flax."""
