"""The command line as a t5x user meets it: exit status 0 on success, one-line
errors (the last line on stderr, no traceback), t5x's gin flags, and bad
values caught before anything is built.

The subprocess tests run the installed console script itself, and
`python -m`, on the tiny model for two steps.
"""
import os
import shutil
import subprocess
import sys

import gin
import pytest

from hyperprompt import cli_errors
from hyperprompt import gin_cli
from hyperprompt import main
from hyperprompt import quiet_logs

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'hyperprompt')
TINY_RUN = ['--gin_file=models/sizes/tiny.gin',
            '--gin_file=models/conditioners/hyperprompt_global.gin',
            '--gin_file=runs/train.gin', '--gin_file=runs/synthetic.gin']
TINY_RUN_FILES = [f.split('=', 1)[1] for f in TINY_RUN]
SYNTHETIC = ['--gin_file=runs/synthetic.gin',
             '--gin.synthetic.dataset_config.num_validation=4']


def _run(args, timeout=600, jax_platforms='cpu'):
  env = {**os.environ, 'JAX_PLATFORMS': jax_platforms}
  env.pop(cli_errors.VERBOSE_ENV, None)
  if jax_platforms is None:
    del env['JAX_PLATFORMS']
  return subprocess.run(args, capture_output=True, text=True, env=env,
                        timeout=timeout, check=False)


def _last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


# `make demo`'s run (python -m hyperprompt.demo), at a tiny step count.
DEMO_TINY = ['--gin.TRAIN_STEPS=2', '--gin.BATCH_SIZE=8',
             '--gin.EVAL_PERIOD=2', '--gin.CHECKPOINT_PERIOD=2',
             '--gin.runner.train.log_period=1',
             '--gin.runner.train.eval_batch_size=8',
             '--gin.runner.train.plot=False',
             '--gin.trainer.cosine_decay_schedule.warmup_steps=1',
             '--gin.synthetic.dataset_config.num_validation=2']
GLOBAL = ['--gin_file=models/sizes/tiny.gin',
          '--gin_file=models/conditioners/hyperprompt_global.gin']


@pytest.mark.skipif(not os.path.exists(SCRIPT),
                    reason='the console script is not installed')
def test_readme_routes_on_one_demo_run(tmp_path):
  """One chain of the README's commands on one tiny trained run: the demo,
  resuming it, eval with beam search, export, and infer serving the
  exported prefixes. Each exits 0 and prints no state."""
  root = tmp_path / 'demo'
  demo = _run([sys.executable, '-m', 'hyperprompt.demo',
               f'--model_dir={root}', *DEMO_TINY])
  assert demo.returncode == 0, demo.stderr[-2000:]
  # The demo's plan, then its table: nine tasks and the mean, both models.
  assert 'Two training runs' in demo.stdout
  table = demo.stdout.split('Validation scores')[1].splitlines()
  assert 'HyperPrompt-Global' in table[2] and 'None (multi-task T5)' in table[2]
  assert [line.split()[0] for line in table[3:]] == sorted(
      f'hp_synthetic_{t}' for t in ('copy', 'first', 'first_large',
                                    'first_small', 'last_even', 'last_odd',
                                    'max', 'reverse', 'sort')) + ['mean']
  model_dir = root / 'hyperprompt_global'
  # gin's operative config, as t5x writes it.
  config = (model_dir / 'config.gin').read_text()
  assert 'BATCH_SIZE = 8' in config and 'runner.train' in config

  # Resuming with the console script's function (in-process: TRAIN_STEPS
  # is reached, so nothing is compiled). A schedule knob may change; it is
  # recorded as config_1.gin. The runner's return value (the TrainState)
  # is never returned to the script's wrapper, so never printed.
  assert main.console_main([
      'train', *GLOBAL, '--gin_file=runs/demo.gin',
      f'--gin.MODEL_DIR="{model_dir}"', *DEMO_TINY,
      '--gin.runner.train.log_period=5']) is None
  assert 'log_period = 5' in (model_dir / 'config_1.gin').read_text()
  gin.clear_config()

  # Beam search from the command line, on the console script.
  evaluate = _run([SCRIPT, 'eval', *GLOBAL, '--gin_file=runs/eval.gin',
                   *SYNTHETIC, f'--gin.MODEL_DIR="{model_dir}"',
                   '--gin.BATCH_SIZE=8',
                   '--gin.models.EncoderDecoderModel.decode_fn='
                   '@decoding.beam_search',
                   '--gin.models.EncoderDecoderModel.num_decodes=2'])
  assert evaluate.returncode == 0, evaluate.stderr[-2000:]
  assert (model_dir / 'eval_2.json').exists()
  # Quiet logs: no CUDA probing noise on CPU, no orbax notes about the
  # read-only restore, each warning once.
  for noise in ('cuInit', 'cuda drivers', 'Given directory is read only'):
    assert noise not in demo.stderr + evaluate.stderr
  warnings = [line.split(' WARNING ', 1)[1] for line in
              evaluate.stderr.splitlines() if ' WARNING ' in line]
  assert len(warnings) == len(set(warnings)), warnings

  # README: export the prefixes, then serve them on the run's backbone with
  # precomputed.gin and PREFIX_FILE.
  # As a user runs it, JAX_PLATFORMS unset: libtpu (test extra) is
  # installed, and prints nothing where there is no TPU.
  prefix_file = tmp_path / 'prefixes.npz'
  export = _run([SCRIPT, 'export', *GLOBAL, '--gin.NUM_TASKS=9',
                 f'--checkpoint={model_dir}', f'--output={prefix_file}'],
                jax_platforms=None)
  assert export.returncode == 0, export.stderr[-2000:]
  if not quiet_logs.has_accelerator():
    for noise in ('TPU_WORKER_HOSTNAMES', 'accelerator type', 'libtpu'):
      assert noise not in export.stderr, export.stderr[-2000:]
  served = tmp_path / 'served.jsonl'
  infer = _run([sys.executable, '-m', 'hyperprompt.infer',
                '--gin_file=models/sizes/tiny.gin',
                '--gin_file=models/conditioners/precomputed.gin',
                '--gin_file=runs/infer.gin', *SYNTHETIC,
                f'--gin.MODEL_DIR="{model_dir}"', '--gin.BATCH_SIZE=8',
                f'--gin.PREFIX_FILE="{prefix_file}"',
                f'--gin.INFER_OUTPUT="{served}"'])
  assert infer.returncode == 0, infer.stderr[-2000:]
  assert len(served.read_text().splitlines()) == 9 * 4


def test_misspelled_macro_is_one_line_and_exit_one(tmp_path, capsys):
  # console_main is the console script's function (the routes above run the
  # script itself); in-process, this takes no extra interpreter start.
  with pytest.raises(SystemExit) as exit_info:
    main.console_main(['train', *TINY_RUN, f'--gin.MODEL_DIR="{tmp_path}"',
                       '--gin.TRAIN_STEPS=2', '--gin.BATCH_SIZ=8'])
  # SystemExit with a message: Python prints it to stderr, as the last line
  # and without a traceback, and exits with status 1.
  message = exit_info.value.code
  assert isinstance(message, str) and '\n' not in message
  assert 'BATCH_SIZ ' in message and 'did you mean BATCH_SIZE' in message
  assert 'Traceback' not in capsys.readouterr().err
  assert not os.listdir(tmp_path)  # Failed before anything was written.


def test_params_route_of_the_readme(capsys):
  # README: HyperPrompt-Global on T5.1.1-XXL with 8 tasks adds 0.137%.
  # (console_main in-process: the chain above runs the script itself.)
  main.console_main(['params', '--gin_file=models/sizes/t5_1_1_xxl.gin',
                     '--gin_file=models/conditioners/hyperprompt_global.gin',
                     '--gin.NUM_TASKS=8'])
  out = capsys.readouterr().out
  overhead = out.split('overhead:')[1].split('%')[0]
  assert round(float(overhead), 3) == 0.137
  # --all_methods reads NUM_TASKS itself: no conditioner file refers to it,
  # and it is not an unused macro.
  main.console_main(['params', '--all_methods',
                     '--gin_file=models/sizes/tiny.gin', '--gin.NUM_TASKS=3'])
  assert '| HyperPrompt-Share |' in capsys.readouterr().out


def test_help_lists_the_t5x_flags(capsys):
  with pytest.raises(SystemExit) as exit_info:
    main.run('train', ['--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  for flag in ('--gin_file', '--gin.NAME', '--gin_search_paths', '--verbose'):
    assert flag in out


def test_an_error_is_one_line_and_exit_one_without_verbose(capsys):
  def fail():
    # As gin augments it: "In call to configurable ..." with an address.
    raise ValueError('NUM_TASKS is wrong\n  In call to configurable '
                     "'train' (<function train at 0x7f00>)")
  with pytest.raises(SystemExit) as exit_info:
    cli_errors.exit_on_error(fail, [])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1
  assert err.startswith('error: ValueError: NUM_TASKS is wrong (--verbose')
  with pytest.raises(ValueError, match='NUM_TASKS'):
    cli_errors.exit_on_error(fail, ['--verbose'])


def test_each_warning_once_and_orbax_notes_dropped(capsys):
  import logging  # pylint: disable=g-import-not-at-top
  quiet_logs.configure()
  log = logging.getLogger('seqio')
  for _ in range(3):
    log.warning('Using an uncached FunctionDataset for %s', 'task_a')
  log.warning('Using an uncached FunctionDataset for %s', 'task_b')
  logging.getLogger('absl').warning('Given directory is read only=/x')
  logging.getLogger('hyperprompt').info('step 1/2')
  logging.getLogger('hyperprompt').info('step 1/2')
  lines = capsys.readouterr().err.splitlines()
  assert [line.split(' ', 2)[2] for line in lines] == [
      'WARNING Using an uncached FunctionDataset for task_a',
      'WARNING Using an uncached FunctionDataset for task_b',
      'INFO step 1/2', 'INFO step 1/2']
  logging.basicConfig(force=True)


def test_ctrl_c_outside_training_exits_130(capsys):
  def interrupt():
    raise KeyboardInterrupt
  with pytest.raises(SystemExit) as exit_info:
    cli_errors.exit_on_error(interrupt, [])
  assert exit_info.value.code == cli_errors.INTERRUPTED_STATUS
  assert capsys.readouterr().err == 'Interrupted.\n'


@pytest.mark.parametrize('value', ['0', '-3', '2.5', 'True', '"8"'])
def test_num_tasks_must_be_a_positive_int(value):
  gin_cli.parse_gin(TINY_RUN_FILES, [f'NUM_TASKS = {value}',
                                     'MODEL_DIR = "/x"', 'TRAIN_STEPS = 2'])
  with pytest.raises(SystemExit, match=f'NUM_TASKS = .*{value.strip(chr(34))}'
                     '.*positive integer'):
    gin_cli.check_macro_values()


def test_batch_size_and_steps_are_checked_too():
  gin_cli.parse_gin(TINY_RUN_FILES, ['MODEL_DIR = "/x"', 'TRAIN_STEPS = 0'])
  with pytest.raises(SystemExit, match='TRAIN_STEPS = 0'):
    gin_cli.check_macro_values()
  gin_cli.parse_gin(TINY_RUN_FILES, ['MODEL_DIR = "/x"', 'TRAIN_STEPS = 2',
                                     'BATCH_SIZE = -8'])
  with pytest.raises(SystemExit, match='BATCH_SIZE = -8'):
    gin_cli.check_macro_values()


def test_unknown_mixture_suggests_the_closest():
  gin_cli.parse_gin(TINY_RUN_FILES, ['MODEL_DIR = "/x"', 'TRAIN_STEPS = 2',
                                     'MIXTURE_OR_TASK_NAME = "hp_synthtic"'])
  with pytest.raises(SystemExit, match="'hp_synthtic' is not a registered.*"
                     'did you mean hp_synthetic'):
    gin_cli.check_macro_values()


def test_a_macro_used_but_never_bound_is_one_line():
  # precomputed.gin refers to PREFIX_FILE; gin's own message would go on
  # with the whole configuration.
  with pytest.raises(SystemExit) as exit_info:
    gin_cli.parse_gin(['models/sizes/tiny.gin',
                       'models/conditioners/precomputed.gin', 'runs/eval.gin',
                       'runs/synthetic.gin'], ['MODEL_DIR = "/x"'])
  message = str(exit_info.value)
  assert '\n' not in message
  assert message.endswith('the macro PREFIX_FILE is used but not bound; set '
                          'it with --gin.PREFIX_FILE=VALUE.')


def test_unused_macro_is_named_with_a_suggestion():
  with pytest.raises(SystemExit, match=r'never used: BATCH_SIZ \(did you '
                     r'mean BATCH_SIZE\?\)'):
    gin_cli.parse_gin(TINY_RUN_FILES, ['MODEL_DIR = "/x"', 'TRAIN_STEPS = 2',
                                       'BATCH_SIZ = 8'])


def test_unused_macro_in_a_users_file_is_an_error(tmp_path):
  mine = tmp_path / 'mine.gin'
  mine.write_text('TRAIN_STPES = 5\n')
  with pytest.raises(SystemExit, match='TRAIN_STPES.*TRAIN_STEPS'):
    gin_cli.parse_gin([*TINY_RUN_FILES, str(mine)],
                      ['MODEL_DIR = "/x"', 'TRAIN_STEPS = 2'])


def test_shipped_macros_unused_by_a_composition_are_fine():
  # runs/synthetic.gin assigns VOCABULARY, MIXTURE_OR_TASK_NAME and
  # TASK_FEATURE_LENGTHS; without a run file nothing uses them.
  gin_cli.parse_gin(['models/sizes/tiny.gin', 'models/conditioners/none.gin',
                     'runs/synthetic.gin'], ['NUM_TASKS = 9'])


@pytest.mark.parametrize('binding', ['TRAIN_STEPS = 2',
                                     'INITIAL_CHECKPOINT_PATH = "/ckpt"'])
def test_a_shipped_macro_the_user_binds_must_be_used(binding, tmp_path):
  # runs/train.gin assigns both, but eval uses neither: the user's value
  # would be silently ignored.
  eval_files = ['models/sizes/tiny.gin', 'models/conditioners/none.gin',
                'runs/eval.gin', 'runs/synthetic.gin']
  name = binding.split(' ')[0]
  with pytest.raises(SystemExit, match=f'never used: {name}'):
    gin_cli.parse_gin(eval_files, ['MODEL_DIR = "/x"', binding])
  mine = tmp_path / 'mine.gin'
  mine.write_text(f'include "runs/synthetic.gin"\n{binding}\n')
  with pytest.raises(SystemExit, match=f'never used: {name}'):
    gin_cli.parse_gin([*eval_files[:3], str(mine)], ['MODEL_DIR = "/x"'])


def test_gin_search_paths_are_comma_separated_like_t5x(tmp_path):
  first, second = tmp_path / 'a', tmp_path / 'b'
  first.mkdir()
  second.mkdir()
  shutil.copy(os.path.join(gin_cli.GIN_DIR, 'runs', 'synthetic.gin'),
              second / 'my_data.gin')
  parser = main.argparse.ArgumentParser()
  args, bindings = gin_cli.parse(parser, [
      f'--gin_search_paths={first},{second}', '--gin_file=models/sizes/tiny.gin',
      '--gin_file=models/conditioners/none.gin', '--gin_file=runs/eval.gin',
      '--gin_file=my_data.gin', '--gin.MODEL_DIR="/x"'])
  assert args.gin_search_paths == [str(first), str(second)]
  gin_cli.parse_gin(args.gin_file, bindings, args.gin_search_paths)
  assert gin.query_parameter('%MIXTURE_OR_TASK_NAME') == 'hp_synthetic'


def test_decoding_functions_bind_from_the_command_line():
  from hyperprompt import models  # pylint: disable=g-import-not-at-top
  gin_cli.parse_gin(
      [*TINY_RUN_FILES],
      ['MODEL_DIR = "/x"', 'TRAIN_STEPS = 2',
       'models.EncoderDecoderModel.decode_fn = @decoding.beam_search'])
  model = gin.get_configurable(models.EncoderDecoderModel)()
  assert model.decode_fn.__name__ == 'beam_search'
  assert model.decode_fn.__module__ == 'hyperprompt.decoding'
