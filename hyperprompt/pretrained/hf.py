"""Hugging Face `transformers` T5 directories (safetensors or a PyTorch
state dict), renamed into our flat parameter paths."""
import io
import json
from typing import Any, Dict, Mapping

from etils import epath
import numpy as np

from hyperprompt.config import T5Config
from hyperprompt.pretrained.merge import Flat, merge_pretrained

_HF_ATTENTION = {'q': 'query', 'k': 'key', 'v': 'value', 'o': 'out'}


def _hf_layer_names(stack: str, sublayer: int):
  """(HF module name, our module name) for sublayer `sublayer` of a block."""
  if stack == 'encoder':
    return [('SelfAttention', 'attention', 'pre_attention_layer_norm'),
            ('DenseReluDense', 'mlp', 'pre_mlp_layer_norm')][sublayer]
  return [('SelfAttention', 'self_attention', 'pre_self_attention_layer_norm'),
          ('EncDecAttention', 'encoder_decoder_attention',
           'pre_cross_attention_layer_norm'),
          ('DenseReluDense', 'mlp', 'pre_mlp_layer_norm')][sublayer]


def hf_to_flat(state_dict: Mapping[str, np.ndarray]) -> Flat:
  """Renames a transformers T5 state dict into our flat parameter paths.

  torch Linear weights are [out, in]; our kernels are [in, out], hence the
  transposes. HF's relative bias table is [buckets, heads]; ours is
  [heads, buckets].
  """
  out: Flat = {}
  unknown = []
  for name, value in state_dict.items():
    value = np.asarray(value)
    parts = name.split('.')
    if name == 'shared.weight':
      out['token_embedder/embedding'] = value
    elif name in ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight'):
      # T5 shares one input embedding; ours has only token_embedder.
      if ('shared.weight' in state_dict and not np.array_equal(
          value, np.asarray(state_dict['shared.weight']))):
        raise ValueError(
            f'{name} differs from shared.weight; T5 (and this model) has one '
            'input embedding for the encoder and decoder.')
    elif name == 'lm_head.weight':
      out['decoder/logits_dense/kernel'] = value.T
    elif parts[0] in ('encoder', 'decoder') and parts[1] == 'final_layer_norm':
      out[f'{parts[0]}/{parts[0]}_norm/scale'] = value
    elif parts[0] in ('encoder', 'decoder') and parts[1] == 'block':
      stack, block, sublayer = parts[0], int(parts[2]), int(parts[4])
      hf_module, ours, norm = _hf_layer_names(stack, sublayer)
      prefix = f'{stack}/layers_{block}'
      if parts[5] == 'layer_norm':
        out[f'{prefix}/{norm}/scale'] = value
      elif parts[5] == hf_module and parts[6] == 'relative_attention_bias':
        out[f'{stack}/relpos_bias/rel_embedding'] = value.T
      elif parts[5] == hf_module and parts[6] in _HF_ATTENTION:
        out[f'{prefix}/{ours}/{_HF_ATTENTION[parts[6]]}/kernel'] = value.T
      elif parts[5] == hf_module and parts[6] in ('wi', 'wi_0', 'wi_1', 'wo'):
        out[f'{prefix}/mlp/{parts[6]}/kernel'] = value.T
      else:
        unknown.append(name)
    else:
      unknown.append(name)
  if unknown:
    raise ValueError('Unrecognised parameters in the Hugging Face checkpoint: '
                     + ', '.join(unknown))
  return out


def read_hf_state_dict(path: epath.PathLike) -> Dict[str, np.ndarray]:
  """Reads `model.safetensors` or `pytorch_model.bin` from a directory."""
  path = epath.Path(path)
  safetensors_file = path / 'model.safetensors'
  torch_file = path / 'pytorch_model.bin'
  if safetensors_file.exists():
    from safetensors.numpy import load  # pylint: disable=g-import-not-at-top
    return load(safetensors_file.read_bytes())
  if torch_file.exists():
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f'{torch_file} is a PyTorch file; install torch to '
                        'read it, or save the model with safetensors.') from e
    state = torch.load(io.BytesIO(torch_file.read_bytes()), map_location='cpu',
                       weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}
  raise FileNotFoundError(
      f'No model.safetensors or pytorch_model.bin in {str(path)!r}.')


def hf_config(path: epath.PathLike, **overrides) -> T5Config:
  """T5Config from a transformers `config.json` (v1.0 or v1.1)."""
  hf = json.loads((epath.Path(path) / 'config.json').read_text())
  act = hf.get('feed_forward_proj', 'relu')
  gated = act.startswith('gated-')
  act = act.removeprefix('gated-')
  if act not in ('relu', 'gelu', 'gelu_new'):
    raise ValueError(f'Unsupported feed_forward_proj {hf["feed_forward_proj"]}')
  act = 'gelu' if act.startswith('gelu') else act
  kwargs = dict(
      vocab_size=hf['vocab_size'], emb_dim=hf['d_model'],
      num_heads=hf['num_heads'], head_dim=hf['d_kv'],
      num_encoder_layers=hf['num_layers'],
      num_decoder_layers=hf.get('num_decoder_layers') or hf['num_layers'],
      mlp_dim=hf['d_ff'],
      mlp_activations=(act, 'linear') if gated else (act,),
      dropout_rate=hf.get('dropout_rate', 0.1),
      # transformers < 5 marks T5.1.1 by tie_word_embeddings=False (separate,
      # unscaled lm_head); transformers 5 always ties and says
      # scale_decoder_outputs=False instead.
      logits_via_embedding=hf.get('scale_decoder_outputs',
                                  hf.get('tie_word_embeddings', True)),
      relative_attention_num_buckets=hf['relative_attention_num_buckets'],
      relative_attention_max_distance=hf.get(
          'relative_attention_max_distance', 128),
      layer_norm_epsilon=hf.get('layer_norm_epsilon', 1e-6))
  kwargs.update(overrides)
  return T5Config(**kwargs)


def read_hf(path: epath.PathLike) -> Flat:
  """A transformers T5 directory as flat arrays in our naming."""
  return hf_to_flat(read_hf_state_dict(path))


def load_hf(path: epath.PathLike,
            template: Mapping[str, Any]) -> Dict[str, Any]:
  """Loads a transformers T5 directory into a params tree like `template`."""
  flat = read_hf(path)
  logits = 'decoder/logits_dense/kernel'
  if logits not in flat and 'logits_dense' in template.get('decoder', {}):
    hf = json.loads((epath.Path(path) / 'config.json').read_text())
    if hf.get('tie_word_embeddings') is False:
      raise ValueError(
          f'{str(path)!r} has no lm_head.weight, but its config.json says '
          'tie_word_embeddings: false (a separate output layer, as in '
          'T5.1.1). The checkpoint is incomplete; save it again with its '
          'lm_head.')
    # transformers 5 saves an unscaled output layer tied to `shared` and
    # leaves lm_head.weight out of the file.
    flat[logits] = flat['token_embedder/embedding'].T
  return merge_pretrained(template, flat, source=str(path))
