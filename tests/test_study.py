"""The study (study/): its data is the registered seqio tasks', its
statistics are Student-t's, selection sees only held-out data, the vmapped
replicas train as separate runs would, and the committed EXPERIMENTS.md
recomputes from the committed results file."""
import json
import math
import os
import re
import subprocess

import jax
import numpy as np
import pytest
import seqio
from scipy import stats as scipy_stats

import hyperprompt.tasks  # pylint: disable=unused-import  Registers hp_synthetic.
import tiny_model
from hyperprompt import freezing
from hyperprompt import trainer
from hyperprompt.conditioning import registry
from hyperprompt.feature_converter import TaskConditionedFeatureConverter
from hyperprompt.tasks import synthetic
from study import data
from study import report
from study import run
from study import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCABULARY_ID = {c: synthetic.VOCABULARY.encode(c)[0] for c in '0123456789'}


def test_study_features_equal_the_seqio_task_pipeline():
  tasks = tuple(synthetic.TASKS)
  ours = data.features(tasks, 'test', 5)
  ds = seqio.get_dataset(
      'hp_synthetic_reverse', synthetic.TASK_FEATURE_LENGTHS,
      dataset_split='validation', shuffle=False, num_epochs=1,
      feature_converter=TaskConditionedFeatureConverter(pack=False),
      use_cached=False)
  theirs = list(ds.take(5).as_numpy_iterator())
  rows = np.flatnonzero(ours['task_ids'] == tasks.index('reverse'))
  for key in ours:
    np.testing.assert_array_equal(
        ours[key][rows], np.stack([ex[key] for ex in theirs]), err_msg=key)


def test_heldout_follows_train_in_the_train_split():
  train = data.features(('copy',), 'train', 30)
  heldout = data.features(('copy',), 'heldout', 10, num_train=20)
  np.testing.assert_array_equal(heldout['encoder_input_tokens'],
                                train['encoder_input_tokens'][20:])


def test_span_corruption_by_hand():
  vocab = 384
  tokens = list(range(50, 70))  # 20 tokens: 3 noise tokens in 1 span.
  inputs, targets = data.span_corrupt(tokens, np.random.default_rng(0), vocab)
  assert inputs.count(383) == 1 and targets[0] == 383
  assert len(targets) == 1 + 3 and len(inputs) == 20 - 3 + 1
  at = inputs.index(383)
  # The span goes back where its sentinel is.
  assert inputs[:at] + targets[1:] + inputs[at + 1:] == tokens
  # 40 tokens: 6 noise tokens in 2 spans, sentinels 383 then 382.
  inputs, targets = data.span_corrupt(list(range(40)),
                                      np.random.default_rng(1), vocab)
  assert [t for t in inputs if t >= 382] == [383, 382]
  assert [t for t in targets if t >= 382] == [383, 382]
  assert len(targets) == 6 + 2
  corpus = data.pretraining_corpus(10, 0, vocab)
  assert (corpus['task_ids'] == 0).all()
  assert ((corpus['decoder_target_tokens'] == 383).sum(-1) == 1).all()


def test_pretraining_structures_and_the_unstructured_floor_by_hand():
  rng = np.random.default_rng(0)
  for _ in range(20):
    x = data.structured_digits('palindrome', rng)
    assert x == x[::-1] and 4 <= len(x) <= synthetic.LENGTH
    x = data.structured_digits('progression', rng)
    assert len({(b - a) % 10 for a, b in zip(x, x[1:])}) == 1
    x = data.structured_digits('sorted', rng)
    assert x in (sorted(x), sorted(x)[::-1])
    x = data.structured_digits('repeated_half', rng)
    half = (len(x) + 1) // 2
    assert x[half:] == x[:len(x) - half]
    x = data.structured_digits('repeats', rng)
    assert x[3:] == x[:-3] or x[2:] == x[:-2]
    x = data.structured_digits('runs', rng)
    assert sum(a != b for a, b in zip(x, x[1:])) <= 2
  with pytest.raises(ValueError, match='Unknown structure'):
    data.structured_digits('primes', rng)
  # Targets [sentinel, '7', EOS] and [sentinel, '1', '2', EOS]: 3 digits
  # in 7 target tokens.
  sentinel = 383
  digit = lambda c: VOCABULARY_ID[c]
  targets = data.pad([[sentinel, digit('7')], [sentinel, digit('1'),
                                              digit('2')]], 9)
  assert data.unstructured_floor({'decoder_target_tokens': targets}) == (
      pytest.approx(3 * math.log(10) / 7))


def test_rate_ladder_and_sweep_extension():
  assert [run.ladder(i) for i in range(-7, -2)] == [3e-4, 1e-3, 3e-3, 1e-2,
                                                    3e-2]
  assert all(run.ladder(run.ladder_index(x)) == x for x in (1e-4, 3e-2, 1.0))
  with pytest.raises(ValueError, match='not on the 1-3-10 ladder'):
    run.Settings(full_rates=(2e-3, 1e-2))
  settings = run.Settings(max_rates=4)
  sweep = lambda scores: [_run('scratch', 'full', 'none', 0, rate, [[h]],
                               [[0.0]]) for rate, h in scores.items()]
  # Best at the smallest rate: one step down; at the largest: one up.
  assert run.next_rate(settings, sweep({1e-3: .9, 3e-3: .5, 1e-2: .4})) == 3e-4
  assert run.next_rate(settings, sweep({1e-3: .1, 3e-3: .5, 1e-2: .6})) == 3e-2
  # Bracketed: done; at max_rates: done even at an edge.
  assert run.next_rate(settings, sweep({1e-3: .1, 3e-3: .5, 1e-2: .4})) is None
  assert run.next_rate(settings, sweep({3e-4: .9, 1e-3: .8, 3e-3: .5,
                                        1e-2: .4})) is None


def test_t_interval_and_paired_test_against_scipy():
  x = stats.interval([1.0, 2.0, 3.0, 4.0, 5.0])
  # mean 3, sd sqrt(2.5), t(0.975, 4) = 2.7764451.
  assert x.mean == 3.0 and x.n == 5
  assert x.half_width == pytest.approx(2.7764451 * math.sqrt(2.5 / 5))
  a, b = [80.0, 82.0, 79.0, 90.0, 85.0], [78.0, 80.0, 80.0, 84.0, 83.0]
  d = stats.paired(a, b)
  assert d.p == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
  assert d.mean == pytest.approx(2.2)
  assert stats.verdict(d) == 'inconclusive, n=5'
  assert stats.verdict(stats.paired([3, 4, 5], [1, 1, 1])) == 'agrees'
  assert stats.verdict(stats.paired([1, 1, 1], [3, 4, 5])) == 'disagrees'
  assert math.isnan(stats.interval([2.0]).half_width)


def test_uniform_attention_baseline_by_hand():
  batch = {'encoder_input_tokens': np.array([[5, 6, 1, 0], [5, 6, 7, 1]]),
           'decoder_target_tokens': np.array([[5, 1, 0], [5, 6, 1]])}
  got = run.uniform_mass(batch, 2)
  # Encoder: 3 and 4 real keys. Decoder: queries see 1, 2 (and 3) keys.
  assert got['encoder_self'] == pytest.approx((2 / 5 + 2 / 6) / 2)
  assert got['decoder_self'] == pytest.approx(
      ((2 / 3 + 2 / 4) / 2 + (2 / 3 + 2 / 4 + 2 / 5) / 3) / 2)


def _run(setting, regime, conditioner, seed, rate, heldout, test,
         stage='sweep'):
  """A run with one task per entry of heldout/test: lists over evaluations."""
  evaluations = [
      {'step': 10 * (i + 1), 'loss': 0.1,
       'heldout': {f't{k}': h[i] for k, h in enumerate(heldout)},
       'test': {f't{k}': t[i] for k, t in enumerate(test)}}
      for i in range(len(heldout[0]))]
  return {'setting': setting, 'regime': regime, 'conditioner': conditioner,
          'stage': stage, 'seed': seed, 'learning_rate': rate,
          'tasks': [f't{k}' for k in range(len(heldout))],
          'params': {'backbone': 1000, 'conditioning': 50, 'total': 1050,
                     'percent': 5.0},
          'evaluations': evaluations}


def test_selection_sees_only_heldout_scores():
  # Held-out peaks at the first evaluation, test at the second: the report
  # must take the first's test score.
  r = _run('scratch', 'full', 'none', 0, 0.1, [[0.9, 0.5]], [[0.2, 1.0]])
  assert run.best_per_task(r['evaluations'])['t0']['test'] == 0.2
  assert report.accuracy(r) == pytest.approx(20.0)
  assert report.accuracy(r, 'final') == pytest.approx(100.0)
  assert report.learning_speed(r) == pytest.approx(60.0)
  # Rate 0.1 wins on held-out though 0.01 wins on test.
  runs = [r, _run('scratch', 'full', 'none', 0, 0.01, [[0.5, 0.5]],
                  [[1.0, 1.0]])]
  assert run.select_rate(runs) == 0.1


def _results():
  runs = []
  for seed in range(3):
    for rate, h in ((0.1, 0.9), (0.01, 0.5)):
      for c, shift in (('hyperprompt_global', 0.1), ('hyperprompt_share', 0),
                       ('none', -0.2)):
        stage = 'sweep' if seed == 0 else 'final'
        if stage == 'final' and rate != 0.1:
          continue
        test = 0.5 + shift + 0.05 * seed
        runs.append(_run('scratch', 'full', c, seed, rate, [[h, h]],
                         [[test, test]], stage))
  return {'conditioners': ['none', 'hyperprompt_share',
                           'hyperprompt_global'],
          'selected_rates': {f'scratch/full/{c}': 0.1 for c in (
              'none', 'hyperprompt_share', 'hyperprompt_global')},
          'runs': runs}


def test_report_numbers_by_hand():
  results = _results()
  table = report.summary(results)
  glob = table[('scratch', 'full', 'hyperprompt_global')]
  # Test accuracy 60, 65, 70 over seeds 0-2 at the selected rate 0.1.
  assert [r['seed'] for r in glob['runs']] == [0, 1, 2]
  assert glob['accuracy'].mean == pytest.approx(65.0)
  assert glob['accuracy'].half_width == pytest.approx(
      scipy_stats.t.ppf(0.975, 2) * 5 / math.sqrt(3))
  # Global - Share is +10 on every seed: the interval is a point above 0.
  diff = report.compare(table, ('scratch', 'full', 'hyperprompt_global'),
                        ('scratch', 'full', 'hyperprompt_share'))
  assert diff.mean == pytest.approx(10.0) and stats.verdict(diff) == 'agrees'
  # 0.1 is the largest rate of every sweep, and 0.01 was the first grid.
  assert report.sweep_section(table, {'full_rates': [0.01]})[-1] == (
      'The selected rate is at an edge of the rates tried in 3 of 3 groups '
      '(0 at the smallest, 3 at the largest); 3 sweeps went beyond their '
      'first grid.')
  # Pretrained None 5 points above scratch None on every seed.
  for seed in range(3):
    test = 0.35 + 0.05 * seed
    results['runs'].append(_run('pretrained', 'full', 'none', seed, 0.1,
                                [[0.9, 0.9]], [[test, test]],
                                'sweep' if seed == 0 else 'final'))
  results['selected_rates']['pretrained/full/none'] = 0.1
  row = next(r for r in report.claims(report.summary(results),
                                      results['conditioners'])
             if r['claim'] == 'Pretraining helps (full tuning)')
  assert row['accuracy'].mean == pytest.approx(5.0)
  assert report.claims_section([row])[-1].startswith(
      '| Pretraining helps (full tuning) | pretrained vs from scratch | '
      'None (multi-task T5) | +5.0 [+5.0, +5.0] |')
  results['selected_rates']['scratch/full/none'] = 0.01
  with pytest.raises(ValueError, match='select rate 0.1'):
    report.summary(results)


def test_vmapped_replicas_train_like_separate_runs():
  model = tiny_model.make_model(num_tasks=2)
  params = tiny_model.random_params(model)
  batch = tiny_model.random_batch(num_tasks=2)
  settings = run.Settings(warmup_steps=1)
  rates = [1e-2, 1e-1]
  batches = iter([{k: np.stack([v, v]) for k, v in batch.items()}] * 2)
  stacked, _ = run.train_replicas(model, run.stack([params, params]),
                                  'conditioning', rates, batches, settings,
                                  steps=2)
  for i, rate in enumerate(rates):
    schedule = trainer.cosine_decay_schedule(rate, 1, 2)
    opt = freezing.freeze(trainer.adamw(schedule), params, 'conditioning')
    state = trainer.init_state(params, opt)
    for _ in range(2):
      state, _ = trainer.train_step(model, opt, state, batch,
                                    jax.random.PRNGKey(0))
    for a, b in zip(jax.tree.leaves(run.replica(stacked, i)),
                    jax.tree.leaves(state.params)):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def _recomputed_cells(results):
  """The main tables' accuracy cells, recomputed from the results file with
  NumPy and SciPy only: rate by mean held-out score of the sweep (best
  held-out evaluation per task), test accuracy at those evaluations."""
  cells = []
  groups = {}
  for r in results['runs']:
    groups.setdefault((r['setting'], r['regime'], r['conditioner']),
                      []).append(r)

  def score(r, split):
    evs = r['evaluations']
    best = [max(range(len(evs)), key=lambda i: (evs[i]['heldout'][t], -i))
            for t in r['tasks']]
    return 100 * np.mean([evs[i][split][t] for i, t in zip(best, r['tasks'])])
  for key, runs in groups.items():
    sweep = [r for r in runs if r['stage'] == 'sweep']
    rates = sorted({r['learning_rate'] for r in sweep})
    mean = {x: np.mean([score(r, 'heldout') for r in sweep
                        if r['learning_rate'] == x]) for x in rates}
    rate = max(rates, key=lambda x: (mean[x], -x))
    values = [score(r, 'test') for r in runs if r['learning_rate'] == rate]
    m, sem = np.mean(values), scipy_stats.sem(values)
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * sem
    cells.append((key, f'{m:.1f} [{m - half:.1f}, {m + half:.1f}]',
                  f'{rate:g}'))
  return cells


def test_committed_experiments_recompute_from_the_committed_results():
  with open(os.path.join(run.RESULTS_DIR, 'results.json')) as f:
    results = json.load(f)
  with open(report.EXPERIMENTS_MD) as f:
    text = f.read()
  for (setting, regime, conditioner), cell, rate in _recomputed_cells(
      results):
    section = text[text.index(f'<!-- study:main-{setting} -->'):
                   text.index(f'<!-- /study:main-{setting} -->')]
    row = next(line for line in section.splitlines()
               if line.startswith(f'| {registry.display_name(conditioner)} |'))
    cells = [c.strip() for c in row.strip('|').split('|')]
    at = 2 if regime == 'full' else 6
    assert (cells[at], cells[at + 3]) == (cell, rate), (setting, regime,
                                                        conditioner)
  # The results name the commit they came from: it is in this history.
  commit = results['provenance']['commit']
  assert re.fullmatch('[0-9a-f]{40}', commit)
  subprocess.run(['git', '-C', ROOT, 'merge-base', '--is-ancestor', commit,
                  'HEAD'], check=True)
