"""The generated sections of EXPERIMENTS.md and its charts, from results.json.

    python -m study.report [--results study/results/results.json]

Every number comes from the results file: each section lies between
`<!-- study:NAME -->` and `<!-- /study:NAME -->` in EXPERIMENTS.md
(bench.markdown_section splices it in); the prose around the sections is
written by people. Learning rates are re-selected here from the held-out
scores and must match what the run selected.
"""
import argparse
import math
import os
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from bench import markdown_section
from hyperprompt import params as params_lib
from hyperprompt.conditioning import registry
from study import run as run_lib
from study import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS_MD = os.path.join(ROOT, 'EXPERIMENTS.md')
SETTING_NAMES = {'scratch': 'from scratch', 'pretrained': 'pretrained'}
REGIME_NAMES = {'full': 'full tuning', 'conditioning': 'conditioning only'}
ACCURACY_PNG = 'accuracy.png'
MASS_PNG = 'attention_mass.png'
# The paper's claims as (setting(s), regime, a, b): "a beats b".
CLAIMS = (
    ('Global beats Share', 'full', 'hyperprompt_global', 'hyperprompt_share'),
    ('Global beats Sep', 'full', 'hyperprompt_global', 'hyperprompt_sep'),
    ('Share beats Sep (SuperGLUE)', 'full', 'hyperprompt_share',
     'hyperprompt_sep'),
    ('Global beats multi-task T5', 'full', 'hyperprompt_global', 'none'),
    ('Global beats prompt tuning', 'conditioning', 'hyperprompt_global',
     'prompt_tuning'),
    ('Global beats prompt tuning', 'full', 'hyperprompt_global',
     'prompt_tuning'),
)


def _name(conditioner: str) -> str:
  return registry.display_name(conditioner)


# --- Scores of one run ----------------------------------------------------------

def task_scores(run: Mapping, how: str = 'selected') -> Dict[str, float]:
  """Per task, test accuracy: at the evaluation chosen on the held-out split
  ('selected'), or at the last one ('final')."""
  if how == 'final':
    return dict(run['evaluations'][-1]['test'])
  return {t: b['test'] for t, b in
          run_lib.best_per_task(run['evaluations']).items()}


def accuracy(run: Mapping, how: str = 'selected') -> float:
  """Mean over tasks of task_scores, in percent."""
  return 100.0 * float(np.mean(list(task_scores(run, how).values())))


def learning_speed(run: Mapping) -> float:
  """Mean test accuracy over all of a run's evaluations (the area under its
  learning curve), in percent: higher means it learned sooner."""
  return 100.0 * float(np.mean([np.mean(list(e['test'].values()))
                                for e in run['evaluations']]))


# --- Selection --------------------------------------------------------------------

def group_runs(results: Mapping, setting: str, regime: str,
               conditioner: str) -> List[Mapping]:
  return [r for r in results['runs'] if (r['setting'], r['regime'],
                                         r['conditioner']) == (
                                             setting, regime, conditioner)]


def selected(results: Mapping, setting: str, regime: str,
             conditioner: str) -> Tuple[float, List[Mapping]]:
  """(rate, runs at it sorted by seed): the rate re-selected from the sweep's
  held-out scores (checked against the run's choice)."""
  runs = group_runs(results, setting, regime, conditioner)
  if not runs:
    return math.nan, []
  rate = run_lib.select_rate([r for r in runs if r['stage'] == 'sweep'])
  recorded = results['selected_rates'][f'{setting}/{regime}/{conditioner}']
  if rate != recorded:
    raise ValueError(f'{setting}/{regime}/{conditioner}: the held-out scores '
                     f'select rate {rate}, the run recorded {recorded}.')
  return rate, sorted((r for r in runs if r['learning_rate'] == rate),
                      key=lambda r: r['seed'])


def summary(results: Mapping) -> Dict[Tuple[str, str, str], dict]:
  """{(setting, regime, conditioner): {'rate', 'runs', 'accuracy', 'final',
  'speed': stats.Interval, 'tasks': {task: Interval}, 'sweep': {rate:
  mean held-out score}}} for every trained group."""
  out = {}
  for key in run_lib.groups_to_train(results['conditioners']):
    rate, runs = selected(results, *key)
    if not runs:
      continue
    sweep = [r for r in group_runs(results, *key) if r['stage'] == 'sweep']
    out[key] = {
        'rate': rate, 'runs': runs,
        'accuracy': stats.interval([accuracy(r) for r in runs]),
        'final': stats.interval([accuracy(r, 'final') for r in runs]),
        'speed': stats.interval([learning_speed(r) for r in runs]),
        'tasks': {t: stats.interval([100 * task_scores(r)[t] for r in runs])
                  for t in runs[0]['tasks']},
        'sweep': {x: 100 * float(np.mean([run_lib.heldout_score(r)
                                          for r in sweep
                                          if r['learning_rate'] == x]))
                  for x in sorted({r['learning_rate'] for r in sweep})},
    }
  return out


def compare(table: Mapping, a_key, b_key, metric: str = 'accuracy'
            ) -> stats.Interval:
  """Paired a - b over the seeds both have (same seed: same batches and
  initialisation seed)."""
  value = {'accuracy': accuracy, 'speed': learning_speed}[metric]
  a = {r['seed']: value(r) for r in table[a_key]['runs']}
  b = {r['seed']: value(r) for r in table[b_key]['runs']}
  seeds = sorted(set(a) & set(b))
  return stats.paired([a[s] for s in seeds], [b[s] for s in seeds])


# --- Sections -----------------------------------------------------------------

def _ci(x: stats.Interval) -> str:
  if math.isnan(x.half_width):
    return f'{x.mean:.1f} (n={x.n})'
  return f'{x.mean:.1f} [{x.low:.1f}, {x.high:.1f}]'


def _diff(x: stats.Interval) -> str:
  if math.isnan(x.half_width):
    return f'{x.mean:+.1f} (n={x.n}, no interval)'
  return f'{x.mean:+.1f} [{x.low:+.1f}, {x.high:+.1f}]'


def _p(x: stats.Interval) -> str:
  return 'n/a' if math.isnan(x.p) else f'{x.p:.3f}'


def provenance_section(results: Mapping) -> List[str]:
  p = results['provenance']
  load = lambda v: ' / '.join(f'{x:.2f}' for x in v)
  return [
      f'- Commit: `{p["commit"]}`' + (' with uncommitted changes (dirty)'
                                      if p['dirty'] else ' (clean tree)'),
      f'- Command: `{p["command"]}` ({results["workers"]} worker processes), '
      f'{results["wall_seconds"] / 60:.1f} minutes, {p["date"]}',
      f'- Machine: {p["cpu"]}, {p["cores"]} cores, {p["platform"]}, '
      f'Python {p["python"]}, jax {p["jax"]}',
      f'- Load average (1/5/15 min) before: {load(p["load_before"])}; '
      f'after: {load(p["load_after"])}; other busy processes before: '
      f'{len(p["busy_before"])}',
  ]


def settings_section(results: Mapping) -> List[str]:
  s = results['settings']
  pre = results.get('pretrain') or {}
  rates = lambda v: ', '.join(f'{x:g}' for x in v)
  rows = [
      ('Seeds', f'{s["seeds"]} (rates swept on '
                + ('seed 0' if s['sweep_seeds'] == 1 else
                   f'seeds 0-{s["sweep_seeds"] - 1}')
                + ', the selected rate then run on the rest)'),
      ('Learning rates, full tuning', rates(s['full_rates'])
       + ' (first grid)'),
      ('Learning rates, conditioning only', rates(s['conditioning_rates'])
       + ' (first grid)'),
      ('Grid extension', 'while the best rate is the smallest or largest '
       'tried, one more step along the 1-3-10 ladder that way, up to '
       f'{s["max_rates"]} rates'),
      ('Steps, batch size', f'{s["steps"]}, {s["batch_size"]} (AdamW, '
                            f'{s["warmup_steps"]} warmup steps, cosine '
                            'decay to 0)'),
      ('Evaluations', f'every {s["eval_every"]} steps'),
      ('Examples per task', f'{s["num_train"]:,} train, '
                            f'{s["num_heldout"]} held-out (from the train '
                            f'split), {s["num_test"]} test (validation split)'),
      ('Pretraining', f'{s["pretrain_steps"]} steps at rate '
                      f'{s["pretrain_rate"]:g} on {s["pretrain_examples"]:,} '
                      'span-corrupted texts'),
  ]
  if pre:
    curve = pre['losses']
    rows.append((
        'Pretraining cross-entropy (mean over the steps since the last '
        'record)', f'{curve[0]["cross_ent_loss"]:.3f} over steps 1-'
        f'{curve[0]["step"]}, {curve[-1]["cross_ent_loss"]:.3f} over the last '
        f'{curve[-1]["step"] - curve[-2]["step"]} steps; a model that learned '
        'only the format, every masked digit uniform, sits at '
        f'{pre["unstructured_floor"]:.3f}'))
  first = next(iter(results['runs']))
  rows.append(('Backbone parameters', f'{first["params"]["backbone"]:,}'))
  return ['| | |', '|---|---|'] + [f'| {a} | {b} |' for a, b in rows]


def main_section(table: Mapping, setting: str, conditioners) -> List[str]:
  lines = [
      '| Method | Conditioning params (% of backbone) | Full: accuracy | '
      'Full: final | Full: learning speed | Full: rate | Cond. only: '
      'accuracy | Cond. only: final | Cond. only: learning speed | Cond. '
      'only: rate | n |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for c in conditioners:
    full = table.get((setting, 'full', c))
    if not full:
      continue
    cond = table.get((setting, 'conditioning', c))
    counts = full['runs'][0]['params']
    cells = [_name(c),
             f'{counts["conditioning"]:,} ({counts["percent"]:.1f}%)']
    for row in (full, cond):
      cells += ([_ci(row['accuracy']), _ci(row['final']), _ci(row['speed']),
                 f'{row["rate"]:g}'] if row else ['n/a'] * 4)
    ns = {row['accuracy'].n for row in (full, cond) if row}
    cells.append('/'.join(str(n) for n in sorted(ns)))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def at_edge(row: Mapping) -> str:
  """'smallest' or 'largest' when the selected rate is that end of the
  rates its sweep tried, else ''."""
  rates = sorted(row['sweep'])
  return ('smallest' if row['rate'] == rates[0] else
          'largest' if row['rate'] == rates[-1] else '')


def sweep_section(table: Mapping, settings: Mapping) -> List[str]:
  lines = ['| Setting | Regime | Method | Held-out score per rate (mean over '
           'the sweep seeds; * beyond the first grid) | Selected | At an '
           'edge |', '|---|---|---|---|---:|---|']
  for (setting, regime, c), row in table.items():
    grid = settings[f'{regime}_rates']
    cells = ', '.join(f'{rate:g}{"" if rate in grid else "*"}: {score:.1f}'
                      for rate, score in row['sweep'].items())
    lines.append(f'| {SETTING_NAMES[setting]} | {REGIME_NAMES[regime]} | '
                 f'{_name(c)} | {cells} | {row["rate"]:g} | '
                 f'{at_edge(row) or "no"} |')
  edges = [at_edge(row) for row in table.values()]
  extended = sum(any(rate not in settings[f'{k[1]}_rates']
                     for rate in row['sweep']) for k, row in table.items())
  lines += ['', f'The selected rate is at an edge of the rates tried in '
            f'{sum(map(bool, edges))} of {len(edges)} groups '
            f'({edges.count("smallest")} at the smallest, '
            f'{edges.count("largest")} at the largest); '
            f'{extended} sweeps went beyond their first grid.']
  return lines


def per_task_section(table: Mapping, setting: str, regime: str,
                     conditioners) -> List[str]:
  rows = [(c, table[(setting, regime, c)]) for c in conditioners
          if (setting, regime, c) in table]
  tasks = list(rows[0][1]['tasks'])
  lines = ['| Method | ' + ' | '.join(tasks) + ' |',
           '|---|' + '---:|' * len(tasks)]
  for c, row in rows:
    lines.append(f'| {_name(c)} | ' + ' | '.join(
        f'{row["tasks"][t].mean:.1f}' for t in tasks) + ' |')
  return lines


def claims(table: Mapping, conditioners: Sequence[str]) -> List[dict]:
  """Every paired comparison behind a verdict: the paper's claims in both
  settings, full tuning against conditioning-only per method, and per
  method with full tuning, the pretrained backbone against from scratch
  (same seeds: same batches and conditioning initialisation)."""
  out = []
  for setting in run_lib.SETTINGS:
    for claim, regime, a, b in CLAIMS:
      ka, kb = (setting, regime, a), (setting, regime, b)
      if ka in table and kb in table:
        out.append({'claim': claim, 'setting': setting, 'regime': regime,
                    'a': ka, 'b': kb})
    for c in conditioners:
      ka, kb = (setting, 'full', c), (setting, 'conditioning', c)
      if ka in table and kb in table:
        out.append({'claim': 'Full tuning beats conditioning only',
                    'setting': setting, 'regime': c, 'a': ka, 'b': kb})
  for c in conditioners:
    ka, kb = ('pretrained', 'full', c), ('scratch', 'full', c)
    if ka in table and kb in table:
      out.append({'claim': 'Pretraining helps (full tuning)',
                  'setting': 'pretrained', 'regime': c, 'a': ka, 'b': kb})
  for row in out:
    row['accuracy'] = compare(table, row['a'], row['b'])
    row['speed'] = compare(table, row['a'], row['b'], 'speed')
  return out


def claims_section(rows: Sequence[Mapping]) -> List[str]:
  lines = ['| Claim (paper) | Setting | Regime or method | Difference in '
           'accuracy, points [95% CI] | p (paired t) | n | Verdict | '
           'Difference in learning speed [95% CI] |',
           '|---|---|---|---:|---:|---:|---|---:|']
  for r in rows:
    what = (REGIME_NAMES[r['regime']] if r['regime'] in REGIME_NAMES
            else _name(r['regime']))
    setting = (SETTING_NAMES[r['a'][0]] if r['a'][0] == r['b'][0] else
               f'{SETTING_NAMES[r["a"][0]]} vs {SETTING_NAMES[r["b"][0]]}')
    lines.append(
        f'| {r["claim"]} | {setting} | {what} | '
        f'{_diff(r["accuracy"])} | {_p(r["accuracy"])} | '
        f'{r["accuracy"].n} | {stats.verdict(r["accuracy"])} | '
        f'{_diff(r["speed"])} |')
  return lines


def attention(results: Mapping, table: Mapping, setting: str) -> dict:
  """{(site, layer): {'measured': Interval over seeds of the mean over
  tasks, 'uniform': float, 'excess': paired Interval measured - uniform,
  'tasks': {task: (measured mean over seeds, uniform)}}}."""
  key = (setting, 'full', 'hyperprompt_global')
  if key not in table:
    return {}
  runs = [r for r in table[key]['runs'] if 'attention_mass' in r]
  if not runs:
    return {}
  tasks = list(runs[0]['attention_mass'])
  first = runs[0]['attention_mass'][tasks[0]]['measured']
  out = {}
  for site, layers in first.items():
    for layer in range(len(layers)):
      measured = lambda r, t: r['attention_mass'][t]['measured'][site][layer]
      uniform = {t: runs[0]['attention_mass'][t]['uniform'][site]
                 for t in tasks}
      per_seed = [float(np.mean([measured(r, t) for t in tasks]))
                  for r in runs]
      mean_uniform = float(np.mean(list(uniform.values())))
      out[(site, layer)] = {
          'measured': stats.interval(per_seed),
          'uniform': mean_uniform,
          'excess': stats.paired(per_seed, [mean_uniform] * len(per_seed)),
          'tasks': {t: (float(np.mean([measured(r, t) for r in runs])),
                        uniform[t]) for t in tasks}}
  return out


def _more_or_less(x: stats.Interval) -> str:
  if x.low > 0:
    return 'more than uniform'
  if x.high < 0:
    return 'less than uniform'
  return f'inconclusive, n={x.n}'


def attention_section(mass: Mapping) -> List[str]:
  sites = list(mass)
  tasks = list(next(iter(mass.values()))['tasks'])
  names = [f'{s.replace("_self", "")} layer {i}' for s, i in sites]
  lines = ['| | ' + ' | '.join(names) + ' |', '|---|' + '---:|' * len(sites)]
  for t in tasks:
    lines.append(f'| {t} | ' + ' | '.join(
        f'{mass[k]["tasks"][t][0]:.2f} ({mass[k]["tasks"][t][1]:.2f})'
        for k in sites) + ' |')
  lines.append('| **mean over tasks [95% CI over seeds]** | ' + ' | '.join(
      f'{mass[k]["measured"].mean:.2f} [{mass[k]["measured"].low:.2f}, '
      f'{mass[k]["measured"].high:.2f}] ({mass[k]["uniform"]:.2f})'
      for k in sites) + ' |')
  lines.append('| **measured - uniform [95% CI], n** | ' + ' | '.join(
      f'{mass[k]["excess"].mean:+.2f} [{mass[k]["excess"].low:+.2f}, '
      f'{mass[k]["excess"].high:+.2f}], {mass[k]["excess"].n}'
      for k in sites) + ' |')
  lines.append('| **prompts draw** | ' + ' | '.join(
      _more_or_less(mass[k]['excess']) for k in sites) + ' |')
  return lines


def greedy_section(results: Mapping) -> List[str]:
  """Greedy decoding against teacher-forced exact match, on one model."""
  run = next((r for r in results['runs'] if 'greedy_check' in r), None)
  if not run:
    return []
  check = run['greedy_check']
  return ['| Model | Test examples | Exact, greedy decoding | Exact, teacher '
          'forcing | Same verdict |', '|---|---:|---:|---:|---:|',
          f'| {_name(run["conditioner"])}, {SETTING_NAMES[run["setting"]]}, '
          f'{REGIME_NAMES[run["regime"]]}, seed {run["seed"]} | '
          f'{check["examples"]:,} | {check["greedy_exact"]:,} | '
          f'{check["teacher_forced_exact"]:,} | {check["agree"]:,} |']


def sections(results: Mapping) -> Dict[str, List[str]]:
  """{section name: markdown lines}."""
  table = summary(results)
  conditioners = results['conditioners']
  out = {'provenance': provenance_section(results),
         'settings': settings_section(results),
         'sweep': sweep_section(table, results['settings']),
         'claims': claims_section(claims(table, conditioners)),
         'greedy': greedy_section(results)}
  for setting in run_lib.SETTINGS:
    out[f'main-{setting}'] = main_section(table, setting, conditioners)
    for regime in run_lib.REGIMES:
      if any(k[:2] == (setting, regime) for k in table):
        out[f'tasks-{setting}-{regime}'] = per_task_section(
            table, setting, regime, conditioners)
    mass = attention(results, table, setting)
    if mass:
      out[f'attention-{setting}'] = attention_section(mass)
  if results.get('scale_counts'):
    out['scale'] = params_lib.overhead_markdown(results['scale_counts'])
  return out


# --- Charts -------------------------------------------------------------------

def plot_accuracy(table: Mapping, conditioners, n: int, path: str) -> None:
  """Per setting: accuracy of full vs conditioning-only per method, with
  95% t-intervals over the seeds as error bars."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  x = np.arange(len(conditioners))
  fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
  for ax, setting in zip(axes, run_lib.SETTINGS):
    for offset, regime in ((-0.2, 'full'), (0.2, 'conditioning')):
      rows = [table.get((setting, regime, c)) for c in conditioners]
      means = [r['accuracy'].mean if r else np.nan for r in rows]
      errors = [r['accuracy'].half_width if r else np.nan for r in rows]
      ax.bar(x + offset, means, 0.4, yerr=errors, capsize=3,
             label=REGIME_NAMES[regime])
    ax.set_xticks(x, [_name(c) for c in conditioners], rotation=30,
                  ha='right', fontsize=8)
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f'Backbone {SETTING_NAMES[setting]}', fontsize=10)
    ax.legend(fontsize=8, loc='upper center', ncol=2)
  axes[0].set_ylabel('test exact match (%), mean over tasks')
  fig.suptitle('Synthetic suite, 9 tasks: accuracy at the best held-out '
               f'evaluation per task\nbars: mean over n={n} seeds; error '
               'bars: 95% t-interval over those seeds', fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches='tight')
  plt.close(fig)


def plot_attention(masses: Mapping[str, Mapping], n: int, path: str) -> None:
  """Per setting and layer: measured mass on the prompts (mean over tasks,
  95% t-interval over seeds) beside the uniform-attention baseline."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(masses), figsize=(6 * len(masses), 4.2),
                           sharey=True, squeeze=False)
  for ax, (setting, mass) in zip(axes[0], masses.items()):
    sites = list(mass)
    x = np.arange(len(sites))
    ax.bar(x - 0.2, [mass[k]['measured'].mean for k in sites], 0.4,
           yerr=[mass[k]['measured'].half_width for k in sites], capsize=3,
           label='measured (error bars: 95% t-interval)')
    ax.bar(x + 0.2, [mass[k]['uniform'] for k in sites], 0.4,
           label='uniform attention: l / (l + visible keys)')
    ax.set_xticks(x, [f'{s.replace("_self", "")} {i}' for s, i in sites],
                  fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title(f'Backbone {SETTING_NAMES[setting]}', fontsize=10)
    ax.legend(fontsize=7, loc='upper center', ncol=2)
  axes[0][0].set_ylabel('attention mass on the prompts')
  fig.suptitle('HyperPrompt-Global, full tuning: attention mass on the '
               f'prompts per layer, mean over the 9 tasks and n={n} seeds',
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches='tight')
  plt.close(fig)


def write(results_path: str, markdown_path: str = EXPERIMENTS_MD,
          output_dir: str = None) -> None:
  """Splices the generated sections into `markdown_path` (appending any
  whose markers are missing) and writes the PNGs into `output_dir`."""
  import json  # pylint: disable=g-import-not-at-top
  with open(results_path) as f:
    results = json.load(f)
  output_dir = output_dir or os.path.dirname(results_path)
  table = summary(results)
  n = results['settings']['seeds']
  plot_accuracy(table, results['conditioners'], n,
                os.path.join(output_dir, ACCURACY_PNG))
  masses = {s: attention(results, table, s) for s in run_lib.SETTINGS}
  masses = {s: m for s, m in masses.items() if m}
  if masses:
    plot_attention(masses, n, os.path.join(output_dir, MASS_PNG))
  if not os.path.exists(markdown_path):
    with open(markdown_path, 'w') as f:
      f.write('# Experiments\n')
  for name, lines in sections(results).items():
    begin, end = f'<!-- study:{name} -->', f'<!-- /study:{name} -->'
    markdown_section.replace('\n'.join([begin, *lines, end]), begin, end,
                             markdown_path)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m study.report',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--results', default=os.path.join(
      run_lib.RESULTS_DIR, 'results.json'))
  parser.add_argument('--markdown', default=EXPERIMENTS_MD)
  args = parser.parse_args(argv)
  write(args.results, args.markdown)
  print(f'Wrote the generated sections of {args.markdown} and the charts.')


if __name__ == '__main__':
  main()
