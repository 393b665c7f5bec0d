"""Where a conditioner acts: which layers, which attention, and how stacked
per-site arrays become a `Conditioning`.

Conditioners compute one array for all their sites at once (a leading
`[..., M, ...]` axis), which keeps the hypernetworks a handful of einsums; the
functions here split that axis back into the per-layer `LayerConditioning`s
the network reads.

A *site* is one prompted attention: `(stack, kind, layer)` with stack
'encoder' or 'decoder' and kind 'self' or 'cross'. Sites are ordered encoder
self-attention, decoder self-attention, decoder cross-attention, each by
layer; METHOD.md's `M` is the number of sites (encoder and decoder layers
counted separately, and cross-attentions, when prompted, as sites of their
own with their own local hypernetworks and layer embeddings).
"""
from typing import Dict, NamedTuple, Tuple

import jax

from hyperprompt.conditioning.interface import (Conditioning,
                                                LayerConditioning)
from hyperprompt.config import T5Config

PLACEMENTS = ('encoder', 'decoder', 'both')
# Every (stack, kind) of prompted attention, in site order.
SITE_KINDS = (('encoder', 'self'), ('decoder', 'self'), ('decoder', 'cross'))


class Site(NamedTuple):
  stack: str  # 'encoder' or 'decoder'
  kind: str  # 'self' or 'cross'
  layer: int


def conditioned_layers(config: T5Config,
                       placement: str) -> Tuple[Tuple[str, int], ...]:
  """(stack, layer) pairs for 'encoder', 'decoder' or 'both'."""
  if placement not in PLACEMENTS:
    raise ValueError(f'placement must be one of {PLACEMENTS}, got '
                     f'{placement!r}.')
  layers = []
  if placement in ('encoder', 'both'):
    layers += [('encoder', i) for i in range(config.num_encoder_layers)]
  if placement in ('decoder', 'both'):
    layers += [('decoder', i) for i in range(config.num_decoder_layers)]
  return tuple(layers)


def prompt_sites(config: T5Config, placement: str,
                 cross_attention: bool) -> Tuple[Site, ...]:
  """Prompted attentions: self-attention of the placed layers, and
  (optionally) the cross-attention of every decoder layer."""
  sites = [Site(stack, 'self', i)
           for stack, i in conditioned_layers(config, placement)]
  if cross_attention:
    sites += [Site('decoder', 'cross', i)
              for i in range(config.num_decoder_layers)]
  return tuple(sites)


def _assemble(config: T5Config,
              per_layer: Dict[Tuple[str, int], dict]) -> Conditioning:
  make = lambda stack, n: tuple(
      LayerConditioning(**per_layer.get((stack, i), {})) for i in range(n))
  return Conditioning(encoder=make('encoder', config.num_encoder_layers),
                      decoder=make('decoder', config.num_decoder_layers))


def prefix_conditioning(config: T5Config, sites: Tuple[Site, ...],
                        keys: jax.Array, values: jax.Array) -> Conditioning:
  """keys, values [batch, M, l, heads, head_dim] -> per-layer prefixes."""
  per_layer = {}
  for m, site in enumerate(sites):
    per_layer.setdefault((site.stack, site.layer), {})[
        f'{site.kind}_prefix'] = (keys[:, m], values[:, m])
  return _assemble(config, per_layer)


def adapter_conditioning(config: T5Config,
                         layers: Tuple[Tuple[str, int], ...],
                         adapters: Dict[str, jax.Array],
                         task_ids: jax.Array) -> Conditioning:
  """adapters {name: [T, L, ...]} per task, task_ids [batch] -> one adapter
  dict {name: [T, ...]} per layer, with the task ids (each layer gathers its
  examples' weights itself; interface.apply_adapter)."""
  per_layer = {
      layer: {'adapter': {name: w[:, j] for name, w in adapters.items()},
              'adapter_task_ids': task_ids}
      for j, layer in enumerate(layers)
  }
  return _assemble(config, per_layer)
