"""MODEL_DIR/config.gin against the current configuration: the bindings that
define the checkpoint must match, run-length and schedule knobs may change
(hyperprompt/operative_config.py states the rule)."""
import os

import gin
import pytest

from hyperprompt import checkpoints
from hyperprompt import gin_cli
from hyperprompt import models
from hyperprompt import operative_config
from hyperprompt import trainer

# demo.gin's schedule reads TRAIN_STEPS, so calling it puts TRAIN_STEPS in
# the operative config without training anything.
FILES = ['models/sizes/tiny.gin', 'models/conditioners/hyperprompt_global.gin',
         'runs/demo.gin']


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _configure(bindings=(), files=FILES):
  """Parses gin as a command would and calls what a run calls first."""
  gin_cli.parse_gin(files, ['MODEL_DIR = "/unused"', *bindings])
  gin.get_configurable(models.EncoderDecoderModel)()
  gin.get_configurable(trainer.cosine_decay_schedule)()


@pytest.fixture
def trained_dir(tmp_path):
  _configure()
  assert operative_config.write(str(tmp_path)) == str(tmp_path / 'config.gin')
  return tmp_path


def test_run_length_changes_are_allowed_and_recorded(trained_dir):
  _configure(['TRAIN_STEPS = 3000', 'BATCH_SIZE = 16'])
  assert 'TRAIN_STEPS = 3000' in gin.operative_config_str()
  operative_config.check_matches(str(trained_dir))
  # As before: the resumed run's config is kept beside the original.
  assert operative_config.write(str(trained_dir)) == str(
      trained_dir / 'config_1.gin')
  assert 'TRAIN_STEPS = 1000' in (trained_dir / 'config.gin').read_text()


def test_a_changed_conditioner_knob_is_refused_by_name(trained_dir):
  before = sorted(os.listdir(trained_dir))
  _configure(['hyperprompt.HyperPromptGlobal.prompt_length = 8'])
  with pytest.raises(checkpoints.CheckpointMismatchError) as error:
    operative_config.check_matches(str(trained_dir))
  message = str(error.value)
  assert ('hyperprompt.HyperPromptGlobal.prompt_length = 16 in the run, 8 '
          'now') in message
  assert 'INITIAL_CHECKPOINT_PATH' in message and '\n' not in message
  assert sorted(os.listdir(trained_dir)) == before  # MODEL_DIR untouched.


def test_another_conditioner_size_or_macro_value_is_refused(trained_dir):
  _configure(files=['models/sizes/tiny.gin', 'models/conditioners/none.gin',
                    'runs/demo.gin'])
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r'network.Transformer.conditioner = '
                     r'@hyperprompt.HyperPromptGlobal\(\) in the run, '
                     r'@none.NoConditioning\(\) now'):
    operative_config.check_matches(str(trained_dir))
  # Through a macro: its value is compared, not the macro's name.
  _configure(['VOCAB_SIZE = 512'])
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='config.T5Config.vocab_size = 384 in the run, 512'):
    operative_config.check_matches(str(trained_dir))
  # The mixture the conditioner's NUM_TASKS comes from.
  _configure(['MIXTURE_OR_TASK_NAME = "hp_glue"'])
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match="mixture_or_task_name = 'hp_synthetic' in the "
                     "run, 'hp_glue' now"):
    operative_config.check_matches(str(trained_dir / 'checkpoints'))


def test_run_time_model_knobs_may_change(trained_dir):
  _configure(['DROPOUT_RATE = 0.1', "REMAT_POLICY = 'full'",
              "ACTIVATION_DTYPE = 'bfloat16'",
              'models.EncoderDecoderModel.decode_fn = @decoding.beam_search'])
  operative_config.check_matches(str(trained_dir))


def test_serving_prefixes_compares_the_backbone_only(trained_dir):
  files = ['models/sizes/tiny.gin', 'models/conditioners/precomputed.gin',
           'runs/demo.gin']
  _configure(['PREFIX_FILE = "/unused.npz"'], files=files)
  operative_config.check_matches(str(trained_dir), with_conditioner=False)
  with pytest.raises(checkpoints.CheckpointMismatchError):
    operative_config.check_matches(str(trained_dir))
  _configure(['PREFIX_FILE = "/unused.npz"',
              'config.T5Config.num_heads = 8'], files=files)
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='num_heads = 4 in the run, 8 now'):
    operative_config.check_matches(str(trained_dir), with_conditioner=False)


def test_no_saved_config_or_no_gin_is_nothing_to_compare(tmp_path):
  _configure()
  operative_config.check_matches(str(tmp_path))  # No config.gin (old run).
  gin.clear_config()
  (tmp_path / 'config.gin').write_text('NUM_TASKS = 3\n')
  operative_config.check_matches(str(tmp_path))  # A Python caller.


def test_scopes_do_not_hide_a_difference(tmp_path):
  # train builds the model through the MODEL macro (bindings scoped MODEL/),
  # export and analyze build it directly.
  gin_cli.parse_gin(FILES, ['MODEL_DIR = "/unused"'])
  with gin.config_scope('MODEL'):
    gin.get_configurable(models.EncoderDecoderModel)()
  assert 'MODEL/' in gin.operative_config_str()
  operative_config.write(str(tmp_path))
  gin_cli.parse_gin(FILES[:2], ['NUM_TASKS = 9'])
  gin_cli.transformer()
  operative_config.check_matches(str(tmp_path))
  gin_cli.parse_gin(FILES[:2], ['NUM_TASKS = 9', 'config.T5Config.mlp_dim = 64'])
  gin_cli.transformer()
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='config.T5Config.mlp_dim = 128 in the run, 64 now'):
    operative_config.check_matches(str(tmp_path))
