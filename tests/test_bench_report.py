"""The benchmark report: variant jobs and the decode roofline, hand-computed;
BENCHMARKS.md's generated sections against the results JSON."""
import json
import math
import os

import pytest

from bench import markdown_section
from bench import report
from bench import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  assert report.find_run(runs, **plain) is default
  assert report.find_run(runs, **plain, prng_impl='unsafe_rbg') is rbg
  assert report.variant_label(rbg['job']) == ', unsafe_rbg dropout keys'


def test_decode_roofline_by_hand():
  results = _results(
      _run({'job': 'ours_decode', 'shape': 'small', 'conditioner': 'none',
            'batch_shape': [8, 128, 32]}, step_seconds=0.84,
           generated_length=32, bytes_per_position=100e6,
           encoder_flops=10e9),
      _run({'job': 'hf_generate', 'shape': 'small',
            'batch_shape': [8, 128, 32]}, step_seconds=0.9),
      # Batch 64: its own row, its own cache bytes, no transformers run.
      _run({'job': 'ours_decode', 'shape': 'small', 'conditioner': 'none',
            'batch_shape': [64, 128, 32]}, step_seconds=2.0,
           generated_length=32, bytes_per_position=150e6,
           encoder_flops=80e9))
  row8, row64 = report.decode_roofline(results, 'small')
  # 32 positions x 100 MB / 10 GB/s = 320 ms; 10 GFLOP / 100 GFLOP/s =
  # 100 ms; ours runs at 420 / 840 = 50% of the bound's speed; 3x
  # transformers would need 300 ms < 420 ms.
  assert row8['batch'] == 8
  assert row8['read_s'] == pytest.approx(0.32)
  assert row8['encode_s'] == pytest.approx(0.1)
  assert row8['bound_s'] == pytest.approx(0.42)
  assert row8['fraction_of_bound'] == pytest.approx(0.5)
  assert row8['target_s'] == pytest.approx(0.3)
  # 32 x 150 MB / 10 GB/s = 480 ms, + 800 ms encoder: 1,280 ms, 64%.
  assert row64['batch'] == 64
  assert row64['bound_s'] == pytest.approx(1.28)
  assert row64['fraction_of_bound'] == pytest.approx(0.64)
  assert row64['target_s'] is None


def test_decode_roofline_needs_the_measurements():
  # Results from before the roofline fields existed: no rows at all.
  results = _results(_run({'job': 'ours_decode', 'shape': 'small',
                           'conditioner': 'none'}, step_seconds=1.0,
                          generated_length=32))
  assert report.decode_roofline(results, 'small') == []


def test_sections_replace_their_text_and_keep_the_prose(tmp_path):
  path = str(tmp_path / 'BENCHMARKS.md')
  begin, end = report.markers('params')
  markdown_section.replace(f'{begin}\nold table\n{end}', begin, end, path)
  with open(path, 'a') as f:
    f.write('Prose written by people.\n')
  markdown_section.replace(f'{begin}\nnew table\n{end}', begin, end, path)
  other_begin, other_end = report.markers('memory')
  markdown_section.replace(f'{other_begin}\nmemory\n{other_end}',
                           other_begin, other_end, path)
  with open(path) as f:
    assert f.read() == (f'{begin}\nnew table\n{end}\n'
                        'Prose written by people.\n\n'
                        f'{other_begin}\nmemory\n{other_end}\n')


def test_benchmarks_md_holds_the_tables_of_the_results_json():
  """Every generated section of BENCHMARKS.md is what the report computes
  from the committed bench/results.json and bench/memory.json."""
  with open(os.path.join(ROOT, 'bench', 'results.json')) as f:
    results = json.load(f)
  with open(os.path.join(ROOT, 'bench', 'memory.json')) as f:
    memory = json.load(f)
  with open(os.path.join(ROOT, 'BENCHMARKS.md')) as f:
    text = f.read()
  for name, lines in report.sections(results, memory):
    assert report.section_text(name, lines) in text, name


def test_throughput_chart_range_is_slowest_to_fastest_step():
  # Step times 3, 1, 2, 4 s of 100 tokens: median 2.5 s.
  times = timing.summary([3.0, 1.0, 2.0, 4.0])
  assert times == {'step_seconds': 2.5, 'step_seconds_min': 1.0,
                   'step_seconds_max': 4.0, 'steps_timed': 4}
  assert report.rate_range(100, times) == (40.0, 25.0, 100.0)
  # Results from before step_seconds_max was recorded: slowest unknown.
  del times['step_seconds_max']
  median, slowest, fastest = report.rate_range(100, times)
  assert (median, fastest) == (40.0, 100.0) and math.isnan(slowest)
