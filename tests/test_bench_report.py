"""The benchmark report: variant jobs and the decode roofline, hand-computed."""
from bench import report


def _run(job, **result):
  return {'job': job, 'result': result, 'load_before': [0.1, 0, 0]}


def _results(*runs):
  machine = _run({'job': 'machine'}, xla_peak={'float32': 100e9},
                 memory_bandwidth=10e9)
  return {'runs': [machine, *runs]}


def test_variant_jobs_match_only_when_asked_for():
  plain = {'job': 'ours_train', 'shape': 'small', 'conditioner': 'none'}
  rbg = _run(dict(plain, prng_impl='unsafe_rbg'), step_seconds=1.0)
  default = _run(plain, step_seconds=2.0)
  # The variant comes first; a query without it must still get the default.
  runs = _results(rbg, default)['runs']
  assert report._find(runs, **plain) is default
  assert report._find(runs, **plain, prng_impl='unsafe_rbg') is rbg
  assert report._variant(rbg['job']) == ', unsafe_rbg dropout keys'


def test_decode_roofline_by_hand():
  results = _results(
      _run({'job': 'ours_decode', 'shape': 'small', 'conditioner': 'none',
            'batch_shape': [8, 128, 32]}, step_seconds=0.84,
           generated_length=32, bytes_per_position=100e6,
           encoder_flops=10e9),
      _run({'job': 'hf_generate', 'shape': 'small',
            'batch_shape': [8, 128, 32]}, step_seconds=0.9),
      # Batch 64: its own line, its own cache bytes, no transformers run.
      _run({'job': 'ours_decode', 'shape': 'small', 'conditioner': 'none',
            'batch_shape': [64, 128, 32]}, step_seconds=2.0,
           generated_length=32, bytes_per_position=150e6,
           encoder_flops=80e9))
  text, _, text64 = report._decode_roofline(results, 'small')
  # 32 x 150 MB / 10 GB/s = 480 ms, + 800 ms encoder: 1,280 ms, 64%.
  assert text64.startswith('Roofline, batch 64:')
  assert 'less than 1,280 ms' in text64 and '(64% of the bound' in text64
  assert 'transformers' not in text64
  # 32 positions x 100 MB / 10 GB/s = 320 ms; 10 GFLOP / 100 GFLOP/s =
  # 100 ms; ours runs at 420 / 840 = 50% of the bound's speed; 3x
  # transformers would need 300 ms < 420 ms.
  assert 'less than 420 ms' in text
  assert '(50% of the bound' in text
  assert 'would need 300 ms, below the bound' in text


def test_decode_roofline_needs_the_measurements():
  # Results from before the roofline fields existed: no statement at all.
  results = _results(_run({'job': 'ours_decode', 'shape': 'small',
                           'conditioner': 'none'}, step_seconds=1.0,
                          generated_length=32))
  assert report._decode_roofline(results, 'small') == []
