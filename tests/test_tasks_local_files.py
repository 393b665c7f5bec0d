"""The same tasks read the original GLUE TSV / SuperGLUE JSONL releases."""
import json

import gin
import pytest
import seqio

import hyperprompt.tasks  # Registers the tasks.
from hyperprompt.tasks import local_files


@pytest.fixture
def data_dirs(tmp_path):
  glue, sg = tmp_path / "glue_data", tmp_path / "SuperGLUE"
  files = {
      glue / "CoLA" / "dev.tsv":  # No header, as released.
          "gj04\t1\t\tThe book was read.\ngj04\t0\t*\tBook the read was.\n",
      glue / "MNLI" / "dev_mismatched.tsv":
          "index\tsentence1\tsentence2\tlabel1\tgold_label\n"
          "0\tA man sleeps.\tA man is awake.\tcontradiction\tcontradiction\n",
      glue / "STS-B" / "train.tsv":
          "index\tgenre\tsentence1\tsentence2\tscore\n"
          "0\tnews\tA cat.\tA kitten.\t4.44\n",
      sg / "MultiRC" / "val.jsonl": json.dumps({
          "idx": 3, "passage": {"text": "Sue ran.", "questions": [{
              "idx": 1, "question": "Who ran?", "answers": [
                  {"idx": 0, "text": "Sue", "label": 1},
                  {"idx": 1, "text": "Bob", "label": 0}]}]}}) + "\n",
      sg / "ReCoRD" / "val.jsonl": json.dumps({
          "idx": 0, "passage": {"text": "Paris is big.@highlight\nFrance",
                                "entities": [{"start": 0, "end": 4},
                                             {"start": 24, "end": 29}]},
          "qas": [{"idx": 7, "query": "@placeholder is big.",
                   "answers": [{"start": 0, "end": 4, "text": "Paris"}]}]})
          + "\n",
      sg / "WSC" / "train.jsonl": json.dumps({
          "idx": 0, "label": True, "text": "Sam said he left .",
          "target": {"span1_index": 0, "span1_text": "Sam",
                     "span2_index": 2, "span2_text": "he"}}) + "\n",
      sg / "BoolQ" / "val.jsonl": json.dumps({
          "idx": 0, "label": False, "question": "is it hot",
          "passage": "It is cold."}) + "\n",
  }
  for path, text in files.items():
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  with gin.unlock_config():
    gin.bind_parameter("hyperprompt.tasks.tokenizer.text_vocabulary."
                       "vocabulary", seqio.ByteVocabulary())
    gin.bind_parameter("hyperprompt.tasks.sources.local_data_dirs.glue",
                       str(glue))
    gin.bind_parameter("hyperprompt.tasks.sources.local_data_dirs.super_glue",
                       str(sg))
  yield
  gin.clear_config()


def _examples(task, split):
  ds = seqio.get_mixture_or_task(task).get_dataset(
      {"inputs": 128, "targets": 16}, split, shuffle=False)
  return [(ex["inputs_pretokenized"].decode(),
           ex["targets_pretokenized"].decode(), int(ex["task_id"][0]))
          for ex in ds.as_numpy_iterator()]


def test_glue_tsv_files(data_dirs):
  del data_dirs
  assert _examples("hp_glue_cola", "validation") == [
      ("cola sentence: The book was read.", "acceptable", 0),
      ("cola sentence: Book the read was.", "unacceptable", 0)]
  assert _examples("hp_glue_mnli", "validation_mismatched") == [
      ("mnli premise: A man sleeps. hypothesis: A man is awake.",
       "contradiction", 5)]
  assert _examples("hp_glue_stsb", "train") == [
      ("stsb sentence1: A cat. sentence2: A kitten.", "4.4", 4)]


def test_super_glue_jsonl_files(data_dirs):
  del data_dirs
  assert _examples("hp_superglue_multirc", "validation") == [
      ("multirc question: Who ran? answer: Sue paragraph: Sue ran.", "True",
       3),
      ("multirc question: Who ran? answer: Bob paragraph: Sue ran.", "False",
       3)]
  assert _examples("hp_superglue_record", "validation") == [
      ("record query: @placeholder is big. entities: France, Paris "
       "passage: Paris is big.. France", "Paris", 4)]
  assert _examples("hp_superglue_wsc", "train") == [
      ("wsc text: #Sam# said *he* left .", "True", 7)]
  assert _examples("hp_superglue_boolq", "validation") == [
      ("boolq question: is it hot passage: It is cold.", "False", 0)]


def test_local_rows_have_the_tfds_feature_types(data_dirs):
  del data_dirs
  multirc_dir = gin.query_parameter(
      "hyperprompt.tasks.sources.local_data_dirs.super_glue")
  ds = local_files.read_super_glue("multirc", multirc_dir, "validation")
  ex = next(ds.as_numpy_iterator())
  assert ex["idx"] == {"paragraph": 3, "question": 1, "answer": 0}
  assert ds.element_spec["label"].dtype.name == "int64"


def test_missing_file_says_where_to_point(data_dirs):
  del data_dirs
  with pytest.raises(FileNotFoundError, match="RTE/"):
    _examples("hp_glue_rte", "train")


def _one_line_error(task, split):
  from hyperprompt import cli_errors  # pylint: disable=g-import-not-at-top
  with pytest.raises(Exception) as error:
    _examples(task, split)
  return cli_errors.one_line(error.value)


def test_a_byte_that_is_not_utf8_is_named_by_file_and_line(data_dirs,
                                                           tmp_path):
  del data_dirs
  path = tmp_path / "glue_data" / "CoLA" / "dev.tsv"
  path.write_bytes(b"gj04\t1\t\tThe book.\ngj04\t0\t*\tBook \xe9 the.\n")
  assert _one_line_error("hp_glue_cola", "validation") == (
      f"ValueError: {path} line 2: byte 0xe9 is not UTF-8; save the file as "
      "UTF-8 (as the GLUE/SuperGLUE releases are).")


def test_an_unknown_label_is_named_by_file_line_and_value(data_dirs,
                                                         tmp_path):
  del data_dirs
  path = tmp_path / "glue_data" / "MNLI" / "dev_mismatched.tsv"
  path.write_text("index\tsentence1\tsentence2\tlabel1\tgold_label\n"
                  "0\tA.\tB.\tneutral\tneutral\n"
                  "1\tA.\tB.\tmaybe\tmaybe\n")
  assert _one_line_error("hp_glue_mnli", "validation_mismatched") == (
      f"ValueError: {path} line 3: label 'maybe' is not one of ['entailment', "
      "'neutral', 'contradiction'].")
  jsonl = tmp_path / "SuperGLUE" / "CB" / "val.jsonl"
  jsonl.parent.mkdir(parents=True)
  jsonl.write_text(json.dumps({"idx": 0, "label": "unsure", "premise": "A",
                               "hypothesis": "B"}) + "\n")
  assert _one_line_error("hp_superglue_cb", "validation").startswith(
      f"ValueError: {jsonl} line 1: label 'unsure' is not one of ['entailment',")


def test_tfds_failure_names_the_gin_parameter_for_local_files(monkeypatch):
  from hyperprompt.tasks import sources  # pylint: disable=g-import-not-at-top
  source = seqio.get_mixture_or_task("hp_glue_rte").source
  assert isinstance(source, sources.BenchmarkSource)

  def offline(*args, **kwargs):
    raise ConnectionError("could not reach storage.googleapis.com")
  monkeypatch.setattr(source._tfds, "get_dataset", offline)  # pylint: disable=protected-access
  monkeypatch.setattr(source._tfds, "list_shards", lambda split: [])  # pylint: disable=protected-access
  with pytest.raises(RuntimeError, match=r"glue/rte:.* split 'train' \("
                     "ConnectionError: could not reach.*local_data_dirs.glue"):
    source.get_dataset("train")
  with pytest.raises(RuntimeError, match="no files for the split.*"
                     "local_data_dirs.glue"):
    source.list_shards("validation")


def test_unreadable_sentencepiece_model_names_the_gin_parameter(tmp_path):
  from hyperprompt.tasks import tokenizer  # pylint: disable=g-import-not-at-top
  with pytest.raises(OSError, match=f"SentencePiece model {tmp_path}/none"
                     ".*text_vocabulary.sentencepiece_path="):
    tokenizer.text_vocabulary(sentencepiece_path=str(tmp_path / "none"))


def test_readme_glue_route_on_local_files_and_vocabulary(tmp_path):
  """The README's GLUE train command, offline: its flags plus the two gin
  parameters the README names for local data and a local SentencePiece
  model, parsed as the command line does, give the runner's training
  batches (no model is compiled: t5_1_1_base is the README's size)."""
  import argparse  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from hyperprompt import data, gin_cli, models, partitioning  # pylint: disable=g-import-not-at-top
  spm = os.path.join(os.path.dirname(seqio.__file__), "test_data",
                     "sentencepiece", "sentencepiece.model")
  if not os.path.exists(spm):
    pytest.skip("seqio's test SentencePiece model is not installed")
  rte = tmp_path / "glue_data" / "RTE" / "train.tsv"
  rte.parent.mkdir(parents=True)
  rte.write_text("index\tsentence1\tsentence2\tlabel\n"
                 "0\tA dog runs.\tAn animal moves.\tentailment\n"
                 "1\tIt rains.\tThe sun shines.\tnot_entailment\n")
  args, bindings = gin_cli.parse(argparse.ArgumentParser(), [
      "--gin_file=models/sizes/t5_1_1_base.gin",
      "--gin_file=models/conditioners/hyperprompt_global.gin",
      "--gin_file=runs/train.gin", '--gin.MODEL_DIR="/tmp/hp_glue"',
      '--gin.MIXTURE_OR_TASK_NAME="hp_glue_rte"',
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}",
      "--gin.TRAIN_STEPS=200000",
      f'--gin.hyperprompt.tasks.sources.local_data_dirs.glue="{rte.parent.parent}"',
      "--gin.hyperprompt.tasks.tokenizer.text_vocabulary.sentencepiece_path="
      f'"{spm}"'])
  gin_cli.parse_gin(args.gin_file, bindings, args.gin_search_paths)
  gin_cli.check_macro_values()
  model = gin.get_configurable(models.EncoderDecoderModel)()
  batch = next(data.as_numpy_batches(iter(data.train_dataset(
      "hp_glue_rte", {"inputs": 32, "targets": 4}, 2,
      partitioning.Partitioner().shard_info(), model=model))))
  model.validate_batch(batch)
  assert batch["encoder_input_tokens"].shape == (2, 32)
  # The task's id is its place in hp_glue's task vocabulary.
  rte_id = list(hyperprompt.tasks.task_vocabulary("hp_glue").names).index(
      "hp_glue_rte")
  assert set(batch["task_ids"].ravel()) == {rte_id}
  vocabulary = model.input_vocabulary
  texts = {vocabulary.decode(row.tolist())
           for row in batch["encoder_input_tokens"]}
  assert any("dog" in t for t in texts) or any("rains" in t for t in texts)
