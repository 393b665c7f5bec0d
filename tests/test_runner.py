"""The command line: gin files resolve from the search path; bad gin fails
fast naming the file; missing macros are reported by name."""
import gin
import pytest

from hyperprompt import gin_cli
from hyperprompt import main


def test_gin_flags_are_split_like_t5x():
  files, bindings, rest = gin_cli.split_gin_flags(
      ['--gin_file=a.gin', '--gin_file', 'b.gin', '--gin.MODEL_DIR="/x"',
       '--other=1'])
  assert files == ['a.gin', 'b.gin']
  assert bindings == ['MODEL_DIR="/x"']
  assert rest == ['--other=1']


def test_run_files_resolve_and_bindings_override():
  gin_cli.parse_gin(['models/sizes/tiny.gin',
                  'models/conditioners/hyperprompt_global.gin',
                  'runs/demo.gin'], ['TRAIN_STEPS=7', 'MODEL_DIR="/tmp/x"'])
  assert gin.query_parameter('%TRAIN_STEPS') == 7
  # NUM_TASKS is derived from the mixture (hp_synthetic, 9 tasks).
  assert gin.query_parameter('hyperprompt.HyperPromptGlobal.num_tasks'
                             ).scoped_configurable_fn() == 9
  gin.clear_config()


def test_unknown_name_fails_with_the_file(tmp_path):
  bad = tmp_path / 'bad.gin'
  bad.write_text('from __gin__ import dynamic_registration\n'
                 'from hyperprompt import runner\n'
                 'runner.train.no_such_argument = 1\n')
  with pytest.raises(SystemExit, match=f'Error in gin file {bad}.*'
                     'no_such_argument'):
    gin_cli.parse_gin(['models/sizes/tiny.gin', str(bad)], [])
  gin.clear_config()


def test_missing_macro_is_named():
  with pytest.raises(SystemExit, match='MODEL_DIR.*REQUIRED'):
    main.run('train', ['--gin_file=models/sizes/tiny.gin',
                       '--gin_file=models/conditioners/none.gin',
                       '--gin_file=runs/train.gin', '--gin.NUM_TASKS=9'])
  gin.clear_config()


def test_missing_tool_module_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(main.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(SystemExit, match='hyperprompt.analyze'):
    main.console_main(['analyze'])


def test_initial_checkpoint_keeps_the_fresh_conditioner(tmp_path):
  """INITIAL_CHECKPOINT_PATH: backbone from the checkpoint, conditioner as
  initialised (not zeros, not anything from the checkpoint)."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from flax import traverse_util
  import hf_reference
  from hyperprompt import pretrained, train_state
  from hyperprompt.conditioning.hyperprompt import HyperPromptGlobal
  from hyperprompt.network import Transformer

  hf_reference.save_random_hf_t5(tmp_path, 'v1_1')
  config = pretrained.hf_config(str(tmp_path), dropout_rate=0.0)
  model = Transformer(config, HyperPromptGlobal(num_tasks=3, prompt_length=2,
                                                bottleneck=4))
  tokens = np.ones((1, 4), np.int32)
  params = jax.eval_shape(
      functools.partial(model.init, enable_dropout=False),
      jax.random.PRNGKey(0), tokens, tokens, tokens, np.zeros(1, np.int32))
  params = jax.tree.map(
      lambda x: np.random.default_rng(0).normal(size=x.shape).astype(x.dtype),
      params['params'])
  shardings = jax.tree.map(
      lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), params)
  loaded = train_state.load_pretrained(str(tmp_path), params, shardings)

  flat = traverse_util.flatten_dict(jax.device_get(loaded), sep='/')
  fresh = traverse_util.flatten_dict(params, sep='/')
  reference = pretrained.read_pretrained(str(tmp_path))
  for path, value in flat.items():
    if path.startswith('conditioner/'):
      np.testing.assert_array_equal(value, fresh[path])
    elif path in reference:
      np.testing.assert_array_equal(value, reference[path])
  assert any(p.startswith('conditioner/') for p in flat)
