"""The token vocabulary of the GLUE/SuperGLUE tasks, chosen in gin.

Tasks are registered when `hyperprompt.tasks` is imported, which may happen
before gin has parsed its bindings (a gin file's `import` line runs first). So
the tasks hold a `DeferredVocabulary` that asks gin for the vocabulary each
time it is used: the choice made in gin always wins, whatever the import order,
and nothing is loaded (T5's SentencePiece model lives on GCS) until a dataset
is actually tokenized or decoded.

    # gin: any seqio vocabulary, e.g. for tests
    hyperprompt.tasks.tokenizer.text_vocabulary.vocabulary = @seqio.ByteVocabulary()
"""
import functools
from typing import Optional

import gin
import seqio

T5_SENTENCEPIECE_PATH = 'gs://t5-data/vocabs/cc_all.32000/sentencepiece.model'
T5_EXTRA_IDS = 100  # T5's sentinel tokens; 32000 + 100 = 32100 ids.


@functools.cache
def _sentencepiece(path: str, extra_ids: int) -> seqio.SentencePieceVocabulary:
  """One instance per model file, loaded here so that a file that cannot be
  read (offline, for T5's on GCS) fails once, naming the gin parameter."""
  vocabulary = seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)
  try:
    vocabulary.vocab_size  # pylint: disable=pointless-statement
  except Exception as e:  # pylint: disable=broad-except
    raise OSError(
        f'Cannot read the SentencePiece model {path} ({type(e).__name__}: '
        f"{' '.join(str(e).split())[:200]}). Without network access, copy "
        'it to a local file and set --gin.hyperprompt.tasks.tokenizer.'
        'text_vocabulary.sentencepiece_path=\\"/path/to/sentencepiece.model\\".'
    ) from e
  return vocabulary


@gin.configurable(module='hyperprompt.tasks.tokenizer')
def text_vocabulary(
    vocabulary: Optional[seqio.Vocabulary] = None,
    sentencepiece_path: str = T5_SENTENCEPIECE_PATH,
    extra_ids: int = T5_EXTRA_IDS,
) -> seqio.Vocabulary:
  """The vocabulary bound in gin, else the SentencePiece model at the path.

  Args:
    vocabulary: any seqio vocabulary; takes precedence when given.
    sentencepiece_path: SentencePiece model file (default: T5's, on GCS).
    extra_ids: sentinel ids appended to the SentencePiece vocabulary.
  """
  if vocabulary is not None:
    return vocabulary
  return _sentencepiece(sentencepiece_path, extra_ids)


class DeferredVocabulary(seqio.Vocabulary):
  """A seqio vocabulary that forwards every use to `text_vocabulary()`."""

  @property
  def resolved(self) -> seqio.Vocabulary:
    return text_vocabulary()

  @property
  def eos_id(self):
    return self.resolved.eos_id

  @property
  def unk_id(self):
    return self.resolved.unk_id

  @property
  def pad_id(self):
    return self.resolved.pad_id

  @property
  def bos_id(self):
    return self.resolved.bos_id

  @property
  def extra_ids(self):
    return self.resolved.extra_ids

  @property
  def vocab_size(self):
    return self.resolved.vocab_size

  @property
  def _base_vocab_size(self):
    return self.resolved.vocab_size - self.resolved.extra_ids

  def encode(self, s):
    return self.resolved.encode(s)

  def decode(self, ids):
    return self.resolved.decode(ids)

  def encode_tf(self, s):
    return self.resolved.encode_tf(s)

  def decode_tf(self, ids):
    return self.resolved.decode_tf(ids)

  # The abstract hooks are only reached through the public methods above.
  def _encode(self, s):
    return self.resolved.encode(s)

  def _decode(self, ids):
    return self.resolved.decode(ids)

  def _encode_tf(self, s):
    return self.resolved.encode_tf(s)

  def _decode_tf(self, ids):
    return self.resolved.decode_tf(ids)

  def __eq__(self, other):
    if isinstance(other, DeferredVocabulary):
      return True  # Both resolve to the same gin binding.
    return self.resolved == other

  def __hash__(self):
    return hash(DeferredVocabulary)


# The single instance every GLUE/SuperGLUE task shares.
DEFERRED_VOCABULARY = DeferredVocabulary()
