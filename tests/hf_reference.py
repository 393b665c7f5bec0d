"""Tiny random Hugging Face T5 models, saved to disk, as numerical references.

The v1.1 model is untied as T5.1.1 checkpoints on the hub are: its own
`lm_head.weight`, different from `shared.weight`, and `tie_word_embeddings:
false` in config.json. (transformers 5 ignores `tie_word_embeddings=False`
in T5Config's constructor and ties the output layer to the embedding, which
would let an importer that loads `shared` into `logits_dense` pass; set
after the constructor, it unties the input embeddings too, which T5.1.1
does not.)
Sequences are longer than `relative_attention_max_distance`, so the
relative-position buckets' distance clamp is exercised.
"""
import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

# One v1.1-style and one v1.0-style model; heads * d_kv != d_model in both.
HF_CONFIGS = {
    'v1_1': dict(feed_forward_proj='gated-gelu', tie_word_embeddings=False,
                 d_model=32, d_kv=12, num_heads=4, d_ff=40, num_layers=2,
                 num_decoder_layers=3),
    'v1_0': dict(feed_forward_proj='relu', tie_word_embeddings=True,
                 d_model=24, d_kv=8, num_heads=2, d_ff=48, num_layers=2,
                 num_decoder_layers=2),
}


def save_random_hf_t5(path, variant: str, seed: int = 0):
  """Writes a random `T5ForConditionalGeneration` to `path`; returns it."""
  torch.manual_seed(seed)
  config = transformers.T5Config(
      vocab_size=67, relative_attention_num_buckets=8,
      relative_attention_max_distance=20, dropout_rate=0.0,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
      **HF_CONFIGS[variant])
  untied = not HF_CONFIGS[variant]['tie_word_embeddings']
  if untied:
    # After the constructor, which forces True (see the module docstring).
    config.tie_word_embeddings = False
  model = transformers.T5ForConditionalGeneration(config).eval()
  if untied:
    # transformers 5 also unties the encoder's and decoder's input
    # embeddings from `shared`; T5.1.1 shares them (only lm_head is apart).
    model.set_input_embeddings(model.shared)
  # Random init leaves some tensors at constants; perturb all of them so a
  # mapping error cannot hide behind a symmetric value.
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  if untied:
    if (model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
        or torch.equal(model.lm_head.weight, model.shared.weight)):
      raise AssertionError('The v1_1 reference has lm_head tied to shared.')
  model.save_pretrained(str(path))
  if untied:
    # A hub T5.1.1 config.json says tie_word_embeddings: false and has no
    # transformers-5 'scale_decoder_outputs' key.
    config_file = pathlib.Path(path) / 'config.json'
    saved = json.loads(config_file.read_text())
    saved.pop('scale_decoder_outputs', None)
    assert saved['tie_word_embeddings'] is False
    config_file.write_text(json.dumps(saved))
  return model


def padded_batch(vocab_size: int, seed: int = 0):
  """Inputs/targets of different lengths per example, zero-padded.

  The longest are longer than relative_attention_max_distance (20).
  """
  rng = np.random.default_rng(seed)
  inputs = np.zeros((3, 45), np.int32)
  targets = np.zeros((3, 27), np.int32)
  for i, (n_in, n_out) in enumerate([(45, 27), (23, 3), (2, 22)]):
    inputs[i, :n_in] = rng.integers(2, vocab_size, n_in)
    targets[i, :n_out] = rng.integers(2, vocab_size, n_out)
  decoder_inputs = np.pad(targets[:, :-1], [(0, 0), (1, 0)])
  return inputs, decoder_inputs, targets


def hf_logits(model, inputs, decoder_inputs, targets) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.tensor(inputs, dtype=torch.long),
                attention_mask=torch.tensor(inputs > 0, dtype=torch.long),
                decoder_input_ids=torch.tensor(decoder_inputs,
                                               dtype=torch.long),
                decoder_attention_mask=torch.tensor(
                    np.pad(targets[:, :-1] > 0, [(0, 0), (1, 0)],
                           constant_values=True), dtype=torch.long))
  return out.logits.numpy()
