"""The command line: gin files resolve from the search path; bad gin fails
fast naming the file; missing macros are reported by name."""
import gin
import pytest

from hyperprompt import main


def test_gin_flags_are_split_like_t5x():
  files, bindings, rest = main.split_gin_flags(
      ['--gin_file=a.gin', '--gin_file', 'b.gin', '--gin.MODEL_DIR="/x"',
       '--other=1'])
  assert files == ['a.gin', 'b.gin']
  assert bindings == ['MODEL_DIR="/x"']
  assert rest == ['--other=1']


def test_run_files_resolve_and_bindings_override():
  main.parse_gin(['models/sizes/tiny.gin',
                  'models/conditioners/hyperprompt_global.gin',
                  'runs/demo.gin'], ['TRAIN_STEPS=7', 'MODEL_DIR="/tmp/x"'])
  assert gin.query_parameter('%TRAIN_STEPS') == 7
  assert gin.query_parameter('%NUM_TASKS') == 9
  gin.clear_config()


def test_unknown_name_fails_with_the_file(tmp_path):
  bad = tmp_path / 'bad.gin'
  bad.write_text('from __gin__ import dynamic_registration\n'
                 'from hyperprompt import runner\n'
                 'runner.train.no_such_argument = 1\n')
  with pytest.raises(SystemExit, match=f'Error in gin file {bad}.*'
                     'no_such_argument'):
    main.parse_gin(['models/sizes/tiny.gin', str(bad)], [])
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
