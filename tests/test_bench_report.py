"""The benchmark report: variant jobs, the decode roofline and the targets
across CPU types, hand-computed; BENCHMARKS.md's and README.md's generated
sections against the results JSONs."""
import json
import math
import os

import pytest

from bench import markdown_section
from bench import report
from bench import scale
from bench import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(job, **result):
  return {'job': job, 'result': result, 'load_before': [0.1, 0, 0]}


def _results(*runs, cpu='AMD EPYC 7B13 64-Core Processor'):
  machine = _run({'job': 'machine'}, xla_peak={'float32': 100e9},
                 memory_bandwidth=10e9, machine={'cpu': cpu, 'cores': 2})
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
           flops_per_position=0.5e9, encoder_flops=10e9),
      _run({'job': 'hf_generate', 'shape': 'small',
            'batch_shape': [8, 128, 32]}, step_seconds=0.9),
      # Batch 64: its own row, its own cache bytes, no transformers run.
      _run({'job': 'ours_decode', 'shape': 'small', 'conditioner': 'none',
            'batch_shape': [64, 128, 32]}, step_seconds=3.0,
           generated_length=32, bytes_per_position=150e6,
           flops_per_position=5e9, encoder_flops=80e9),
      # Batch 1, recorded before flops_per_position: the reading roof only.
      _run({'job': 'ours_decode', 'shape': 'small', 'conditioner': 'none',
            'batch_shape': [1, 128, 32]}, step_seconds=0.5,
           generated_length=32, bytes_per_position=90e6,
           encoder_flops=1e9))
  row8, row64, row1 = report.decode_roofline(results, 'small')
  # 32 positions x 100 MB / 10 GB/s = 320 ms of reading, more than the 32 x
  # 0.5 GFLOP / 100 GFLOP/s = 160 ms of computing; 10 GFLOP / 100 GFLOP/s =
  # 100 ms of encoder; ours runs at 420 / 840 = 50% of the bound's speed;
  # the target, 2x transformers, allows 450 ms.
  assert row8['batch'] == 8
  assert row8['read_s'] == pytest.approx(0.32)
  assert row8['compute_s'] == pytest.approx(0.16)
  assert row8['encode_s'] == pytest.approx(0.1)
  assert row8['bound_s'] == pytest.approx(0.42)
  assert row8['fraction_of_bound'] == pytest.approx(0.5)
  assert row8['target_s'] == pytest.approx(0.45)
  # Reading 32 x 150 MB / 10 GB/s = 480 ms, computing 32 x 5 GFLOP / 100
  # GFLOP/s = 1,600 ms: computing bounds it; + 800 ms encoder: 2,400 ms, 80%.
  assert row64['batch'] == 64
  assert row64['read_s'] == pytest.approx(0.48)
  assert row64['compute_s'] == pytest.approx(1.6)
  assert row64['bound_s'] == pytest.approx(2.4)
  assert row64['fraction_of_bound'] == pytest.approx(0.8)
  assert row64['target_s'] is None
  # 32 x 90 MB / 10 GB/s = 288 ms + 10 ms encoder, 298 / 500 = 59.6%.
  assert row1['compute_s'] is None
  assert row1['bound_s'] == pytest.approx(0.298)
  assert row1['fraction_of_bound'] == pytest.approx(0.596)


def test_decode_roofline_needs_the_measurements():
  # Results from before the roofline fields existed: no rows at all.
  results = _results(_run({'job': 'ours_decode', 'shape': 'small',
                           'conditioner': 'none'}, step_seconds=1.0,
                          generated_length=32))
  assert report.decode_roofline(results, 'small') == []


def test_cpu_slug_names_the_cpu_type():
  assert report.cpu_slug('Intel(R) Xeon(R) Processor') == 'intel-xeon'
  assert report.cpu_slug('AMD EPYC') == 'amd-epyc'
  assert report.cpu_slug('AMD EPYC 7B13 64-Core Processor') == (
      'amd-epyc-7b13-64-core')
  assert report.cpu_slug('Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz') == (
      'intel-xeon-platinum-8375c')
  with pytest.raises(ValueError, match='No CPU type'):
    report.cpu_slug('(R) CPU')


def _train(step_seconds, **job):
  return _run(dict({'job': 'ours_train', 'shape': 'small',
                    'conditioner': 'none', 'dtype': 'float32',
                    'batch_shape': [8, 128, 32]}, **job),
              step_seconds=step_seconds, analytic_flops=50e9,
              compiles_after_first_step=0)


def _hf(step_seconds, **job):
  return _run(dict({'job': 'hf_train', 'shape': 'small',
                    'precision': 'float32', 'batch_shape': [8, 128, 32]},
                   **job), step_seconds=step_seconds)


def _two_cpu_types():
  """On A ours is 2x transformers in f32, on B 1.1x; both 1.25x in bf16
  (on B ours in f32 is faster than in bf16: the faster one counts); only A
  ran PEFT."""
  a = _results(_train(1.0), _train(0.8, dtype='bfloat16'), _hf(2.0),
               _hf(1.0, precision='bfloat16'),
               _train(0.5, conditioner='prefix_tuning_decoder',
                      train_params='conditioning'),
               _hf(0.4, peft_prefix=16), cpu='Intel(R) Xeon(R) Processor')
  b = _results(_train(1.0), _train(1.1, dtype='bfloat16'), _hf(1.1),
               _hf(1.25, precision='bfloat16'), cpu='AMD EPYC')
  a['commit'], b['commit'] = 'aaaaaaa', 'bbbbbbb'
  return {'amd-epyc': b, 'intel-xeon': a}


def test_targets_are_met_only_on_every_cpu_type():
  lines = report.targets_table(_two_cpu_types(), 'small')
  header = next(l for l in lines if l.startswith('| target'))
  assert header == ('| target | wanted | AMD EPYC (bbbbbbb) | Intel Xeon '
                    'Processor (aaaaaaa) | met on every CPU type |')
  row = lambda start: next(l for l in lines if l.startswith('| ' + start))
  assert row('training tokens/s vs transformers f32').endswith(
      '| >= 1.3x | 1.10x | 2.00x | **no** |')
  assert row('bf16 training tokens/s').endswith(
      '| >= 1.0x | 1.25x | 1.25x | yes |')
  # 50 GFLOP / 1 s / 100 GFLOP/s on both.
  assert row('training FLOP utilisation').endswith(
      '| >= 60% | 50.0% | 50.0% | **no** |')
  # Tokens/s: 1280 / 0.5 s against 1280 / 0.4 s on A; B has neither.
  assert row('conditioning-only prefix tuning').endswith(
      '| >= 1.0x | - | 0.80x | not measured on AMD EPYC |')


def test_readme_quotes_the_range_across_cpu_types():
  (name, [sentence]), = report.readme_sections(_two_cpu_types())
  assert name == 'performance'
  assert 'has run on 2 CPU type(s): AMD EPYC (2 cores, commit bbbbbbb' in (
      sentence)
  assert ('a training step in f32 is 1.10x (AMD EPYC) to 2.00x (Intel Xeon '
          "Processor) as fast as transformers' at 50% (on every CPU type) of "
          'the f32 matmul peak') in sentence
  assert 'in bf16, 1.25x (on every CPU type) as fast' in sentence
  assert ("PEFT's placement is 0.80x (measured on Intel Xeon Processor only) "
          "as fast as PEFT's prefix tuning") in sentence
  assert 'greedy decoding at batch 8 is not measured' in sentence.lower()


def test_results_live_in_the_file_of_their_cpu_type(tmp_path):
  directory = tmp_path / 'bench' / 'results'
  directory.mkdir(parents=True)
  results = _two_cpu_types()
  for slug, r in results.items():
    (directory / f'{slug}.json').write_text(json.dumps(r))
  assert report.load_all(str(tmp_path)) == results
  assert report.results_file(str(directory), 'AMD EPYC') == str(
      directory / 'amd-epyc.json')
  (directory / 'amd-epyc.json').rename(directory / 'xeon.json')
  with pytest.raises(ValueError, match="xeon.json holds a run on 'AMD EPYC'"):
    report.load_all(str(tmp_path))


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
  # A new section goes before the first of the following sections that is
  # there: after the prose that follows the one before it.
  new_begin, new_end = report.markers('cpu-new')
  markdown_section.replace(f'{new_begin}\nnew\n{new_end}', new_begin,
                           new_end, path,
                           before=[report.markers('absent')[0], other_begin])
  with open(path) as f:
    assert f.read() == (f'{begin}\nnew table\n{end}\n'
                        'Prose written by people.\n\n'
                        f'{new_begin}\nnew\n{new_end}\n\n'
                        f'{other_begin}\nmemory\n{other_end}\n')


def test_benchmarks_md_holds_the_tables_of_the_results_json():
  """Every generated section of BENCHMARKS.md and README.md is what the
  report computes from the committed bench/results/ and bench/memory.json."""
  results = report.load_all(ROOT)
  with open(os.path.join(ROOT, 'bench', 'memory.json')) as f:
    memory = json.load(f)
  for path, sections in (
      ('BENCHMARKS.md', report.sections(results, memory)),
      ('README.md', report.readme_sections(results))):
    with open(os.path.join(ROOT, path)) as f:
      text = f.read()
    for name, lines in sections:
      assert report.section_text(name, lines) in text, (path, name)


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


def test_median_interval_from_order_statistics_by_hand():
  # n = 15: P(Binomial(15, 1/2) < 4) = (1 + 15 + 105 + 455) / 2^15 = 0.0176
  # <= 0.025 and P(< 5) = 0.059 > 0.025, so the 95% interval is the 4th to
  # the 12th smallest value.
  values = [float(v) for v in (15, 3, 9, 1, 12, 6, 14, 2, 8, 11, 5, 13, 7,
                               4, 10)]
  assert timing.median_interval(values) == (8.0, 4.0, 12.0)
  # n = 12: P(< 3) = 79 / 4096 = 0.019 <= 0.025, P(< 4) = 0.073: 3rd to 10th.
  assert timing.median_interval([float(v) for v in range(1, 13)]) == (
      6.5, 3.0, 10.0)
  # Too few values for 95% (n = 5: min and max cover 94%): the whole range.
  assert timing.median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (3.0, 1.0,
                                                                5.0)
  with pytest.raises(ValueError):
    timing.median_interval([])


def test_paired_steps_alternate_which_side_goes_first():
  order = []
  side = lambda name: timing.Timed(lambda: order.append(name), None)
  times_a, times_b = timing.paired(side('a'), side('b'), warmup=1, rounds=3)
  assert order == ['a', 'b', 'a', 'b', 'b', 'a', 'a', 'b']
  assert len(times_a) == len(times_b) == 3


def _paired(target, times_a, times_b, job_a=None, **sides):
  job_a = job_a or {'job': 'ours_train', 'shape': 'small'}
  a = dict(timing.summary(times_a), **sides.get('a', {}))
  b = dict(timing.summary(times_b), **sides.get('b', {}))
  return _run({'job': 'paired', 'target': target, 'a': job_a,
               'b': {'job': 'hf_train', 'shape': 'small'}},
              a=a, b=b, times_a=times_a, times_b=times_b)


def test_paired_jobs_decide_the_ratio_targets():
  # Per-round ratios b/a: 1.2, 1.5, 1.4, 1.3, 1.1, 1.6 (n = 6: the 95%
  # interval is min to max); median 1.35. The jobs measured apart (1.1x)
  # are not what the target reads.
  times_a = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
  times_b = [1.2, 1.5, 1.4, 1.3, 1.1, 1.6]
  pair = _paired('speedup_f32', times_a, times_b,
                 a={'analytic_flops': 60e9})
  results = _results(_train(1.0), _hf(1.1), pair)
  assert report.paired_ratios(results, 'small') == {
      'speedup_f32': (pytest.approx(1.35), 1.1, 1.6, 6)}
  values = report.summary(results, 'small')
  assert values['speedup_f32'] == pytest.approx(1.35)
  # MFU from the pair's own step of ours: 60 GFLOP / 1 s / 100 GFLOP/s.
  assert values['mfu_f32'] == pytest.approx(0.6)
  lines = report.targets_table({'amd': results}, 'small')
  row = next(l for l in lines if l.startswith('| training tokens/s vs '
                                               'transformers f32'))
  assert row.endswith('| >= 1.3x | 1.35x (1.10-1.60, n=6) | yes |')
  assert any('95% confidence interval' in l for l in lines)


def test_paired_decoding_compares_tokens_per_second():
  # a generates 32 tokens in 1 s, b 16 in 1 s: a is 2x as fast per token.
  pair = _paired('decode_speedup', [1.0] * 6, [1.0] * 6,
                 job_a={'job': 'ours_decode', 'shape': 'small'},
                 a={'generated_length': 32}, b={'generated_length': 16})
  results = _results(pair)
  assert report.paired_ratios(results, 'small')['decode_speedup'][0] == 2.0


def test_full_run_pairs_every_ratio_target():
  from bench import run  # pylint: disable=g-import-not-at-top
  todo = run.jobs('tiny', full=True, warmup=1, steps=2)
  paired = {j['target']: j for j in todo if j['job'] == 'paired'}
  ratio_targets = {key for key, *_ in report.TARGETS
                   if key not in ('mfu_f32', 'decode_bound', 'recompiles')}
  assert set(paired) == ratio_targets
  assert paired['global_overhead']['a']['conditioner'] == 'none'
  assert paired['global_overhead']['b']['conditioner'] == (
      'hyperprompt_global')
  assert paired['peft_speedup']['b']['peft_prefix'] > 0
  assert all(j['rounds'] == run.PAIRED_ROUNDS for j in paired.values())


def test_disturbed_jobs_run_again_and_the_last_attempt_counts(monkeypatch):
  from bench import run  # pylint: disable=g-import-not-at-top
  # Slowest step 2x the fastest (disturbed), then 1.2x (steady).
  spreads = iter([2.0, 1.2, 3.0, 3.0, 3.0])
  calls = []

  def fake_run_job(job, allocator=None):
    calls.append(job)
    res = timing.summary([1.0, next(spreads)])
    return {'job': job, 'result': res, 'load_before': [0.1, 0, 0]}

  monkeypatch.setattr(run, 'run_job', fake_run_job)
  job = {'job': 'ours_train', 'shape': 'small', 'conditioner': 'none'}
  record = run.run_steady(job)
  assert len(calls) == 2
  assert record['result']['step_seconds_max'] == 1.2
  assert [a['result']['step_seconds_max']
          for a in record['disturbed_attempts']] == [2.0]
  # Disturbed every time: MAX_ATTEMPTS runs, then the last one stands.
  record = run.run_steady(job)
  assert len(calls) == 2 + run.MAX_ATTEMPTS
  assert len(record['disturbed_attempts']) == run.MAX_ATTEMPTS - 1
  # The report names the job that ran again; untimed jobs never repeat.
  assert not timing.disturbed({})
  results = _results(record)
  results['disturbed_spread'] = timing.DISTURBED_SPREAD
  (line,) = report.disturbed_facts(results)
  assert report.job_label(job) in line and '2 earlier' in line
  del results['disturbed_spread']
  assert report.disturbed_facts(results) == []


def test_code_commit_is_dirty_for_code_changes_not_for_results(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  from bench import machine  # pylint: disable=g-import-not-at-top
  git = lambda *args: subprocess.run(['git', *args], cwd=tmp_path, check=True,
                                     capture_output=True)
  git('init', '-q')
  for name in ('code.py', 'scale.json', 'BENCHMARKS.md'):
    (tmp_path / name).write_text('0\n')
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'x')
  clean = machine.code_commit(str(tmp_path))
  assert len(clean) >= 7 and not clean.endswith('-dirty')
  # A benchmark writing its results leaves the code's commit as it is.
  (tmp_path / 'scale.json').write_text('1\n')
  (tmp_path / 'BENCHMARKS.md').write_text('1\n')
  assert machine.code_commit(str(tmp_path)) == clean
  (tmp_path / 'code.py').write_text('1\n')
  assert machine.code_commit(str(tmp_path)) == clean + '-dirty'


def test_scale_table_compares_total_and_live_peak_with_none():
  gib = 1024**3
  cell = dict(size='large', slice='v4-128 chips', topology='v4:4x4x8',
              partitions=2, dims=1, remat='none', params=gib,
              optimizer_state=0, temporaries=3 * gib, hbm=16 * gib,
              fits=True, flops=1e12, compile_seconds=60.0,
              compile_cpu_seconds=50.0, load_before=1.0, commit='abc1234')
  none = dict(cell, conditioner='none', total=5 * gib, peak=4 * gib)
  ours = dict(cell, conditioner='hyperprompt_global', total=5.1 * gib,
              peak=3.96 * gib)
  # A compile from before the peak was recorded shows '-' for it.
  old = dict(cell, conditioner='adapters', total=5.2 * gib)
  rows = {line.split(' | ')[2]: line for line in
          scale.markdown([none, ours, old]).splitlines()
          if line.startswith('| large | v4-128 chips')}
  assert '| yes | +2.00% | 3.96 | -1.00% | 1.000 | +0.00% |' in rows[
      'hyperprompt_global']
  assert '| yes | +4.00% | - | - |' in rows['adapters']
  assert '| yes | +0.00% | 4.00 | +0.00% |' in rows['none']
