"""The small study's pieces: its data is the registered seqio task's, and
its report is computed from the results (a fixed, hand-made results dict)."""
import dataclasses
import os

import numpy as np
import seqio

import hyperprompt.tasks  # pylint: disable=unused-import  Registers hp_synthetic.
from bench import experiment
from bench import experiment_report
from bench import synthetic_data
from hyperprompt.feature_converter import TaskConditionedFeatureConverter
from hyperprompt.tasks import synthetic


def test_study_features_equal_the_seqio_task_pipeline():
  tasks = tuple(synthetic.TASKS)
  ours = synthetic_data.features(tasks, 'validation', 5)
  ds = seqio.get_dataset(
      'hp_synthetic_reverse', synthetic.TASK_FEATURE_LENGTHS,
      dataset_split='validation', shuffle=False, num_epochs=1,
      feature_converter=TaskConditionedFeatureConverter(pack=False),
      use_cached=False)
  theirs = list(ds.take(5).as_numpy_iterator())
  reverse = tasks.index('reverse')
  rows = np.flatnonzero(ours['task_ids'] == reverse)
  for key in ('encoder_input_tokens', 'decoder_input_tokens',
              'decoder_target_tokens', 'decoder_loss_weights', 'task_ids'):
    np.testing.assert_array_equal(
        ours[key][rows], np.stack([ex[key] for ex in theirs]), err_msg=key)


def _run(kind, conditioner, seed, steps_accuracy, conditioning=500, **extra):
  """A run whose evaluations give these accuracies ({step: (a, b)})."""
  return {
      'kind': kind, 'conditioner': conditioner, 'seed': seed,
      'tasks': ['a', 'b'], 'seconds': 1.0,
      'params': {'backbone': 1000, 'conditioning': conditioning,
                 'total': 1000 + conditioning,
                 'percent': conditioning / 10.0},
      'evaluations': [{'step': s, 'loss': 0.1, 'accuracy': {'a': a, 'b': b}}
                      for s, (a, b) in sorted(steps_accuracy.items())],
      **extra}


def _results():
  flat = lambda x: {10: (x, x), 20: (x, x)}
  full = {'none': 0.3, 'hyperprompt_share': 0.5, 'hyperprompt_sep': 0.6,
          'prompt_tuning': 0.5, 'prefix_tuning': 0.5, 'adapters': 0.5,
          'hyperformer': 0.5}
  runs = []
  for seed in (0, 1):
    for c, x in full.items():
      runs.append(_run('full', c, seed, flat(x),
                       conditioning=0 if c == 'none' else 500))
      if c != 'none':
        runs.append(_run('conditioning', c, seed, flat(0.4)))
    runs.append(_run('conditioning', 'hyperprompt_global', seed, flat(0.4)))
  # Global, full tuning: best per task (0.7, 0.9) and (0.6, 0.6) -> 80, 60;
  # final (0.7, 0.8) and (0.6, 0.6) -> 75, 60.
  mass = {'a': {'encoder_self': [0.2, 0.4], 'decoder_self': [0.5, 0.7]},
          'b': {'encoder_self': [0.1, 0.3], 'decoder_self': [0.4, 0.6]}}
  runs.append(_run('full', 'hyperprompt_global', 0,
                   {10: (0.5, 0.9), 20: (0.7, 0.8)}, attention_mass=mass,
                   greedy_check={'examples': 40, 'greedy_exact': 30,
                                 'teacher_forced_exact': 30, 'agree': 40}))
  runs.append(_run('full', 'hyperprompt_global', 1,
                   {10: (0.6, 0.6), 20: (0.6, 0.6)}))
  runs.append({
      'kind': 'new_task', 'conditioner': 'hyperprompt_global', 'seed': 0,
      'task': 'b',
      'new_task': 'b', 'tasks': ['a', 'b'], 'before': {'a': 0.7, 'b': 0.1},
      'evaluations': [{'step': 5, 'loss': 0.2, 'accuracy': {'a': 0.7,
                                                            'b': 0.9}},
                      {'step': 10, 'loss': 0.1, 'accuracy': {'a': 0.7,
                                                             'b': 0.8}}],
      'others_unchanged': True, 'trained_parameters': 264,
      'per_task_parameters': ['task_embedding', 'task_prompts']})
  counts = lambda pct: {'backbone': 10**9, 'conditioning': int(pct * 10**7),
                        'total': 0, 'percent': pct}
  runs.append({'kind': 'scale', 'conditioner': 'none', 'seed': 0,
               'counts': {'t5_1_1_xxl': {
                   'hyperprompt_share': counts(0.2),
                   'hyperprompt_sep': counts(1.5),
                   'hyperprompt_global': counts(0.137),
                   'adapters': counts(0.5), 'hyperformer': counts(0.1)}}})
  return {
      'settings': dataclasses.asdict(experiment.QUICK),
      'conditioners': list(experiment.CONDITIONERS), 'runs': runs,
      'wall_seconds': 60.0, 'workers': 2, 'command': 'python -m bench.x',
      'machine': {'cpus': 2, 'platform': 'test', 'python': '3',
                  'jax': '0', 'date': 'today'}}


def test_report_from_fixed_results(tmp_path):
  results = _results()
  markdown_path = tmp_path / 'EXPERIMENTS.md'
  output_dir = tmp_path / 'out'
  experiment_report.write(results, str(markdown_path), str(output_dir),
                          str(output_dir / 'results.json'))
  text = markdown_path.read_text()
  # Mean ± sample std over the two seeds, computed by hand above.
  # Learning speed (mean over evaluations): (0.7 + 0.75) / 2 and 0.6.
  assert ('| HyperPrompt-Global | 500 (50.0%) | 70.0 ± 14.1 | 67.5 ± 10.6 | '
          '66.2 ± 8.8 | 40.0 ± 0.0 | 40.0 ± 0.0 | 40.0 ± 0.0 | 500 |') in text
  # None's conditioning-only column is its task-blind full-tuning run.
  assert ('| None (multi-task T5) | 0 (0.0%) | 30.0 ± 0.0 | 30.0 ± 0.0 | '
          '30.0 ± 0.0 | 30.0 ± 0.0 | 30.0 ± 0.0 | 30.0 ± 0.0 | 0 |') in text
  # Per task, full tuning, Global: a best (0.7, 0.6), b best (0.9, 0.6).
  assert '| HyperPrompt-Global | 65.0 ± 7.1 | 75.0 ± 21.2 |' in text
  # Global (70 ± 14.1) leads Sep (60 ± 0) by less than a standard deviation.
  assert "variants** (paper): on the paper's metric the study is " \
         'inconclusive' in text
  assert 'Share beat Sep on SuperGLUE** (paper): on this synthetic suite the '\
         "study disagrees on the paper's metric" in text
  assert 'conditioning alone** (paper): the study agrees' in text
  assert '0.137% of the backbone (agrees' in text
  # Global from the start, seed 0: best on b is 0.9.
  assert '| b | 0 | 10.0 | 90.0 | 80.0 | 90.0 | yes |' in text
  assert '`b`: 90.0 with only its new rows trained vs 90.0' in text
  assert 'agree on 40 examples' in text
  assert '![accuracy](out/accuracy.png)' in text
  assert '(out/results.json)' not in text and '`out/results.json`' in text
  for name in (experiment_report.ACCURACY_PNG, experiment_report.MASS_PNG):
    with open(os.path.join(output_dir, name), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_phases_order_the_dependencies():
  first, second = experiment.study_jobs(experiment.FULL)
  seeds = range(experiment.FULL.seeds)
  assert {j.seed for j in second if j.kind == 'conditioning'} == set(seeds)
  assert {(j.conditioner, j.seed) for j in first if j.kind == 'full'} == {
      (c, s) for c in experiment.CONDITIONERS for s in seeds}
  assert all(j.kind in ('conditioning', 'new_task') for j in second)


def test_verdicts_count_only_differences_beyond_the_seed_spread():
  stat = lambda *v: experiment_report.Stat(v)
  assert experiment_report._beats(stat(0.9, 0.8), stat(0.5, 0.6)) == 'agrees'
  assert experiment_report._beats(stat(0.5, 0.6), stat(0.9, 0.8)) == (
      'disagrees')
  assert experiment_report._beats(stat(0.9, 0.5), stat(0.6, 0.6)) == (
      'is inconclusive')
  assert experiment_report._beats(stat(0.9), stat(0.1)) == 'is inconclusive'
  stats = {'a': stat(0.9, 0.8), 'b': stat(0.5, 0.6), 'c': stat(0.85, 0.8)}
  assert experiment_report._best_of(stats, 'a') == 'is inconclusive'
  assert experiment_report._best_of(stats, 'b') == 'disagrees'
  del stats['c']
  assert experiment_report._best_of(stats, 'a') == 'agrees'
