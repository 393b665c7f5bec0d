"""atomic_files: a write that fails leaves the previous file, byte for byte,
and no temporary file; history lines are appended whole."""
import json

import pytest

from hyperprompt import atomic_files


def test_a_failed_write_keeps_the_previous_file(tmp_path):
  path = tmp_path / 'eval_10.json'
  atomic_files.write_text(str(path), '{"good": 1}')
  with pytest.raises(OSError, match='No space left'):
    with atomic_files.open_for_write(str(path)) as f:
      f.write('{"partial": ')
      raise OSError(28, 'No space left on device')
  assert path.read_text() == '{"good": 1}'
  assert [p.name for p in tmp_path.iterdir()] == ['eval_10.json']


def test_a_complete_write_replaces_the_file(tmp_path):
  path = tmp_path / 'out.bin'
  path.write_bytes(b'old')
  with atomic_files.open_for_write(str(path), 'wb') as f:
    f.write(b'new')
  assert path.read_bytes() == b'new'
  assert [p.name for p in tmp_path.iterdir()] == ['out.bin']


def test_append_line_adds_whole_lines(tmp_path):
  path = str(tmp_path / 'history.jsonl')
  atomic_files.append_line(path, '{"step": 1}')
  atomic_files.append_line(path, '{"step": 2}')
  with open(path) as f:
    assert f.read() == '{"step": 1}\n{"step": 2}\n'


def test_only_write_modes():
  with pytest.raises(ValueError, match='mode'):
    with atomic_files.open_for_write('/tmp/x', 'a'):
      pass


def test_best_checkpoints_keep_each_tasks_best_mean_written_whole(tmp_path):
  from hyperprompt import evaluation  # pylint: disable=g-import-not-at-top
  evaluation.record_best(str(tmp_path), 2, {'a': {'f1': 60.0, 'em': 40.0}})
  evaluation.record_best(str(tmp_path), 4, {'a': {'f1': 50.0, 'em': 40.0},
                                            'b': {'acc': 10.0}})
  with open(tmp_path / evaluation.BEST_CHECKPOINTS_FILE) as f:
    best = json.load(f)
  assert {t: (v['step'], v['score']) for t, v in best.items()} == {
      'a': (2, 50.0), 'b': (4, 10.0)}
  # Written through a temporary file that is renamed: none is left.
  assert [p.name for p in tmp_path.iterdir()] == [
      evaluation.BEST_CHECKPOINTS_FILE]
