"""Analytic FLOPs of one training step, per conditioner (the paper's #Ops).

Counts matrix multiplications only (2 FLOPs per multiply-add), which is what
dominates a T5 step and what the paper's operation count compares: key/value
prompts lengthen only the attention's key axis and skip the FFN, while
adapters add two matmuls per token per layer and prompt tuning lengthens the
whole encoder input. A training step is 3x the forward pass (the backward pass
needs the gradient with respect to both operands of every matmul).

With a frozen backbone (`frozen_backbone_step_flops`) no weight gradient is
computed for it: the step is the forward pass, the activation gradients
between the loss and the lowest trained parameter, and the conditioner's own
forward and backward passes.

`tests/test_bench_smoke.py` checks these counts against XLA's own
`compiled.cost_analysis()['flops']`, which also counts elementwise work.
"""
import dataclasses
from typing import Dict

from hyperprompt.config import T5Config


@dataclasses.dataclass(frozen=True)
class Conditioned:
  """What a conditioner changes in the backbone's computation.

  Attributes:
    encoder_prefix: key/value prompt length in each encoder self-attention.
    decoder_prefix: the same in each decoder self-attention.
    cross_prefix: the same in each encoder-decoder attention.
    input_prompts: soft prompt vectors prepended to the encoder input.
    adapter_dim: bottleneck of an adapter after each FFN (0: none).
    conditioner_flops: forward FLOPs of the conditioner itself per step (its
      per-task outputs are computed once for all tasks, not per example).
  """
  encoder_prefix: int = 0
  decoder_prefix: int = 0
  cross_prefix: int = 0
  input_prompts: int = 0
  adapter_dim: int = 0
  conditioner_flops: int = 0


def _dense(tokens: int, n_in: int, n_out: int) -> int:
  return 2 * tokens * n_in * n_out


def _attention(cfg: T5Config, batch: int, q_len: int, kv_len: int,
               prefix: int, project_kv: bool = True) -> int:
  """Projections, logits and value mixing of one attention block."""
  hd = cfg.joined_kv
  flops = _dense(batch * q_len, cfg.emb_dim, hd)  # query
  if project_kv:
    flops += 2 * _dense(batch * kv_len, cfg.emb_dim, hd)  # key, value
  flops += 2 * 2 * batch * q_len * (kv_len + prefix) * hd  # logits, mixing
  flops += _dense(batch * q_len, hd, cfg.emb_dim)  # out
  return flops


def _mlp(cfg: T5Config, tokens: int) -> int:
  num_in = len(cfg.mlp_activations)
  return (num_in * _dense(tokens, cfg.emb_dim, cfg.mlp_dim) +
          _dense(tokens, cfg.mlp_dim, cfg.emb_dim))


def _adapter(cfg: T5Config, tokens: int, dim: int) -> int:
  return 2 * _dense(tokens, cfg.emb_dim, dim) if dim else 0


def forward_flops(cfg: T5Config, batch: int, inputs: int, targets: int,
                  cond: Conditioned = Conditioned()) -> Dict[str, int]:
  """Matmul FLOPs of one teacher-forced forward pass, by part."""
  enc_len = inputs + cond.input_prompts
  enc_tokens, dec_tokens = batch * enc_len, batch * targets
  encoder = cfg.num_encoder_layers * (
      _attention(cfg, batch, enc_len, enc_len, cond.encoder_prefix) +
      _mlp(cfg, enc_tokens) + _adapter(cfg, enc_tokens, cond.adapter_dim))
  decoder = cfg.num_decoder_layers * (
      _attention(cfg, batch, targets, targets, cond.decoder_prefix) +
      _attention(cfg, batch, targets, enc_len, cond.cross_prefix) +
      _mlp(cfg, dec_tokens) + _adapter(cfg, dec_tokens, cond.adapter_dim))
  logits = _dense(dec_tokens, cfg.emb_dim, cfg.vocab_size)
  parts = {'encoder': encoder, 'decoder': decoder, 'logits': logits,
           'conditioner': cond.conditioner_flops}
  parts['total'] = sum(parts.values())
  return parts


def train_step_flops(cfg: T5Config, batch: int, inputs: int, targets: int,
                     cond: Conditioned = Conditioned()) -> int:
  """Forward + backward matmul FLOPs of one training step."""
  return 3 * forward_flops(cfg, batch, inputs, targets, cond)['total']


def frozen_backbone_step_flops(cfg: T5Config, batch: int, inputs: int,
                               targets: int, cond: Conditioned) -> int:
  """Matmul FLOPs of a step that trains the conditioner only.

  The backbone is a constant: its matmuls run forward once and backward
  once for the activation gradient only where a trained parameter lies below
  (no weight gradients). With nothing trained in the encoder (prefixes in
  the decoder only), the encoder has no backward pass, and neither do the
  cross-attention key/value projections of its output. The conditioner
  trains in full (3x its forward FLOPs). The activation gradient of the
  lowest conditioned layer's own input is counted, though autodiff drops it,
  so this is an upper bound by at most one layer's input projections.
  """
  fwd = forward_flops(cfg, batch, inputs, targets, cond)
  encoder_trained = bool(cond.encoder_prefix or cond.input_prompts or
                         cond.adapter_dim)
  backward = fwd['decoder'] + fwd['logits']
  if encoder_trained:
    backward += fwd['encoder']
  else:
    enc_len = inputs + cond.input_prompts
    backward -= cfg.num_decoder_layers * 2 * _dense(
        batch * enc_len, cfg.emb_dim, cfg.joined_kv)
  return (fwd['total'] - cond.conditioner_flops + backward +
          3 * cond.conditioner_flops)


def peft_prefix_flops(cfg: T5Config, batch: int, num_virtual_tokens: int
                      ) -> int:
  """Forward FLOPs of PEFT's prefix encoder (`prefix_projection=True`).

  PEFT runs its reparametrisation MLP (Linear(token_dim -> d_model), tanh,
  Linear(d_model -> layers * 2 * token_dim)) on every example's copy of the
  virtual tokens, so it scales with the batch.
  """
  hd = cfg.joined_kv
  return _dense(batch * num_virtual_tokens, hd, cfg.emb_dim) + _dense(
      batch * num_virtual_tokens, cfg.emb_dim,
      cfg.num_decoder_layers * 2 * hd)


def decode_flops_per_token(cfg: T5Config, batch: int, inputs: int,
                           cond: Conditioned = Conditioned(),
                           position: int = 0) -> int:
  """Matmul FLOPs of one cached greedy step (one new token per example).

  With a cache, each step projects one query/key/value per layer and attends
  over the cache; cross-attention keys/values were projected once.
  """
  enc_len = inputs + cond.input_prompts
  per_layer = (
      _attention(cfg, batch, 1, position + 1, cond.decoder_prefix) +
      _attention(cfg, batch, 1, enc_len, cond.cross_prefix,
                 project_kv=False) +
      _mlp(cfg, batch) + _adapter(cfg, batch, cond.adapter_dim))
  return (cfg.num_decoder_layers * per_layer +
          _dense(batch, cfg.emb_dim, cfg.vocab_size))
