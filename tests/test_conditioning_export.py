"""Export -> Precomputed, prefix-tuning collapse, and prompt-tuning
initialisers: each gives exactly what the model or the recipe says."""
import gin
import jax
import numpy as np
import pytest

from hyperprompt import checkpoints
from hyperprompt import export
from hyperprompt.conditioning import precomputed
from hyperprompt.conditioning import prefix_tuning
from hyperprompt.conditioning import prompt_tuning
from hyperprompt.config import T5Config
from hyperprompt.network import Transformer

import conditioning_models as cm


def _logits(model, params):
  return np.asarray(cm.logits_fn(model)(params, *cm.batch(batch_size=9)))


def _with_backbone(params, backbone_params):
  """`params` with every non-conditioner subtree from `backbone_params`."""
  return dict(backbone_params, conditioner=params['conditioner'])


@pytest.mark.parametrize('name', ['global', 'prefix_tuning'])
def test_exported_prefixes_served_by_precomputed_give_same_logits(
    name, tmp_path):
  source = cm.model(name)
  params = cm.params(name)
  prefixes = export.export_prefixes(source, params)
  path = str(tmp_path / 'prefixes.npz')
  precomputed.save_prefixes(path, prefixes)

  served = Transformer(cm.CONFIG, precomputed.Precomputed(cm.NUM_TASKS, path))
  served_params = cm.init(served, seed=1)
  # The prefixes are params initialised from the file.
  assert set(served_params['conditioner']) == set(prefixes)
  for key, value in prefixes.items():
    np.testing.assert_array_equal(served_params['conditioner'][key], value)
  served_params = _with_backbone(served_params, params)
  np.testing.assert_allclose(_logits(served, served_params),
                             _logits(source, params), atol=1e-6, rtol=1e-6)


def test_export_file_layout():
  source = cm.model('global')  # Both stacks, and cross-attention.
  prefixes = export.export_prefixes(source, cm.params('global'))
  c = cm.CONFIG
  shape = lambda layers: (cm.NUM_TASKS, layers, 3, c.num_heads, c.head_dim)
  assert {k: v.shape for k, v in prefixes.items()} == {
      'encoder_self_key': shape(c.num_encoder_layers),
      'encoder_self_value': shape(c.num_encoder_layers),
      'decoder_self_key': shape(c.num_decoder_layers),
      'decoder_self_value': shape(c.num_decoder_layers),
      'decoder_cross_key': shape(c.num_decoder_layers),
      'decoder_cross_value': shape(c.num_decoder_layers),
  }


def test_export_rejects_a_conditioner_without_prefixes():
  with pytest.raises(ValueError, match='not key/value prefixes'):
    export.export_prefixes(cm.model('adapters'), cm.params('adapters'))


def test_export_without_prefixes_is_refused_and_the_old_file_kept(tmp_path):
  from hyperprompt.conditioning import none  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'prefixes.npz'
  precomputed.save_prefixes(
      str(path), export.export_prefixes(cm.model('share'), cm.params('share')))
  good = path.read_bytes()
  vanilla = Transformer(cm.CONFIG, none.NoConditioning(cm.NUM_TASKS))
  with pytest.raises(ValueError, match='NoConditioning produces no key/value '
                     'prefixes'):
    export.export_prefixes(vanilla, cm.init(vanilla))
  with pytest.raises(ValueError, match='No prefixes to write'):
    precomputed.save_prefixes(str(path), {})
  assert path.read_bytes() == good
  assert [p.name for p in tmp_path.iterdir()] == ['prefixes.npz']


def test_prefix_file_records_its_tasks_checked_against_the_mixture(tmp_path):
  path = str(tmp_path / 'prefixes.npz')
  names = ['hp_a', 'hp_b', 'hp_c']
  precomputed.save_prefixes(
      path, export.export_prefixes(cm.model('share'), cm.params('share')),
      names)
  assert precomputed.load_task_names(path) == names
  assert set(precomputed.load_prefixes(path)) <= set(precomputed.NAMES)
  precomputed.check_task_names(path, names)
  with pytest.raises(ValueError, match=r"prefixes of the tasks \['hp_a', "
                     r"'hp_b', 'hp_c'\], but this run's mixture has "
                     r"\['hp_b', 'hp_a', 'hp_c'\]"):
    precomputed.check_task_names(path, ['hp_b', 'hp_a', 'hp_c'])
  with pytest.raises(ValueError, match='2 task names for 3 tasks'):
    precomputed.save_prefixes(path, precomputed.load_prefixes(path),
                              names[:2])


def test_precomputed_rejects_prefixes_of_another_model(tmp_path):
  path = str(tmp_path / 'prefixes.npz')
  precomputed.save_prefixes(
      path, export.export_prefixes(cm.model('share'), cm.params('share')))
  other = T5Config(**{**cm.CONFIG.__dict__, 'num_heads': 4})
  with pytest.raises(ValueError, match=r'encoder_self_key has shape'):
    cm.init(Transformer(other, precomputed.Precomputed(cm.NUM_TASKS, path)))


def test_export_cli_writes_the_checkpoints_prefixes(tmp_path, monkeypatch):
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      [f'{export.gin_cli.GIN_DIR}/models/sizes/tiny.gin',
       f'{export.gin_cli.GIN_DIR}/models/conditioners/hyperprompt_sep.gin'],
      ['NUM_TASKS = 2', 'hyperprompt.HyperPromptSep.prompt_length = 2'])
  model = export.gin_cli.transformer()
  gin.clear_config()
  params = jax.tree.map(np.asarray, cm.init(model))
  restored = []
  def fake_restore(directory, step=None, expected_params=None):
    # export compares the configured model's tree with the checkpoint's.
    assert checkpoints.tree_differences(params, expected_params) == []
    restored.append((directory, step))
    return params
  monkeypatch.setattr(checkpoints, 'restore_params', fake_restore)
  output = str(tmp_path / 'out.npz')
  export.main([
      '--gin_file=models/sizes/tiny.gin',
      '--gin_file=models/conditioners/hyperprompt_sep.gin',
      '--gin.NUM_TASKS=2', '--gin.hyperprompt.HyperPromptSep.prompt_length=2',
      '--checkpoint=/some/model_dir', '--step=7', f'--output={output}'])
  gin.clear_config()
  assert restored == [('/some/model_dir', 7)]
  written = precomputed.load_prefixes(output)
  expected = export.export_prefixes(model, params)
  assert set(written) == set(expected)
  for key in expected:
    np.testing.assert_array_equal(written[key], expected[key])


def test_prefix_tuning_collapse_gives_same_logits():
  source = cm.model('prefix_tuning')
  params = cm.params('prefix_tuning')
  collapsed = prefix_tuning.collapse(source, params)
  # Only the prefixes are left: no MLP, no P'.
  assert set(collapsed['conditioner']) == set(precomputed.NAMES)
  served = Transformer(cm.CONFIG, precomputed.Precomputed(cm.NUM_TASKS))
  np.testing.assert_allclose(_logits(served, collapsed),
                             _logits(source, params), atol=1e-6, rtol=1e-6)


def _prompt_tuning_params():
  return cm.params('prompt_tuning')


def test_prompt_tuning_default_init_is_uniform_half():
  prompts = np.asarray(_prompt_tuning_params()['conditioner']['prompts'])
  assert prompts.shape == (cm.NUM_TASKS, 4, cm.CONFIG.emb_dim)
  assert prompts.min() >= -0.5 and prompts.max() <= 0.5
  assert prompts.min() < -0.3 and prompts.max() > 0.3  # Not a narrower law.


def test_prompts_from_vocab_are_embeddings_of_common_tokens():
  params = _prompt_tuning_params()
  new = prompt_tuning.init_prompts_from_vocab(params, jax.random.PRNGKey(0),
                                              num_tokens=10)
  table = np.asarray(params['token_embedder']['embedding'])
  prompts = np.asarray(new['conditioner']['prompts'])
  for task in prompts:
    ids = [int(np.flatnonzero((table == row).all(axis=1))[0]) for row in task]
    assert all(i < 10 for i in ids)
    assert len(set(ids)) == len(ids)  # Without replacement within a task.
  # Nothing else changed.
  jax.tree.map(np.testing.assert_array_equal,
               {k: v for k, v in params.items() if k != 'conditioner'},
               {k: v for k, v in new.items() if k != 'conditioner'})
  with pytest.raises(ValueError, match='exceeds the vocabulary'):
    prompt_tuning.init_prompts_from_vocab(params, jax.random.PRNGKey(0),
                                          num_tokens=5000)


def test_prompts_from_labels_are_label_embeddings():
  params = _prompt_tuning_params()
  labels = [[[5], [7, 9]], [], [[11, 12, 13]]]
  new = prompt_tuning.init_prompts_from_labels(params, labels)
  table = np.asarray(params['token_embedder']['embedding'])
  old = np.asarray(params['conditioner']['prompts'])
  prompts = np.asarray(new['conditioner']['prompts'])
  np.testing.assert_allclose(prompts[0, 0], table[5])
  np.testing.assert_allclose(prompts[0, 1], (table[7] + table[9]) / 2)
  np.testing.assert_allclose(prompts[2, 0], table[11:14].mean(axis=0),
                             rtol=1e-6)
  # Positions after the labels, and label-less tasks, are unchanged.
  np.testing.assert_array_equal(prompts[0, 2:], old[0, 2:])
  np.testing.assert_array_equal(prompts[1], old[1])
  np.testing.assert_array_equal(prompts[2, 1:], old[2, 1:])
  with pytest.raises(ValueError, match='2 tasks'):
    prompt_tuning.init_prompts_from_labels(params, labels[:2])
