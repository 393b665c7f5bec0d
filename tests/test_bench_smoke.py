"""The benchmark harness runs, and its analytic FLOPs match XLA's count.

Benchmarks are not tests: nothing here looks at a time. This runs
`bench.ours.train` (the same code `make bench` runs) for two steps of every
conditioner on the tiny shape (one layer per stack) and checks that
- the analytic matmul FLOPs of the step (`bench/flops.py`) are within
  [0.85, 1.0] of XLA's `cost_analysis()['flops']` of the compiled step: XLA
  also counts elementwise work (softmax, norms, Adafactor), which the
  analytic count leaves out, so it must never be larger and may be up to
  15% smaller at these small widths;
- the second step does not compile anything;
- greedy decoding, which a full run measures at batch 1, 8 and 64, reads
  the decoder's parameters and one cache per example at every position.
"""
import dataclasses

import jax
import pytest

from bench import flops as flops_lib
from bench import ours
from bench import run
from bench import workload

SHAPE = workload.BatchShape(batch=4, inputs=32, targets=16)
NUM_TASKS = 3


@pytest.fixture(scope='module')
def tiny():
  # The tiny shape with one layer per stack: compilation dominates this
  # test's time and grows with the layer count; one layer of each kind
  # covers every FLOP term.
  cfg = dataclasses.replace(workload.t5_config('tiny', dropout_rate=0.0),
                            num_encoder_layers=1, num_decoder_layers=1)
  return cfg, workload.make_batch(cfg, SHAPE, NUM_TASKS)


@pytest.mark.parametrize('name', ours.conditioner_names())
def test_train_step_flops_and_no_recompilation(tiny, name):
  cfg, batch = tiny
  # rbg keys compile the random parameter initialisation 2-3x faster than
  # threefry; the values do not matter here.
  with jax.default_prng_impl('unsafe_rbg'):
    result = ours.train(cfg, name, batch, num_tasks=NUM_TASKS, warmup=1,
                        steps=1)
  ratio = result['analytic_flops'] / result['xla_flops']
  assert 0.85 <= ratio <= 1.0, (name, result['analytic_flops'],
                                result['xla_flops'])
  assert result['compiles_after_first_step'] == 0
  assert result['loss'] > 0


def test_flops_hand_computed_case():
  """With zero layers only the output projection remains: forward
  2 * target tokens * d * V, a training step 3x that."""
  cfg = dataclasses.replace(workload.t5_config('tiny'), num_encoder_layers=0,
                            num_decoder_layers=0)
  got = flops_lib.train_step_flops(cfg, batch=2, inputs=5, targets=3)
  assert got == 3 * 2 * (2 * 3) * cfg.emb_dim * cfg.vocab_size


def test_prefix_adds_only_attention_flops():
  """A key/value prefix of length l adds 2 * 2 * q * l * h*d_h per attention
  (logits and value mixing) and nothing in the FFN (METHOD.md 4)."""
  cfg = workload.t5_config('tiny')
  l = 16
  base = flops_lib.forward_flops(cfg, 1, 10, 4)
  prompted = flops_lib.forward_flops(
      cfg, 1, 10, 4, flops_lib.Conditioned(encoder_prefix=l,
                                           decoder_prefix=l))
  extra = 2 * 2 * l * cfg.joined_kv * (
      10 * cfg.num_encoder_layers + 4 * cfg.num_decoder_layers)
  assert prompted['total'] - base['total'] == extra


def test_frozen_backbone_step_is_ours_xla_count(tiny):
  """Conditioning-only training with PEFT's placement: the frozen-backbone
  FLOP model against XLA's count of our compiled step, as above."""
  cfg, batch = tiny
  with jax.default_prng_impl('unsafe_rbg'):
    result = ours.train(cfg, 'prefix_tuning_decoder', batch,
                        num_tasks=NUM_TASKS, warmup=1, steps=1,
                        train_params='conditioning')
  ratio = result['analytic_flops'] / result['xla_flops']
  assert 0.85 <= ratio <= 1.0, (result['analytic_flops'], result['xla_flops'])
  # No optimizer state for the backbone: Adafactor keeps at most one
  # parameter's worth of moments for each conditioner parameter.
  assert result['state_bytes']['opt_state'] <= (
      4 * result['conditioner_params'] + 1024)


def test_frozen_backbone_flops_hand_computed_case():
  """With zero layers: the output projection forward (2 * tokens * d * V)
  and its activation gradient (the same again), no weight gradient; the
  conditioner trains in full (3x)."""
  cfg = dataclasses.replace(workload.t5_config('tiny'), num_encoder_layers=0,
                            num_decoder_layers=0)
  forward = 2 * (2 * 3) * cfg.emb_dim * cfg.vocab_size
  got = flops_lib.frozen_backbone_step_flops(
      cfg, batch=2, inputs=5, targets=3,
      cond=flops_lib.Conditioned(decoder_prefix=4, conditioner_flops=100))
  assert got == 2 * forward + 3 * 100


def test_peft_prefix_encoder_flops_hand_computed():
  """PEFT's MLP on batch * l rows: token_dim -> d_model -> L * 2 * token_dim."""
  cfg = workload.t5_config('tiny')
  rows = 4 * 16
  assert flops_lib.peft_prefix_flops(cfg, batch=4, num_virtual_tokens=16) == (
      2 * rows * cfg.joined_kv * cfg.emb_dim +
      2 * rows * cfg.emb_dim * cfg.num_decoder_layers * 2 * cfg.joined_kv)


def test_full_run_decodes_at_batch_1_8_and_64():
  """Ours and transformers' generate, each at the three batch sizes."""
  todo = run.jobs('tiny', full=True, warmup=1, steps=2)
  batches = lambda kind: sorted(j['batch_shape'][0] for j in todo
                                if j['job'] == kind and
                                j.get('conditioner', 'none') == 'none')
  assert batches('ours_decode') == [1, 8, 8, 64]  # 8: also with Eigen dots
  assert batches('hf_generate') == [1, 8, 64]
  # Where decoding's time goes, at batch 8 and where computing bounds it.
  assert sorted(j['batch_shape'][0] for j in todo
                if j['job'] == 'ours_profile' and j.get('decode')) == [8, 64]


def test_decode_reads_one_cache_per_example(tiny):
  """What a decode reads per position is the decoder's parameters plus a
  cache per example, so it is affine in the batch size: 64 - 8 examples add
  8x what 8 - 1 add. The encoder's FLOPs are linear in it."""
  cfg, _ = tiny
  got = {}
  for b in (1, 8, 64):
    batch = workload.make_batch(
        cfg, workload.BatchShape(b, SHAPE.inputs, SHAPE.targets), NUM_TASKS)
    with jax.default_prng_impl('unsafe_rbg'):
      got[b] = ours.decode(cfg, 'none', batch, num_tasks=NUM_TASKS, warmup=1,
                           steps=1)
    assert got[b]['generated_length'] == SHAPE.targets
    assert got[b]['compiles_after_first_call'] == 0
  read = {b: r['bytes_per_position'] for b, r in got.items()}
  assert read[64] - read[8] == 8 * (read[8] - read[1]) > 0
  assert got[64]['encoder_flops'] == 64 * got[1]['encoder_flops']
  # A step multiplies every decoder weight matrix but the cross-attention
  # keys' and values' (projected once) by the batch's rows, and attends over
  # the self- and cross-attention caches: logits and values, 2 FLOPs each.
  d, kv, mlp = cfg.emb_dim, cfg.joined_kv, cfg.mlp_dim
  layer = 6 * d * kv + (len(cfg.mlp_activations) + 1) * d * mlp
  weights = cfg.num_decoder_layers * layer + d * cfg.vocab_size
  keys = cfg.num_decoder_layers * kv * (SHAPE.targets + SHAPE.inputs)
  for b in (1, 8, 64):
    assert got[b]['flops_per_position'] == 2 * b * weights + 4 * b * keys


def test_paired_job_interleaves_ours_and_transformers():
  """A paired job (the ratio targets' measurement) runs both sides in one
  process; each side's result is its own job's, from its timed rounds."""
  from bench import worker  # pylint: disable=g-import-not-at-top
  common = dict(shape='tiny', batch_shape=[2, 16, 8], num_tasks=NUM_TASKS,
                dropout_rate=0.1)
  with jax.default_prng_impl('unsafe_rbg'):
    result = worker.run(dict(
        job='paired', target='speedup_f32', warmup=1, rounds=2,
        a=dict(common, job='ours_train', conditioner='none'),
        b=dict(common, job='hf_train', precision='float32')))
  assert len(result['times_a']) == len(result['times_b']) == 2
  assert result['a']['step_seconds'] == sum(result['times_a']) / 2
  assert result['b']['step_seconds'] == sum(result['times_b']) / 2
  assert result['a']['loss'] > 0
  assert result['b']['trainable_params'] == result['b']['total_params']
  # Each side would count the other's compilations: not reported here.
  assert 'compiles_after_first_step' not in result['a']
