"""What a user would pick instead: Hugging Face transformers T5 and PEFT.

The same shapes as ours (built from the same `T5Config`), random weights (no
downloads), the same batch and dropout rate, timed the same way. The
optimizers differ: the peers train with AdamW (PyTorch's foreach
implementation, the usual choice there), ours with Adafactor (T5.1.1's
recipe). PyTorch uses every core (`torch.set_num_threads(os.cpu_count())`).

A T5.1.1 model is untied as the hub's checkpoints are: its own `lm_head`
apart from the `shared` input embedding. transformers 5 ignores
`tie_word_embeddings=False` in T5Config's constructor, so `hf_model` writes
the model directory as a hub checkpoint is written (`tie_word_embeddings:
false` and an `lm_head.weight`) and loads it with `from_pretrained`, as a
user would.

Each peer's FLOPs come from its own model (`step_flops`): full fine-tuning
for transformers, a frozen backbone with prefixes in the decoder's
self-attention for PEFT.
"""
import json
import os
import pathlib
import tempfile
from typing import Dict

import numpy as np

from bench import flops as flops_lib
from bench import timing
from hyperprompt.config import T5Config


def _torch():
  import torch
  torch.set_num_threads(os.cpu_count())
  return torch


def hf_model(cfg: T5Config, seed: int = 0):
  """A random `T5ForConditionalGeneration` with the shapes of `cfg`."""
  torch = _torch()
  import transformers
  if cfg.mlp_activations not in (('gelu', 'linear'), ('relu',)):
    raise ValueError(f'No transformers equivalent of {cfg.mlp_activations}.')
  gated = len(cfg.mlp_activations) == 2
  torch.manual_seed(seed)
  config = transformers.T5Config(
      vocab_size=cfg.vocab_size, d_model=cfg.emb_dim, d_kv=cfg.head_dim,
      d_ff=cfg.mlp_dim, num_layers=cfg.num_encoder_layers,
      num_decoder_layers=cfg.num_decoder_layers, num_heads=cfg.num_heads,
      relative_attention_num_buckets=cfg.relative_attention_num_buckets,
      relative_attention_max_distance=cfg.relative_attention_max_distance,
      dropout_rate=cfg.dropout_rate,
      feed_forward_proj='gated-gelu' if gated else 'relu',
      tie_word_embeddings=cfg.logits_via_embedding,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  if cfg.logits_via_embedding:
    return transformers.T5ForConditionalGeneration(config)
  config.tie_word_embeddings = False  # After the constructor forced True.
  model = transformers.T5ForConditionalGeneration(config)
  # Setting it unties the input embeddings too; T5.1.1 shares those.
  model.set_input_embeddings(model.shared)
  with tempfile.TemporaryDirectory() as path:
    model.save_pretrained(path)
    config_file = pathlib.Path(path) / 'config.json'
    saved = json.loads(config_file.read_text())
    saved.pop('scale_decoder_outputs', None)  # Not in hub T5.1.1 configs.
    config_file.write_text(json.dumps(saved))
    model = transformers.T5ForConditionalGeneration.from_pretrained(path)
  if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
    raise RuntimeError('transformers tied lm_head to shared for an untied '
                       'T5.1.1 config; the baseline would not be T5.1.1.')
  return model


def step_flops(cfg: T5Config, batch: int, inputs: int, targets: int,
               peft_prefix: int = 0) -> int:
  """Analytic matmul FLOPs of the peer's training step (bench/flops.py)."""
  if not peft_prefix:
    return flops_lib.train_step_flops(cfg, batch, inputs, targets)
  return flops_lib.frozen_backbone_step_flops(
      cfg, batch, inputs, targets, flops_lib.Conditioned(
          decoder_prefix=peft_prefix,
          conditioner_flops=flops_lib.peft_prefix_flops(cfg, batch,
                                                        peft_prefix)))


def train(cfg: T5Config, batch: Dict[str, np.ndarray], *, precision: str,
          peft_prefix: int = 0, warmup: int = 2, steps: int = 5) -> Dict:
  """Times training steps (`train_job`) alone."""
  return timing.run(train_job(cfg, batch, precision=precision,
                              peft_prefix=peft_prefix), warmup, steps)


def train_job(cfg: T5Config, batch: Dict[str, np.ndarray], *, precision: str,
              peft_prefix: int = 0,
              learning_rate: float = 1e-3) -> timing.Timed:
  """Training steps (forward, loss, backward, AdamW update) ready to time.

  Args:
    precision: 'float32', or 'bfloat16' for `torch.autocast` (weights and
      optimizer state stay float32, the usual mixed-precision recipe).
    peft_prefix: if > 0, PEFT prefix tuning with this many virtual tokens,
      its reparametrisation MLP on, backbone frozen (PEFT's setting).
  """
  torch = _torch()
  model = hf_model(cfg)
  if peft_prefix:
    import peft
    model = peft.get_peft_model(model, peft.PrefixTuningConfig(
        task_type='SEQ_2_SEQ_LM', num_virtual_tokens=peft_prefix,
        prefix_projection=True, encoder_hidden_size=cfg.emb_dim,
        # PEFT infers the key width as d_model, wrong for T5.1.1 where
        # heads * d_kv != d_model (384 vs 512 in small): set it.
        token_dim=cfg.joined_kv, num_attention_heads=cfg.num_heads))
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(params, lr=learning_rate, foreach=True)
  inputs = {
      'input_ids': torch.tensor(batch['encoder_input_tokens'],
                                dtype=torch.long),
      'attention_mask': torch.tensor(batch['encoder_input_tokens'] > 0,
                                     dtype=torch.long),
      'decoder_input_ids': torch.tensor(batch['decoder_input_tokens'],
                                        dtype=torch.long),
      'labels': torch.tensor(np.where(batch['decoder_target_tokens'] > 0,
                                      batch['decoder_target_tokens'], -100),
                             dtype=torch.long),
  }
  autocast = torch.autocast('cpu', dtype=torch.bfloat16,
                            enabled=precision == 'bfloat16')

  def step():
    with autocast:
      loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

  b, length = batch['encoder_input_tokens'].shape
  return timing.Timed(step, lambda times: {
      **timing.summary(times),
      'trainable_params': sum(p.numel() for p in params),
      'total_params': sum(p.numel() for p in model.parameters()),
      'analytic_flops': step_flops(cfg, b, length,
                                   batch['decoder_target_tokens'].shape[1],
                                   peft_prefix),
  })


def generate(cfg: T5Config, batch: Dict[str, np.ndarray], *,
             new_tokens: int, warmup: int = 1, steps: int = 3) -> Dict:
  """Times greedy `generate` (`generate_job`) alone."""
  return timing.run(generate_job(cfg, batch, new_tokens=new_tokens), warmup,
                    steps)


def generate_job(cfg: T5Config, batch: Dict[str, np.ndarray], *,
                 new_tokens: int) -> timing.Timed:
  """Greedy `generate` with the KV cache, exactly `new_tokens` tokens, ready
  to time; a step is a whole `generate`."""
  torch = _torch()
  model = hf_model(cfg).eval()
  input_ids = torch.tensor(batch['encoder_input_tokens'], dtype=torch.long)
  mask = (input_ids > 0).long()
  out = {}

  def step():
    with torch.inference_mode():
      out['tokens'] = model.generate(
          input_ids=input_ids, attention_mask=mask, do_sample=False,
          num_beams=1, use_cache=True, max_new_tokens=new_tokens,
          min_new_tokens=new_tokens)

  return timing.Timed(step, lambda times: {
      **timing.summary(times),
      # The decoder start token is returned as the first column.
      'generated_length': int(out['tokens'].shape[1] - 1),
  })
