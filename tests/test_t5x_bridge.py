"""The t5x bridge: gin files with t5x's run configs, training, decoding and
restoring a stock checkpoint with t5x's own machinery.

t5x is not on PyPI; where it is not installed these tests are skipped with
that reason, except the import guard, which is checked everywhere.
"""
import functools
import importlib
import os
import re
import subprocess
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(REPO, 'gin')
SIZES = ('tiny', 't5_1_1_small', 't5_1_1_base', 't5_1_1_large', 't5_1_1_xl',
         't5_1_1_xxl')


def test_bridge_without_t5x_is_a_clear_import_error(monkeypatch):
  monkeypatch.setitem(sys.modules, 't5x', None)  # Makes `import t5x` fail.
  monkeypatch.delitem(sys.modules, 'hyperprompt.t5x_bridge', raising=False)
  with pytest.raises(ImportError, match='not on PyPI'):
    importlib.import_module('hyperprompt.t5x_bridge')


from flax import traverse_util
from flax.linen import partitioning as nn_partitioning

from hyperprompt import config
from hyperprompt import pretrained
from hyperprompt.conditioning import registry
from hyperprompt.conditioning.hyperprompt import HyperPromptGlobal
from hyperprompt.network import Transformer

try:
  import t5x
except ImportError:
  t5x = None
needs_t5x = pytest.mark.skipif(
    t5x is None, reason='t5x is not installed (it is not on PyPI; install it '
    'from its source repository as the README says to run the bridge tests)')
if t5x is not None:
  from t5x import adafactor
  from t5x import checkpoints
  from t5x import decoding
  from t5x import partitioning
  from t5x import trainer as trainer_lib
  from t5x import train as t5x_train
  from t5x import utils

  from hyperprompt import t5x_bridge
  T5X_ROOT = os.path.dirname(os.path.dirname(t5x.__file__))
REQUIRED = [
    "MODEL_DIR = '/tmp/unused'", "MIXTURE_OR_TASK_NAME = 'hp_glue'",
    "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 8}",
    'TRAIN_STEPS = 10', "INITIAL_CHECKPOINT_PATH = '/tmp/unused'",
    "CHECKPOINT_PATH = '/tmp/unused'", "EVAL_OUTPUT_DIR = '/tmp/unused'",
    "INFER_OUTPUT_DIR = '/tmp/unused'",
]
RUNS = {'finetune': 't5x/finetune.gin',
        'eval': 't5x/eval.gin',
        'infer': 't5x/infer.gin'}


@pytest.fixture
def main_module(monkeypatch):
  """t5x's run configs bind `__main__.train/evaluate/infer` (the binary)."""
  from t5x import eval as t5x_eval  # pylint: disable=g-import-not-at-top
  from t5x import infer as t5x_infer  # pylint: disable=g-import-not-at-top
  main = sys.modules['__main__']
  monkeypatch.setattr(main, 'train', t5x_train.train, raising=False)
  monkeypatch.setattr(main, 'evaluate', t5x_eval.evaluate, raising=False)
  monkeypatch.setattr(main, 'infer', t5x_infer.infer, raising=False)
  yield
  gin.clear_config()


def parse(files, bindings=()):
  gin.clear_config()
  for path in (GIN, T5X_ROOT):
    gin.add_config_file_search_path(path)
  gin.parse_config_files_and_bindings(list(files), REQUIRED + list(bindings))


def macro(name):
  return gin.query_parameter(f'%{name}')


@needs_t5x
@pytest.mark.parametrize('run', sorted(RUNS))
@pytest.mark.parametrize('size', SIZES)
def test_gin_files_compose_with_t5x_run_configs(main_module, size, run):
  parse([f't5x/{size}.gin', 'models/conditioners/hyperprompt_global.gin',
         RUNS[run]])
  cfg = gin.get_configurable(config.T5Config)()
  published = {'t5_1_1_small': 512, 't5_1_1_base': 768, 't5_1_1_large': 1024,
               't5_1_1_xl': 2048, 't5_1_1_xxl': 4096, 'tiny': 64}
  assert cfg.emb_dim == published[size]
  model_ref = macro('MODEL')
  assert model_ref.configurable.wrapped is t5x_bridge.EncoderDecoderModel
  assert gin.query_parameter('hyperprompt.HyperPromptGlobal.num_tasks'
                             ).scoped_configurable_fn() == 8  # hp_glue
  rules = partitioning.standard_logical_axis_rules(
      additional_rules=gin.query_parameter(
          'partitioning.standard_logical_axis_rules.additional_rules'
      ).scoped_configurable_fn())
  assert ('tasks', None) in rules
  if run == 'finetune':
    assert gin.query_parameter('train/utils.DatasetConfig.pack') is False
    assert gin.query_parameter('train_eval/utils.DatasetConfig.pack') is False
    assert gin.query_parameter('utils.RestoreCheckpointConfig.'
                               'fallback_to_scratch') is True
    assert gin.query_parameter('%USE_CACHED_TASKS') is False
  else:
    assert gin.query_parameter('utils.DatasetConfig.pack') is False
    # Our tasks have no 'test' split (t5x's default).
    assert gin.query_parameter('utils.DatasetConfig.split') == 'validation'
    assert gin.query_parameter('utils.DatasetConfig.use_cached') is False


@needs_t5x
# precomputed.gin reads exported prefixes from a file (PREFIX_FILE).
@pytest.mark.parametrize('conditioner', registry.names(learned=True))
def test_every_conditioner_axis_has_t5x_rules(main_module, conditioner):
  """t5x's Adafactor raises on an unknown logical axis name; the partitioner
  needs rules too. Initialise each conditioner and check every name."""
  parse(['t5x/tiny.gin', registry.method(conditioner).gin_file,
         RUNS['finetune']], ["MIXTURE_OR_TASK_NAME = 'hp_synthetic'"])
  model = macro('MODEL').scoped_configurable_fn()
  shapes = {'encoder_input_tokens': (2, 8), 'decoder_input_tokens': (2, 4),
            'decoder_target_tokens': (2, 4), 'task_ids': (2,)}
  variables = jax.eval_shape(functools.partial(
      model.get_initial_variables, input_shapes=shapes),
                             jax.random.PRNGKey(0))
  axes = variables['params_axes']
  names = {n for a in traverse_util.flatten_dict(axes).values()
           for n in a.names}
  known = {k for k, _ in partitioning.standard_logical_axis_rules(
      additional_rules=t5x_bridge.conditioner_axis_rules())}
  assert names <= known, names - known
  assert names <= set(t5x_bridge.logical_factor_rules()), (
      names - set(t5x_bridge.logical_factor_rules()))
  # Adafactor accepts the factorisation of every parameter.
  optimizer = adafactor.Adafactor(
      logical_factor_rules=t5x_bridge.logical_factor_rules())
  optimizer.set_param_axes(nn_partitioning.get_axis_names(axes))


# ----------------------------- running t5x ----------------------------------

CONFIG = config.T5Config(vocab_size=32, emb_dim=16, num_heads=2, head_dim=8,
                         num_encoder_layers=2, num_decoder_layers=2,
                         mlp_dim=32, dropout_rate=0.0,
                         relative_attention_num_buckets=8,
                         relative_attention_max_distance=16)
SHAPES = {'encoder_input_tokens': (4, 6), 'decoder_input_tokens': (4, 5),
          'decoder_target_tokens': (4, 5), 'decoder_loss_weights': (4, 5),
          'task_ids': (4,)}
TYPES = {k: np.float32 if k == 'decoder_loss_weights' else np.int32
         for k in SHAPES}


def t5x_model(conditioner, decode_fn=None):
  import seqio  # pylint: disable=g-import-not-at-top
  vocabulary = seqio.PassThroughVocabulary(CONFIG.vocab_size, eos_id=1)
  return t5x_bridge.EncoderDecoderModel(
      Transformer(CONFIG, conditioner), vocabulary, vocabulary,
      adafactor.Adafactor(
          0.05, logical_factor_rules=t5x_bridge.logical_factor_rules()),
      decode_fn=decode_fn or decoding.beam_search)


def hyperprompt_conditioner():
  return HyperPromptGlobal(num_tasks=3, prompt_length=2, bottleneck=4,
                           task_embed_dim=4, layer_task_dim=4)


def make_batch():
  rng = np.random.RandomState(0)
  targets = rng.randint(2, CONFIG.vocab_size, (4, 5)).astype(np.int32)
  return {
      'encoder_input_tokens': rng.randint(2, CONFIG.vocab_size, (4, 6)
                                          ).astype(np.int32),
      'decoder_target_tokens': targets,
      'decoder_input_tokens': np.pad(targets[:, :-1], [(0, 0), (1, 0)]),
      'decoder_loss_weights': np.ones((4, 5), np.float32),
      'task_ids': np.array([0, 1, 2, 1], np.int32),
  }


def partitioner():
  return partitioning.PjitPartitioner(
      num_partitions=1,
      logical_axis_rules=partitioning.standard_logical_axis_rules(
          additional_rules=t5x_bridge.conditioner_axis_rules()))


def initializer(model, part):
  return utils.TrainStateInitializer(
      optimizer_def=model.optimizer_def,
      init_fn=model.get_initial_variables, input_shapes=SHAPES,
      input_types=TYPES, partitioner=part)


@needs_t5x
def test_t5x_trainer_steps_then_decoding_uses_the_task(tmp_path):
  model = t5x_model(hyperprompt_conditioner())
  part = partitioner()
  init = initializer(model, part)
  state = init.from_scratch(jax.random.PRNGKey(0))
  trainer = trainer_lib.Trainer(
      model, state, part, eval_names=[], summary_dir=None,
      train_state_axes=init.train_state_axes, rng=jax.random.PRNGKey(1),
      learning_rate_fn=lambda step: 0.05, num_microbatches=None)
  batch = make_batch()
  losses = []
  for _ in range(4):
    metrics = trainer.train(iter([batch]), num_steps=1).result()
    losses.append(float(metrics['loss'].value))
  assert losses[-1] < losses[0], losses
  params = trainer.train_state.params

  # Greedy decoding through t5x's sampler equals step-by-step argmax of the
  # teacher-forced network, for each example's own task.
  greedy = t5x_model(hyperprompt_conditioner(), functools.partial(
      decoding.temperature_sample, temperature=0.0, topk=1))
  predict = jax.jit(lambda p, b: greedy.predict_batch_with_aux(p, b)[0])
  forward = jax.jit(lambda p, prefix, task_ids: greedy.module.apply(
      {'params': p}, batch['encoder_input_tokens'], prefix, None, task_ids,
      enable_dropout=False))

  def assert_greedy(task_ids):
    tokens = np.asarray(predict(params, dict(batch, task_ids=task_ids)))
    prefix = np.zeros((4, 5), np.int32)
    for i in range(5):
      step = np.asarray(jnp.argmax(forward(params, prefix, task_ids)[:, i],
                                   -1))
      np.testing.assert_array_equal(tokens[:, i], step)
      if i + 1 < 5:
        prefix[:, i + 1] = step

  assert_greedy(batch['task_ids'])
  # The same inputs under other tasks: the sampler follows those tasks'
  # argmax too, and the tasks' logits differ (whether an argmax flips after
  # four steps depends on the initialisation, so the logits are compared).
  other = np.array([2, 2, 0, 0], np.int32)
  assert_greedy(other)
  teacher = np.asarray(batch['decoder_input_tokens'])
  assert np.abs(np.asarray(forward(params, teacher, batch['task_ids'])) -
                np.asarray(forward(params, teacher, other))).max() > 1e-3

  # Beam search (cache expanded per beam, conditioning included): the score
  # of each returned sequence is its log-likelihood under teacher forcing.
  beam = t5x_model(hyperprompt_conditioner(),
                   functools.partial(decoding.beam_search, alpha=0.0))
  decodes, aux = jax.jit(functools.partial(
      beam.predict_batch_with_aux, num_decodes=2))(params, batch)
  decodes = np.asarray(decodes)
  lengths = np.argmax(decodes == 1, axis=1) + 1  # Up to and with EOS.
  has_eos = (decodes == 1).any(axis=1)
  lengths = np.where(has_eos, lengths, decodes.shape[1])
  weights = (np.arange(5)[None] < lengths[:, None]).astype(np.float32)
  targets = decodes * weights.astype(np.int32)
  scored = beam.score_batch(params, dict(
      batch, decoder_target_tokens=targets,
      decoder_input_tokens=np.pad(targets[:, :-1], [(0, 0), (1, 0)]),
      decoder_loss_weights=weights))
  np.testing.assert_allclose(np.asarray(aux['scores']), np.asarray(scored),
                             rtol=1e-4, atol=1e-4)


@needs_t5x
def test_packed_batches_are_refused():
  model = t5x_model(hyperprompt_conditioner())
  with pytest.raises(ValueError, match='pack = False'):
    model.get_initial_variables(
        jax.random.PRNGKey(0), {**SHAPES, 'encoder_segment_ids': (4, 6)})


@needs_t5x
def test_stock_checkpoint_restored_by_t5x_keeps_the_backbone(tmp_path):
  """A plain T5 train state saved by t5x's Checkpointer (legacy format):
  (1) our reader returns exactly its parameters; (2) t5x restores it into a
  HyperPrompt model with gin/t5x/finetune.gin's assignment map and fallback,
  keeping every backbone weight bit for bit and the conditioner fresh."""
  part = partitioner()
  stock_model = t5x_model(None)
  stock_init = initializer(stock_model, part)
  stock = stock_init.from_scratch(jax.random.PRNGKey(3))
  checkpointer = checkpoints.Checkpointer(
      stock, part, str(tmp_path), keep=None)
  checkpointer.save(stock)
  path = str(tmp_path / 'checkpoint_0')
  stock_params = traverse_util.flatten_dict(
      jax.device_get(stock.params), sep='/')

  read = pretrained.read_t5x_legacy(path)
  assert set(read) == set(stock_params)
  for name, value in stock_params.items():
    np.testing.assert_array_equal(read[name], value, err_msg=name)

  model = t5x_model(hyperprompt_conditioner())
  init = initializer(model, part)
  scratch = traverse_util.flatten_dict(jax.device_get(
      init.from_scratch(jax.random.PRNGKey(4)).params), sep='/')
  restore = utils.RestoreCheckpointConfig(
      path=path, mode='specific', dtype='float32',
      assignment_map=((r'.*/conditioner/.*', None),),
      fallback_to_scratch=True)
  restored = init.from_checkpoint([restore], init_rng=jax.random.PRNGKey(4))
  flat = traverse_util.flatten_dict(jax.device_get(restored.params), sep='/')
  for name, value in stock_params.items():
    np.testing.assert_array_equal(flat[name], value, err_msg=name)
  conditioner = [n for n in flat if n.startswith('conditioner/')]
  assert conditioner
  for name in conditioner:
    np.testing.assert_array_equal(flat[name], scratch[name], err_msg=name)


def readme_t5x_commands():
  """The `python -m t5x.*` command lines of the README's t5x section, with
  the shell variables each code block sets before them."""
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  section = readme.split('## Running under t5x', 1)[1].split('\n## ', 1)[0]
  commands = []
  for block in re.findall(r'```sh\n(.*?)```', section, re.S):
    lines = block.replace('\\\n', ' ').splitlines()
    assignments = [l for l in lines if re.match(r'^[A-Z_]+=', l)]
    commands += [(assignments, l) for l in lines
                 if l.startswith('python -m t5x.')]
  return commands


def shell_argv(assignments, command, env):
  """`command`'s argv after the shell's expansion and quote removal."""
  script = '\n'.join(
      [a for a in assignments if not a.startswith('HP=')] +
      ['printf "%s\\0" ' + command.split(' ', 3)[3]])
  out = subprocess.run(['bash', '-c', script], env=env, check=True,
                       capture_output=True, text=True).stdout
  return command.split(' ', 3)[2], out.split('\0')[:-1]


def test_readme_has_train_eval_and_infer_for_t5x_and_for_a_cpu():
  binaries = [c.split()[2] for _, c in readme_t5x_commands()]
  assert binaries == ['t5x.train', 't5x.eval', 't5x.infer'] * 2


@needs_t5x
@pytest.mark.parametrize('index', range(6))
def test_readme_t5x_command_parses_with_t5x_gin_flags(main_module, index):
  """Every README command's flags, as t5x's binary rewrites and parses them,
  give a complete config: gin files found, every REQUIRED macro bound."""
  from t5x import gin_utils  # pylint: disable=g-import-not-at-top
  assignments, command = readme_t5x_commands()[index]
  env = dict(os.environ, HP=REPO, MODEL_DIR='/tmp/unused')
  _, argv = shell_argv(assignments, command, env)
  flags = {'--gin_search_paths': [], '--gin_file': [], '--gin_bindings': []}
  for arg in gin_utils.rewrite_gin_args(argv):
    name, value = arg.split('=', 1)
    flags[name].append(value)
  gin.clear_config()
  gin_utils.parse_gin_flags(flags['--gin_search_paths'] + [T5X_ROOT],
                            flags['--gin_file'], flags['--gin_bindings'],
                            finalize_config=False)
  config_str = gin.config_str()
  assert 'gin.REQUIRED' not in config_str
  if 't5x.train' not in command:
    assert gin.query_parameter('utils.DatasetConfig.split') == 'validation'


@needs_t5x
def test_readme_cpu_example_runs_as_written(tmp_path):
  """The README's CPU example: t5x.train, t5x.eval and t5x.infer, run by
  bash as written, with MODEL_DIR under tmp_path and HP this checkout."""
  cpu = [(a, c) for a, c in readme_t5x_commands() if 't5x/tiny.gin' in c]
  assert len(cpu) == 3
  model_dir = tmp_path / 'model'
  bin_dir = os.path.dirname(sys.executable)  # `python` is this interpreter.
  env = dict(os.environ, HP=REPO,
             PATH=bin_dir + os.pathsep + os.environ['PATH'])
  for assignments, command in cpu:
    script = '\n'.join(
        [f'MODEL_DIR={model_dir}' if a.startswith('MODEL_DIR=') else a
         for a in assignments if not a.startswith('HP=')] + [command])
    result = subprocess.run(['bash', '-c', script], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
  assert (model_dir / 'checkpoint_20').is_dir()
  metrics = list((model_dir / 'eval' / 'inference_eval').glob(
      '*-metrics.jsonl'))
  assert len(metrics) == 9, metrics  # One per synthetic task.
  predictions = list(
      (model_dir / 'infer').glob('*-predict.jsonl-00000-of-00001'))
  assert len(predictions) == 9, predictions
  for path in predictions:
    assert path.read_text().strip(), path
