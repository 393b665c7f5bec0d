"""Pretrained checkpoints in t5x's legacy format and in orbax format.

The checkpoints are written here the way t5x writes them (msgpack + zarr
arrays through TensorStore; orbax PyTree with the train state under
`state/`), without t5x, and must load back to the very same parameters.
"""
import logging

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts

from hyperprompt import pretrained
from hyperprompt.conditioning.hyperprompt import HyperPromptGlobal
from hyperprompt.config import T5Config
from hyperprompt.network import Transformer

CONFIG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=12,
                  num_encoder_layers=2, num_decoder_layers=2, mlp_dim=24,
                  dropout_rate=0.0, relative_attention_num_buckets=8,
                  relative_attention_max_distance=16)
NUM_TASKS = 3


def conditioned():
  return Transformer(CONFIG, HyperPromptGlobal(
      num_tasks=NUM_TASKS, prompt_length=2, bottleneck=4, task_embed_dim=4,
      layer_task_dim=4))


def batch():
  rng = np.random.RandomState(0)
  enc = rng.randint(1, CONFIG.vocab_size, (2, 7)).astype(np.int32)
  dec = rng.randint(1, CONFIG.vocab_size, (2, 5)).astype(np.int32)
  enc[1, 5:] = 0
  return enc, dec, np.array([0, 2], np.int32)


def init(model, seed):
  enc, dec, task_ids = batch()
  return flax.core.unfreeze(model.init(
      jax.random.PRNGKey(seed), enc, dec, dec, task_ids,
      enable_dropout=False)['params'])


def logits(model, params):
  enc, dec, task_ids = batch()
  return np.asarray(model.apply({'params': params}, enc, dec, dec, task_ids,
                                enable_dropout=False))


def write_t5x_legacy(directory, params):
  """Writes `params` as t5x's Checkpointer does (checkpoints.py, VERSION 3).

  Partitioned arrays go to zarr directories named by their '.'-joined path,
  referenced from the msgpack by a relative TensorStore spec; unpartitioned
  ones (here the norms) are stored inline. One array carries the spec t5x
  writes on gs:// (dummy bucket, path on the spec) to show that only the
  relative name is used. The optimizer state is written too and ignored.
  """
  directory.mkdir(parents=True)

  def write_zarr(name, value, gcs=False):
    relative = name.replace('/', '.')
    metadata = {'compressor': {'id': 'gzip'}, 'shape': list(value.shape),
                'chunks': list(value.shape)}
    ts.open({'driver': 'zarr', 'dtype': value.dtype.name,
             'kvstore': {'driver': 'file', 'path': str(directory / relative)},
             'metadata': metadata}, create=True).result().write(value).result()
    if gcs:
      return {'driver': 'zarr', 'dtype': value.dtype.name,
              'kvstore': {'driver': 'gcs', 'bucket': 't5x-dummy-bucket'},
              'path': relative, 'metadata': metadata}
    return {'driver': 'zarr', 'dtype': value.dtype.name,
            'kvstore': {'driver': 'file', 'path': relative},
            'metadata': metadata}

  target = {}
  for i, (path, value) in enumerate(
      traverse_util.flatten_dict(params, sep='/').items()):
    value = np.asarray(value)
    if path.endswith('norm/scale'):
      target[path] = value
    else:
      target[path] = write_zarr('target/' + path, value, gcs=i == 0)
  embedding = np.asarray(params['token_embedder']['embedding'])
  state = {'step': np.int32(1000),
           'param_states': {'token_embedder': {'embedding': {
               'v_row': write_zarr(
                   'state/param_states/token_embedder/embedding/v_row',
                   np.ones(embedding.shape[:1], np.float32))}}}}
  contents = {'version': 3, 'optimizer': {
      'target': traverse_util.unflatten_dict(target, sep='/'),
      'state': state}}
  (directory / 'checkpoint').write_bytes(
      flax.serialization.msgpack_serialize(contents))


def write_t5x_orbax(directory, params):
  """t5x's orbax layout: the train state as a PyTree item 'state'."""
  tree = {'target': params,
          'state': {'step': np.int32(1000), 'param_states': jax.tree.map(
              jnp.zeros_like, params)}}
  ocp.PyTreeCheckpointer().save(directory / 'state', tree)


@pytest.fixture(scope='module')
def source():
  """A HyperPrompt model and its parameters, to be written and re-read."""
  model = conditioned()
  params = init(model, seed=1)
  return model, params, logits(model, params)


@pytest.mark.parametrize('write, name', [
    (write_t5x_legacy, 'checkpoint_1000'),
    (write_t5x_orbax, 'checkpoint_1000'),
    (lambda d, p: ocp.PyTreeCheckpointer().save(d, p), 'plain_orbax'),
])
def test_roundtrip_gives_identical_logits(tmp_path, source, write, name):
  model, params, expected = source
  write(tmp_path / name, params)
  template = init(model, seed=2)  # Different weights everywhere.
  loaded = pretrained.load_pretrained(tmp_path / name, template)
  flat = traverse_util.flatten_dict(loaded, sep='/')
  for path, value in traverse_util.flatten_dict(params, sep='/').items():
    np.testing.assert_array_equal(flat[path], value, err_msg=path)
  np.testing.assert_array_equal(logits(model, loaded), expected)


@pytest.mark.parametrize('write', [write_t5x_legacy, write_t5x_orbax])
def test_relative_paths_read_the_same_parameters(tmp_path, monkeypatch,
                                                 source, write):
  """A checkpoint named relative to the working directory, as a user types
  it after t5x wrote it, reads as by its absolute path."""
  _, params, _ = source
  write(tmp_path / 'run' / 'checkpoint_1000', params)
  monkeypatch.chdir(tmp_path)
  flat = pretrained.read_pretrained('run/checkpoint_1000')
  for path, value in traverse_util.flatten_dict(params, sep='/').items():
    np.testing.assert_array_equal(flat[path], value, err_msg=path)


def test_t5x_legacy_reads_msgpack_file_path_and_only_the_target(
    tmp_path, source):
  _, params, _ = source
  write_t5x_legacy(tmp_path / 'ckpt', params)
  flat = pretrained.read_t5x_legacy(tmp_path / 'ckpt' / 'checkpoint')
  assert set(flat) == set(traverse_util.flatten_dict(params, sep='/'))


def test_stock_checkpoint_into_hyperprompt_keeps_every_weight(
    tmp_path, caplog):
  """A plain T5 checkpoint fills the backbone bit for bit; the conditioner
  stays as initialised and is listed in the log."""
  plain = Transformer(CONFIG)
  stock = init(plain, seed=3)
  write_t5x_legacy(tmp_path / 'stock', stock)
  model = conditioned()
  template = init(model, seed=4)
  with caplog.at_level(logging.INFO):
    loaded = pretrained.load_pretrained(tmp_path / 'stock', template)
  flat = traverse_util.flatten_dict(loaded, sep='/')
  for path, value in traverse_util.flatten_dict(stock, sep='/').items():
    np.testing.assert_array_equal(flat[path], value, err_msg=path)
  fresh = traverse_util.flatten_dict(template['conditioner'], sep='/')
  assert fresh
  for path, value in fresh.items():
    np.testing.assert_array_equal(flat['conditioner/' + path], value)
    assert 'conditioner/' + path in caplog.text
  # The stock model's own outputs are unchanged by the transfer.
  backbone = {k: v for k, v in loaded.items() if k != 'conditioner'}
  enc, dec, _ = batch()
  np.testing.assert_array_equal(
      plain.apply({'params': backbone}, enc, dec, dec, enable_dropout=False),
      plain.apply({'params': stock}, enc, dec, dec, enable_dropout=False))


def test_another_conditioners_parameters_are_not_loaded_and_named(
    tmp_path, caplog):
  """Fine-tuning a HyperPrompt run with another conditioner (here none):
  the backbone comes from the run, its hypernetwork is named, not loaded;
  an unknown backbone parameter is still an error."""
  trained = init(conditioned(), seed=5)
  write_t5x_legacy(tmp_path / 'run', trained)
  template = init(Transformer(CONFIG), seed=6)
  with caplog.at_level(logging.WARNING):
    loaded = pretrained.load_pretrained(tmp_path / 'run', template)
  backbone = {k: v for k, v in trained.items() if k != 'conditioner'}
  assert set(loaded) == set(backbone)
  for path, value in traverse_util.flatten_dict(backbone, sep='/').items():
    np.testing.assert_array_equal(
        traverse_util.flatten_dict(loaded, sep='/')[path], value)
  for path in traverse_util.flatten_dict(trained['conditioner'], sep='/'):
    assert 'conditioner/' + path in caplog.text
  extra = dict(trained, extra={'kernel': np.ones(2, np.float32)})
  write_t5x_legacy(tmp_path / 'extra', extra)
  with pytest.raises(ValueError, match='not in the model: extra/kernel'):
    pretrained.load_pretrained(tmp_path / 'extra', template)


def test_mismatched_checkpoint_names_the_parameter(tmp_path):
  stock = init(Transformer(CONFIG), seed=3)
  del stock['decoder']['layers_1']['mlp']['wo']
  write_t5x_legacy(tmp_path / 'ckpt', stock)
  with pytest.raises(ValueError, match='decoder/layers_1/mlp/wo/kernel'):
    pretrained.load_pretrained(tmp_path / 'ckpt', init(conditioned(), 0))


def test_detect_format(tmp_path, source):
  _, params, _ = source
  write_t5x_legacy(tmp_path / 'legacy', params)
  write_t5x_orbax(tmp_path / 't5x_orbax', params)
  (tmp_path / 'hf').mkdir()
  (tmp_path / 'hf' / 'config.json').write_text('{}')
  (tmp_path / 'empty').mkdir()
  assert pretrained.detect_format(tmp_path / 'legacy') == 't5x'
  assert pretrained.detect_format(tmp_path / 'legacy' / 'checkpoint') == 't5x'
  assert pretrained.detect_format(tmp_path / 't5x_orbax') == 'orbax'
  assert pretrained.detect_format(tmp_path / 'hf') == 'hf'
  with pytest.raises(ValueError, match='not a checkpoint this project reads'):
    pretrained.detect_format(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError):
    pretrained.detect_format(tmp_path / 'nowhere')


def test_orbax_without_t5_parameters_is_a_clear_error(tmp_path):
  ocp.PyTreeCheckpointer().save(tmp_path / 'other',
                                {'weights': np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match='Found no T5 parameters'):
    pretrained.read_orbax(tmp_path / 'other')
