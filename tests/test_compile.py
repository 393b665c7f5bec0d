"""`hyperprompt compile`: the runner's steps compiled for a TPU topology that is
not here (libtpu's compiler, no TPU), and its memory report.

The reported per-device parameter bytes are checked against a count by hand
from the T5 shapes and the 1-D partitioning rule (matrices split over 'model',
norms replicated), and against XLA's own argument sizes.
"""
import functools
import os
import subprocess
import sys

import pytest
import seqio

pytest.importorskip('libtpu')

from hyperprompt import compile as compile_lib  # pylint: disable=g-import-not-at-top
from hyperprompt import libtpu_options, models, network, partitioning, trainer
from hyperprompt.config import T5Config

# Every matrix dim split over 'model' is divisible by 4.
CONFIG = T5Config(vocab_size=384, emb_dim=64, num_heads=4, head_dim=24,
                  num_encoder_layers=2, num_decoder_layers=2, mlp_dim=128,
                  dropout_rate=0.0, relative_attention_num_buckets=16,
                  relative_attention_max_distance=32, scan_layers=True)
BATCH, LENGTHS = 8, {'inputs': 16, 'targets': 8}


def _hand_count_per_device(cfg: T5Config, model_partitions: int) -> int:
  """float32 bytes on one device: every matrix (embedding, logits, attention,
  MLP, relative position biases) split `model_partitions` ways, every layer
  norm scale replicated."""
  d, kv, f = cfg.emb_dim, cfg.joined_kv, cfg.mlp_dim
  attention = 4 * d * kv
  mlp = 3 * d * f  # wi_0, wi_1 (gated), wo
  matrices = (2 * cfg.vocab_size * d +
              cfg.num_encoder_layers * (attention + mlp) +
              cfg.num_decoder_layers * (2 * attention + mlp) +
              2 * cfg.relative_attention_num_buckets * cfg.num_heads)
  norms = d * (2 * cfg.num_encoder_layers + 3 * cfg.num_decoder_layers + 2)
  return 4 * (matrices // model_partitions + norms)


def test_train_score_and_decode_compile_for_v5e_2x2():
  vocab = seqio.PassThroughVocabulary(CONFIG.vocab_size, eos_id=1)
  model = models.EncoderDecoderModel(network.Transformer(CONFIG), vocab,
                                     vocab)
  bindings = dict(
      model=model, task_feature_lengths=LENGTHS, batch_size=BATCH,
      partitioner=functools.partial(partitioning.Partitioner,
                                    num_partitions=4),
      make_optimizer=trainer.make_optimizer)
  train, score, decode = compile_lib.compile_train(
      'v5e:2x2', eval_steps=True, bindings=bindings)
  assert train.device_kind == 'TPU v5 lite' and train.num_devices == 4
  assert train.mesh == {'data': 1, 'model': 4}
  assert train.params == _hand_count_per_device(CONFIG, 4)
  # XLA's inputs are the state and batch we counted, padded to TPU tiles
  # (a [64] norm scale takes a 128-wide tile): never less.
  state = train.params + train.optimizer_state
  assert train.arguments >= state + train.batch
  # The new state is written over the donated old one.
  assert train.aliased >= state
  # Dims under 128 are not factored: Adafactor keeps a full second moment.
  assert train.optimizer_state >= train.params
  assert train.fits and train.hbm == 16 * 1024**3
  assert train.flops > 0 and train.temporaries > 0
  # XLA's peak holds the inputs and at most what the total reserves.
  assert train.arguments <= train.peak <= train.total
  # Tensor parallelism reduces partial sums across the 'model' axis.
  assert train.collectives['all-reduce'][0] > 0
  assert score.step == 'score' and score.fits
  assert decode.step == 'decode' and decode.fits
  assert decode.params == train.params and decode.optimizer_state == 0
  assert 'train step on v5e:2x2' in train.table()
  # Set before libtpu loaded, unless a test before this one loaded it.
  assert libtpu_options.FIBER_STACK_FLAG in os.environ['LIBTPU_INIT_ARGS']


def test_fiber_stack_is_added_to_libtpu_args_unless_given():
  flag = libtpu_options.FIBER_STACK_FLAG
  env = {}
  libtpu_options.set_defaults(env)
  assert env == {'LIBTPU_INIT_ARGS': f'{flag}={16 * 2**20}'}
  env = {'LIBTPU_INIT_ARGS': '--xla_tpu_x=1'}
  libtpu_options.set_defaults(env)
  assert env['LIBTPU_INIT_ARGS'] == f'--xla_tpu_x=1 {flag}={16 * 2**20}'
  env = {'LIBTPU_INIT_ARGS': f'{flag}=1048576'}
  libtpu_options.set_defaults(env)
  assert env['LIBTPU_INIT_ARGS'] == f'{flag}=1048576'


def test_collectives_are_read_from_hlo_text():
  hlo = '''
    %all-reduce.1 = f32[4,8]{1,0} all-reduce(f32[4,8]{1,0} %x), to_apply=%add
    %ag = (bf16[2,8]{1,0}, bf16[16]{0}) all-gather-start(bf16[1,8]{1,0} %y)
    %ag.done = bf16[2,8]{1,0} all-gather-done(%ag)
    %add.1 = f32[4,8]{1,0} add(%a, %b)
  '''
  assert compile_lib.collectives(hlo) == {'all-reduce': (1, 128),
                                          'all-gather': (1, 64)}


def test_oversized_run_exits_with_the_buffers_and_what_to_try():
  """A 1M-token vocabulary at width 1024 needs 8 GiB of embedding and output
  layer on each v5e chip, and as much again for their gradients."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  args = [sys.executable, '-m', 'hyperprompt.main', 'compile',
          '--topology=v5e:2x2', '--gin_file=models/sizes/tiny.gin',
          '--gin_file=models/conditioners/none.gin',
          '--gin_file=runs/train.gin', '--gin_file=runs/synthetic.gin',
          '--gin.MODEL_DIR="/tmp/unused"', '--gin.TRAIN_STEPS=1',
          '--gin.BATCH_SIZE=8', '--gin.VOCAB_SIZE=1048576',
          '--gin.config.T5Config.emb_dim=1024']
  proc = subprocess.run(args, capture_output=True, text=True, env=env,
                        timeout=600)
  assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert 'does not fit on v5e:2x2' in last
  assert "['token_embedder']['embedding'] 4.00 GiB" in last
  assert 'NUM_PARTITIONS' in last and 'parameter_partitioning_dims=2' in last


def test_unknown_topology_is_a_clear_error():
  with pytest.raises(ValueError, match="Cannot build TPU topology 'v9z:1x1'"):
    compile_lib.topology_devices('v9z:1x1')
  with pytest.raises(ValueError, match="write 'cpu:N'"):
    compile_lib.topology_devices('cpu:eight')

