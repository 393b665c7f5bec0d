"""GLUE/SuperGLUE read from the files of their original releases.

For machines where TFDS cannot download: point gin at the unpacked releases
(see sources.py) and the same tasks read

  GLUE (TSV, as written by GLUE's download script)   <glue_dir>/CoLA/train.tsv,
      dev.tsv; MNLI has dev_matched.tsv and dev_mismatched.tsv.
  SuperGLUE (JSON lines)                             <super_glue_dir>/BoolQ/
      train.jsonl, val.jsonl; likewise CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC.

Each reader yields examples in the TFDS feature format of `glue/*` 2.0.0 and
`super_glue/*` 1.0.2 (same keys, dtypes and label ids; `idx` is the row or the
release's own index), so the same preprocessors apply to both sources. One
difference remains: TFDS serves `wsc.fixed`, whose span indices correct a few
of the original WSC release's; the local reader gives the release's values.
"""
import dataclasses
import json
import os
from typing import Callable, Iterator, Mapping, Optional, Union

from absl import logging
import tensorflow as tf

_STR = tf.TensorSpec([], tf.string)
_INT = tf.TensorSpec([], tf.int32)
_LABEL = tf.TensorSpec([], tf.int64)
_STRINGS = tf.TensorSpec([None], tf.string)

# --- GLUE: tab-separated files ---------------------------------------------

_GLUE_FILES = {
    'train': 'train.tsv',
    'validation': 'dev.tsv',
    'validation_matched': 'dev_matched.tsv',
    'validation_mismatched': 'dev_mismatched.tsv',
}


@dataclasses.dataclass(frozen=True)
class _GlueTsv:
  """How one GLUE task's TSV columns map onto its TFDS features."""
  directory: str
  # TFDS feature -> column name, or column index for files without a header.
  text_columns: Mapping[str, Union[str, int]]
  label_column: Union[str, int]
  # Label text -> TFDS label; None: the label is already an integer id.
  label_names: Optional[tuple[str, ...]] = None
  float_label: bool = False

  @property
  def header(self) -> bool:
    return isinstance(self.label_column, str)


_NLI = ('entailment', 'not_entailment')
GLUE = {
    # CoLA's files have no header: source, label, original label, sentence.
    'cola': _GlueTsv('CoLA', {'sentence': 3}, 1),
    'sst2': _GlueTsv('SST-2', {'sentence': 'sentence'}, 'label'),
    'mrpc': _GlueTsv('MRPC', {'sentence1': '#1 String',
                              'sentence2': '#2 String'}, 'Quality'),
    'qqp': _GlueTsv('QQP', {'question1': 'question1',
                            'question2': 'question2'}, 'is_duplicate'),
    'stsb': _GlueTsv('STS-B', {'sentence1': 'sentence1',
                               'sentence2': 'sentence2'}, 'score',
                     float_label=True),
    'mnli': _GlueTsv('MNLI', {'premise': 'sentence1',
                              'hypothesis': 'sentence2'}, 'gold_label',
                     ('entailment', 'neutral', 'contradiction')),
    'qnli': _GlueTsv('QNLI', {'question': 'question',
                              'sentence': 'sentence'}, 'label', _NLI),
    'rte': _GlueTsv('RTE', {'sentence1': 'sentence1',
                            'sentence2': 'sentence2'}, 'label', _NLI),
}


def _utf8_lines(path: str) -> list[str]:
  """The file's lines; a byte that is not UTF-8 is named by line."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    raw = f.read()
  try:
    return raw.decode('utf-8').splitlines()
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b'\n') + 1
    raise ValueError(
        f'{path} line {line}: byte {raw[e.start]:#04x} is not UTF-8; save '
        'the file as UTF-8 (as the GLUE/SuperGLUE releases are).') from None


def _label(spec: _GlueTsv, text: str, path: str, line: int):
  """The TFDS label of a label cell; a bad cell is named by file and line."""
  try:
    if spec.float_label:
      return float(text)
    if spec.label_names:
      return spec.label_names.index(text)
    return int(text)
  except ValueError:
    expected = (f'one of {list(spec.label_names)}' if spec.label_names else
                'a number' if spec.float_label else 'an integer')
    raise ValueError(f'{path} line {line}: label {text!r} is not '
                     f'{expected}.') from None


def _glue_rows(spec: _GlueTsv, path: str) -> Iterator[dict]:
  lines = _utf8_lines(path)
  first_row_line = 2 if spec.header else 1
  if spec.header:
    names = lines[0].split('\t')
    lines = lines[1:]
    column = {name: i for i, name in enumerate(names)}.__getitem__
  else:
    column = int
  width = 1 + max(column(c) for c in [*spec.text_columns.values(),
                                       spec.label_column])
  skipped = 0
  for idx, line in enumerate(lines):
    cells = line.split('\t')
    if len(cells) < width:
      skipped += 1
      continue
    label = _label(spec, cells[column(spec.label_column)], path,
                   idx + first_row_line)
    yield {**{k: cells[column(c)] for k, c in spec.text_columns.items()},
           'label': label, 'idx': idx}
  if skipped:
    logging.warning('%s: skipped %d rows with fewer than %d columns.', path,
                    skipped, width)


def read_glue(task: str, root: str, split: str) -> tf.data.Dataset:
  """GLUE task `task` (e.g. "rte"), TFDS split `split`, from `root`."""
  spec = GLUE[task]
  path = os.path.join(root, spec.directory, _GLUE_FILES[split])
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f'{path} not found. Point the GLUE data dir at the folder that holds '
        f"{spec.directory}/ (the output of GLUE's download script).")
  signature = {**{k: _STR for k in spec.text_columns},
               'label': tf.TensorSpec([], tf.float32 if spec.float_label
                                      else tf.int64),
               'idx': _INT}
  return tf.data.Dataset.from_generator(lambda: _glue_rows(spec, path),
                                        output_signature=signature)


# --- SuperGLUE: JSON lines ---------------------------------------------------

def _bool_label(row: dict) -> dict:
  return {**row, 'label': int(row['label'])}


def _named_label(*names: str) -> Callable[[dict], dict]:
  def convert(row: dict) -> dict:
    if row['label'] not in names:
      raise ValueError(f"label {row['label']!r} is not one of {list(names)}")
    return {**row, 'label': names.index(row['label'])}
  return convert


def _wsc(row: dict) -> dict:
  return {'text': row['text'], **row['target'], 'idx': row['idx'],
          'label': int(row['label'])}


def _multirc(row: dict) -> Iterator[dict]:
  paragraph = row['passage']['text']
  for question in row['passage']['questions']:
    for answer in question['answers']:
      yield {'paragraph': paragraph, 'question': question['question'],
             'answer': answer['text'], 'label': answer['label'],
             'idx': {'paragraph': row['idx'], 'question': question['idx'],
                     'answer': answer['idx']}}


def _record(row: dict) -> Iterator[dict]:
  text = row['passage']['text']
  # Entity offsets are inclusive of their end character.
  entities = sorted({text[e['start']:e['end'] + 1]
                     for e in row['passage']['entities']})
  for qa in row['qas']:
    answers = list(dict.fromkeys(a['text'] for a in qa['answers']))
    yield {'passage': text, 'query': qa['query'], 'entities': entities,
           'answers': answers,
           'idx': {'passage': row['idx'], 'query': qa['idx']}}


@dataclasses.dataclass(frozen=True)
class _SuperGlueJsonl:
  directory: str
  signature: Mapping
  # One JSON row -> its TFDS example(s).
  convert: Callable[[dict], Union[dict, Iterator[dict]]]
  many: bool = False  # convert yields several examples per row.


def _fields(*names: str, **extra) -> dict:
  return {**{n: _STR for n in names}, 'idx': _INT, 'label': _LABEL, **extra}


SUPER_GLUE = {
    'boolq': _SuperGlueJsonl('BoolQ', _fields('question', 'passage'),
                             _bool_label),
    'cb': _SuperGlueJsonl('CB', _fields('premise', 'hypothesis'),
                          _named_label('entailment', 'contradiction',
                                       'neutral')),
    'copa': _SuperGlueJsonl('COPA', _fields('premise', 'choice1', 'choice2',
                                            'question'), lambda row: row),
    'multirc': _SuperGlueJsonl(
        'MultiRC', _fields('paragraph', 'question', 'answer',
                           idx={k: _INT for k in ('paragraph', 'question',
                                                  'answer')}),
        _multirc, many=True),
    'record': _SuperGlueJsonl(
        'ReCoRD', {'passage': _STR, 'query': _STR, 'entities': _STRINGS,
                   'answers': _STRINGS,
                   'idx': {'passage': _INT, 'query': _INT}},
        _record, many=True),
    'rte': _SuperGlueJsonl('RTE', _fields('premise', 'hypothesis'),
                           _named_label('entailment', 'not_entailment')),
    'wic': _SuperGlueJsonl('WiC', _fields(
        'word', 'sentence1', 'sentence2',
        **{k: _INT for k in ('start1', 'start2', 'end1', 'end2')}),
                           _bool_label),
    'wsc': _SuperGlueJsonl('WSC', _fields(
        'text', 'span1_text', 'span2_text', span1_index=_INT,
        span2_index=_INT), _wsc),
}

_SUPER_GLUE_FILES = {'train': 'train.jsonl', 'validation': 'val.jsonl'}


def _super_glue_rows(spec: _SuperGlueJsonl, path: str) -> Iterator[dict]:
  for number, line in enumerate(_utf8_lines(path), 1):
    if not line.strip():
      continue
    try:
      converted = spec.convert(json.loads(line))
      examples = list(converted) if spec.many else [converted]
      rows = [{k: example[k] for k in spec.signature} for example in examples]
    except (ValueError, KeyError, TypeError) as e:
      problem = (f'no field {e}' if isinstance(e, KeyError) else str(e))
      raise ValueError(f'{path} line {number}: {problem}.') from None
    yield from rows


def read_super_glue(task: str, root: str, split: str) -> tf.data.Dataset:
  """SuperGLUE task `task` (e.g. "boolq"), split `split`, from `root`."""
  spec = SUPER_GLUE[task]
  path = os.path.join(root, spec.directory, _SUPER_GLUE_FILES[split])
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f'{path} not found. Point the SuperGLUE data dir at the folder that '
        f'holds {spec.directory}/ (the unpacked SuperGLUE release).')
  return tf.data.Dataset.from_generator(
      lambda: _super_glue_rows(spec, path), output_signature=spec.signature)
