"""The one configuration object of the T5 backbone.

Following t5x's `T5Config`, every module takes this frozen dataclass instead of
a long list of keyword arguments. Sizes live in gin (gin/models/sizes/*.gin).
"""
import dataclasses
from typing import Tuple

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of a T5 encoder-decoder.

  Defaults are T5.1.1-small. `num_heads * head_dim` may differ from `emb_dim`
  (6 * 64 = 384 vs 512 in T5.1.1-small): no module assumes they match.
  """
  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  mlp_dim: int = 1024
  # T5.1.1: gated GELU ('gelu', 'linear'); T5 v1.0: ('relu',).
  mlp_activations: Tuple[str, ...] = ('gelu', 'linear')
  dropout_rate: float = 0.1
  # T5 v1.0 ties the output layer to the token embedding (with 1/sqrt(d)
  # rescaling); T5.1.1 has a separate `logits_dense`.
  logits_via_embedding: bool = False
  # Activation dtype; parameters are always float32.
  dtype: str = 'float32'
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  float32_attention_logits: bool = True
  # Activation rematerialisation for large models: 'none', 'full' (recompute
  # everything in the backward pass) or 'dots' (save matmul outputs only).
  remat_policy: str = 'none'
  # Run each layer stack as one `nn.scan` over a single layer (t5x's and
  # flaxformer's `scan_layers`): layer parameters are stacked along a leading
  # 'layers' axis (`encoder/layers/...`), so a 48-layer model traces and
  # compiles one layer instead of 48. `hyperprompt.scanning` converts
  # parameter trees between the two layouts.
  scan_layers: bool = False

  def __post_init__(self):
    if self.remat_policy not in ('none', 'full', 'dots'):
      raise ValueError(
          f"T5Config.remat_policy must be 'none', 'full' or 'dots', got "
          f'{self.remat_policy!r}.')
    jnp.dtype(self.dtype)  # Fails fast on an unknown dtype name.

  @property
  def activation_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def joined_kv(self) -> int:
    """Width of all heads together, `h * d_h`."""
    return self.num_heads * self.head_dim
