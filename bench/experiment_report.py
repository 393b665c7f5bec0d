"""EXPERIMENTS.md and its charts, generated from the study's results.json.

Every number in the report comes from the results dict; the prose around
them is fixed, and each comparison with the paper (METHOD.md 4) is decided
from those numbers, not written by hand.
"""
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

NAMES = {
    'none': 'None (multi-task T5)',
    'hyperprompt_share': 'HyperPrompt-Share',
    'hyperprompt_sep': 'HyperPrompt-Sep',
    'hyperprompt_global': 'HyperPrompt-Global',
    'prompt_tuning': 'Prompt tuning',
    'prefix_tuning': 'Prefix tuning',
    'adapters': 'Adapters',
    'hyperformer': 'HyperFormer++',
}
SIZE_NAMES = {'t5_1_1_base': 'T5.1.1 Base', 't5_1_1_large': 'T5.1.1 Large',
              't5_1_1_xxl': 'T5.1.1 XXL'}
ACCURACY_PNG = 'accuracy.png'
MASS_PNG = 'attention_mass.png'
VARIANTS = ('hyperprompt_share', 'hyperprompt_sep', 'hyperprompt_global')


# --- Summaries ----------------------------------------------------------------

def task_scores(run: Mapping, best: bool = True) -> Dict[str, float]:
  """Per task: the best accuracy over the run's evaluations (the paper's
  convention, T5's), or the final evaluation's."""
  evaluations = run['evaluations']
  if not best:
    return dict(evaluations[-1]['accuracy'])
  return {task: max(e['accuracy'][task] for e in evaluations)
          for task in evaluations[-1]['accuracy']}


def runs_of(results: Mapping, kind: str, conditioner: str) -> List[Mapping]:
  return sorted((r for r in results['runs']
                 if r['kind'] == kind and r['conditioner'] == conditioner),
                key=lambda r: r['seed'])


class Stat:
  """Mean and (sample) standard deviation over seeds, in percent."""

  def __init__(self, values: Sequence[float]):
    values = 100.0 * np.asarray(values, np.float64)
    self.n = len(values)
    self.mean = float(values.mean()) if self.n else float('nan')
    self.std = float(values.std(ddof=1)) if self.n > 1 else 0.0

  def __str__(self):
    if not self.n:
      return 'n/a'
    return f'{self.mean:.1f} ± {self.std:.1f}' if self.n > 1 else (
        f'{self.mean:.1f}')


def mean_accuracy(runs: Sequence[Mapping], best: bool = True) -> Stat:
  """Over seeds, of each run's accuracy averaged over its tasks."""
  return Stat([np.mean(list(task_scores(r, best).values())) for r in runs])


def learning_speed(runs: Sequence[Mapping]) -> Stat:
  """Over seeds, of the mean accuracy over all of a run's evaluations (the
  area under its learning curve): higher means it learned sooner."""
  return Stat([np.mean([np.mean(list(e['accuracy'].values()))
                        for e in r['evaluations']]) for r in runs])


def per_task(runs: Sequence[Mapping], best: bool = True) -> Dict[str, Stat]:
  if not runs:
    return {}
  tasks = list(runs[0]['evaluations'][-1]['accuracy'])
  return {t: Stat([task_scores(r, best)[t] for r in runs]) for t in tasks}


def summary(results: Mapping) -> Dict[str, Dict[str, object]]:
  """{conditioner: {'full', 'full_final', 'conditioning', ...}}.

  Conditioning-only for 'none' is the task-blind backbone itself (its
  full-tuning runs, which every conditioning-only run starts from): it has
  nothing to tune.
  """
  out = {}
  for c in results['conditioners']:
    full = runs_of(results, 'full', c)
    conditioning = runs_of(results, 'full' if c == 'none'
                           else 'conditioning', c)
    counts = full[0]['params'] if full else {}
    out[c] = {
        'full': mean_accuracy(full), 'full_final': mean_accuracy(full, False),
        'full_speed': learning_speed(full),
        'conditioning': mean_accuracy(conditioning),
        'conditioning_final': mean_accuracy(conditioning, False),
        'conditioning_speed': learning_speed(conditioning),
        'full_tasks': per_task(full), 'conditioning_tasks':
            per_task(conditioning),
        'counts': counts,
        'conditioning_trainable': (0 if c == 'none' else
                                   counts.get('conditioning', 0)),
    }
  return out


# --- Findings -----------------------------------------------------------------

def _compare(a: Stat, b: Stat) -> str:
  diff = a.mean - b.mean
  if min(a.n, b.n) < 2:
    return f'{diff:+.1f} points (one seed: no spread to judge it by)'
  noise = max(a.std, b.std)
  size = ('within one seed standard deviation, so not a clear difference'
          if abs(diff) <= noise else 'more than one seed standard deviation')
  return f'{diff:+.1f} points ({size})'


def _beats(a: Stat, b: Stat) -> str:
  """'agrees' / 'disagrees' / 'is inconclusive' for the claim a > b: a
  difference within one seed standard deviation decides nothing."""
  if abs(a.mean - b.mean) <= max(a.std, b.std) or min(a.n, b.n) < 2:
    return 'is inconclusive'
  return 'agrees' if a.mean > b.mean else 'disagrees'


def _best_of(stats: Mapping[str, Stat], claimed: str) -> str:
  """The verdict on 'claimed is the best of stats'."""
  verdicts = {_beats(stats[claimed], stats[c]) for c in stats if c != claimed}
  if verdicts == {'agrees'}:
    return 'agrees'
  return 'disagrees' if 'disagrees' in verdicts else 'is inconclusive'


def _by_metric(table: Mapping, methods: Sequence[str], key: str) -> str:
  return ', '.join(f'{NAMES[c]} {table[c][key]}' for c in methods)


def findings(results: Mapping, table: Mapping) -> List[str]:
  """One paragraph per claim of the paper (METHOD.md 4): what the study
  found. A verdict counts a difference only when it exceeds one seed
  standard deviation, on the paper's metric (best per task) and on learning
  speed."""
  out = []
  glob = 'hyperprompt_global'
  for_metric = {
      key: {c: table[c][key] for c in VARIANTS}
      for key in ('full', 'full_speed')}
  out.append(
      '**Global is the best of the three HyperPrompt variants** (paper): on '
      f'the paper\'s metric the study {_best_of(for_metric["full"], glob)} '
      f'({_by_metric(table, VARIANTS, "full")}); on learning speed it '
      f'{_best_of(for_metric["full_speed"], glob)} '
      f'({_by_metric(table, VARIANTS, "full_speed")}). Full tuning; Global '
      f'vs Share {_compare(table[glob]["full"], table["hyperprompt_share"]["full"])}, '
      f'vs Sep {_compare(table[glob]["full"], table["hyperprompt_sep"]["full"])}.')
  share, sep = table['hyperprompt_share'], table['hyperprompt_sep']
  out.append(
      '**Share beat Sep on SuperGLUE** (paper): on this synthetic suite the '
      f'study {_beats(share["full"], sep["full"])} on the paper\'s metric '
      f'(Share vs Sep {_compare(share["full"], sep["full"])}) and '
      f'{_beats(share["full_speed"], sep["full_speed"])} on learning speed '
      f'({_compare(share["full_speed"], sep["full_speed"])}). Sep has a '
      f'hypernetwork per task ({sep["counts"]["conditioning"]:,} conditioning '
      f'parameters vs {share["counts"]["conditioning"]:,} for Share).')
  methods = [c for c in table if c != 'none']
  verdicts = {c: _beats(table[c]['full'], table[c]['conditioning'])
              for c in methods}
  wins = sum(v == 'agrees' for v in verdicts.values())
  losses = sum(v == 'disagrees' for v in verdicts.values())
  verdict = {(True, False): 'partly agrees', (False, True): 'partly disagrees',
             (False, False): 'is inconclusive', (True, True): 'is mixed'}[
                 (wins > 0, losses > 0)]
  if wins == len(methods) or losses == len(methods):
    verdict = 'agrees' if wins else 'disagrees'
  faster = sum(table[c]['conditioning_speed'].mean >
               table[c]['full_speed'].mean for c in methods)
  listing = ', '.join(
      f'{NAMES[c]} {table[c]["full"].mean - table[c]["conditioning"].mean:+.1f}'
      for c in methods)
  out.append(
      '**Full tuning clearly beats tuning the conditioning alone** (paper): '
      f'the study {verdict}: full minus conditioning-only accuracy, in '
      f'points: {listing}; full tuning is clearly better (by more than one '
      f'seed standard deviation) for {wins} of {len(methods)} methods and '
      f'clearly worse for {losses}. Conditioning-only tuning starts from a '
      'backbone trained without task information and must steer it; full '
      'tuning learns backbone and conditioning together. On learning speed '
      f'conditioning-only is ahead for {faster} of {len(methods)} methods: '
      'it starts from an already trained backbone, full tuning from scratch.')
  scale = _scale_counts(results)
  if scale and 't5_1_1_xxl' in scale:
    xxl = scale['t5_1_1_xxl']
    pct = xxl['hyperprompt_global']['percent']
    close = 'agrees' if abs(pct - 0.14) < 0.02 else 'disagrees'
    out.append(
        f'**0.14% extra parameters** (paper, Global at T5-XXL with 8 tasks): '
        f'with this project\'s default knobs Global adds '
        f'{xxl["hyperprompt_global"]["conditioning"]:,} parameters, '
        f'{pct:.3f}% of the backbone ({close}; the knobs were chosen to land '
        f'there, since the paper\'s were not recovered). Share adds '
        f'{xxl["hyperprompt_share"]["percent"]:.3f}%, Sep '
        f'{xxl["hyperprompt_sep"]["percent"]:.3f}%, adapters '
        f'{xxl["adapters"]["percent"]:.3f}%, HyperFormer++ '
        f'{xxl["hyperformer"]["percent"]:.3f}%. In the tiny study model the '
        'same methods cost far more in percent (table above): the backbone '
        'is 4 orders of magnitude smaller while prompts and hypernetworks '
        'shrink less.')
  out.append(
      f'**Global beats multi-task T5 with 1.02x parameters** (paper): '
      f'Global {table[glob]["full"]} vs None {table["none"]["full"]} here, '
      'but this comparison says little '
      'on this suite: all tasks share their inputs, so a task-blind model '
      'cannot tell them apart (the conflicting pairs are at chance by '
      'construction).')
  return out


def _scale_counts(results: Mapping) -> Optional[Mapping]:
  for r in results['runs']:
    if r['kind'] == 'scale':
      return r['counts']
  return None


# --- New task -----------------------------------------------------------------

def new_task_rows(results: Mapping) -> List[Dict[str, object]]:
  """Per seed: the held-out task's accuracy after adding it to the 8-task
  Global model vs Global trained on all 9 tasks from the start."""
  rows = []
  from_start = {r['seed']: r for r in runs_of(results, 'full',
                                              'hyperprompt_global')}
  for run in sorted(runs_of(results, 'new_task', 'hyperprompt_global'),
                    key=lambda r: (r['new_task'], r['seed'])):
    task = run['new_task']
    scratch = from_start.get(run['seed'])
    rows.append({
        'seed': run['seed'], 'task': task,
        'before': run['before'][task],
        'adapted': task_scores(run)[task],
        'adapted_final': task_scores(run, best=False)[task],
        'from_start': (task_scores(scratch)[task] if scratch else
                       float('nan')),
        'others_unchanged': run['others_unchanged'],
        'trained_parameters': run['trained_parameters'],
        'per_task_parameters': run['per_task_parameters'],
    })
  return rows


# --- Charts -------------------------------------------------------------------

def plot_accuracy(table: Mapping, path: str) -> None:
  """Grouped bars per method, full vs conditioning-only: accuracy (best per
  task) and learning speed, mean ± std over seeds."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  methods = list(table)
  x = np.arange(len(methods))
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
  panels = (('', 'accuracy (best per task)'),
            ('_speed', 'learning speed (mean over evaluations)'))
  for ax, (suffix, title) in zip(axes, panels):
    for offset, key, label in ((-0.2, 'full', 'full tuning'),
                               (0.2, 'conditioning', 'conditioning only')):
      stats = [table[m][key + suffix] for m in methods]
      ax.bar(x + offset, [s.mean for s in stats], 0.4,
             yerr=[s.std for s in stats], capsize=3, label=label)
    ax.set_xticks(x, [NAMES[m] for m in methods], rotation=30, ha='right',
                  fontsize=8)
    ax.set_ylim(0, 115)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f'Synthetic suite: {title}', fontsize=10)
    ax.legend(fontsize=8, loc='upper left', ncol=2)
  axes[0].set_ylabel('exact match (%), mean over tasks')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# --- Markdown -----------------------------------------------------------------

def _pct(x: float) -> str:
  return f'{100 * x:.1f}'


def _params_cell(counts: Mapping) -> str:
  return f'{counts["conditioning"]:,} ({counts["percent"]:.1f}%)'


def markdown(results: Mapping, image_dir: str, results_path: str) -> str:
  """The whole EXPERIMENTS.md; paths are relative to the markdown."""
  table = summary(results)
  settings = results['settings']
  first_full = runs_of(results, 'full', 'none')
  backbone = first_full[0]['params']['backbone'] if first_full else 0
  tasks = list(first_full[0]['tasks']) if first_full else []
  lines = [
      '# Experiments',
      '',
      'Generated by `python -m bench.experiment` (`make experiment`) from '
      f'`{results_path}`; do not edit by hand. Command of this '
      f'run: `{results["command"]}`, {results["workers"]} worker processes, '
      f'{results["wall_seconds"] / 60:.1f} minutes on '
      f'{results["machine"]["cpus"]} CPU cores '
      f'({results["machine"]["platform"]}, jax {results["machine"]["jax"]}, '
      f'{results["machine"]["date"]}).',
      '',
      '## What was run',
      '',
      f'- **Data**: the synthetic suite (`hp_synthetic`, {len(tasks)} tasks: '
      f'{", ".join(tasks)}). Every task reads the same 8-digit inputs; only '
      'the task id says what to output, and first_small/first_large and '
      'last_even/last_odd give opposite answers on every input. '
      f'{settings["num_train"]:,} training and {settings["num_validation"]} '
      'validation examples per task; batches mix all tasks uniformly.',
      f'- **Model**: the tiny T5.1.1-shaped backbone (`gin/models/sizes/'
      f'tiny.gin`, {backbone:,} parameters) with each method\'s knobs scaled '
      'down in `gin/experiments/synthetic_small.gin` (4 prompt positions for '
      'every prompt-based method, bottleneck 8).',
      f'- **Full tuning** (the paper\'s main setting): backbone and '
      f'conditioning from random initialisation, {settings["steps"]} steps '
      f'of AdamW (batch {settings["batch_size"]}, peak learning rate '
      f'{settings["learning_rate"]}, {settings["warmup_steps"]} warmup '
      'steps, cosine decay).',
      f'- **Conditioning-only tuning**: tuning only the conditioning of a '
      'randomly initialised backbone is meaningless, so the backbone is '
      'first trained on all tasks WITHOUT conditioning (task-blind '
      'multi-task training: the full-tuning run of "None", one backbone per '
      'seed, shared by all methods); it is then frozen and only '
      f'`params[\'conditioner\']` trains, {settings["steps"]} steps at '
      f'learning rate {settings["conditioning_learning_rate"]}. The '
      '"None" row of this column is that backbone itself.',
      f'- **Seeds**: {settings["seeds"]} (initialisation and batch order); '
      'tables show mean ± sample standard deviation over seeds.',
      f'- **Metric**: exact match per example, in percent: every target '
      'token (EOS included) is the argmax under teacher forcing, which is '
      'exactly when greedy decoding outputs the target. Each task\'s score '
      f'is its best over the evaluations every {settings["eval_every"]} '
      'steps (the paper\'s convention: checkpoints every 2000 steps, best '
      'per task); "final" is the last evaluation.',
  ]
  check = next((r['greedy_check'] for r in results['runs']
                if 'greedy_check' in r), None)
  if check:
    lines.append(
        f'- **Check of the metric**: on the {check["examples"]:,} validation '
        'examples, greedy decoding with `EncoderDecoderModel.predict_batch` '
        f'(fully tuned Global, seed 0) is exact on {check["greedy_exact"]:,}, '
        f'teacher forcing on {check["teacher_forced_exact"]:,}; the two agree '
        f'on {check["agree"]:,} examples.')

  lines += [
      '',
      '## Main table',
      '',
      'Accuracy: exact match averaged over the tasks, best evaluation per '
      'task (the paper\'s convention), and at the final step. Learning '
      'speed: the accuracy averaged over all of a run\'s evaluations (the '
      'area under its learning curve), which separates methods that all '
      'end near 100%. Conditioning parameters in percent of the backbone.',
      '',
      '| Method | Conditioning params (% of backbone) | Full tuning | Full, '
      'final | Full, learning speed | Conditioning only | Cond. only, final | '
      'Cond. only, learning speed | Trained params (cond. only) |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for c, row in table.items():
    counts = row['counts']
    lines.append(
        f'| {NAMES[c]} | {_params_cell(counts)} | {row["full"]} | '
        f'{row["full_final"]} | {row["full_speed"]} | {row["conditioning"]} '
        f'| {row["conditioning_final"]} | {row["conditioning_speed"]} | '
        f'{row["conditioning_trainable"]:,} |')
  lines += ['', f'![accuracy]({os.path.join(image_dir, ACCURACY_PNG)})', '']

  for key, title in (('full_tasks', 'Per task, full tuning'),
                     ('conditioning_tasks', 'Per task, conditioning only')):
    lines += [f'## {title}', '', '| Method | ' + ' | '.join(tasks) + ' |',
              '|---|' + '---:|' * len(tasks)]
    for c, row in table.items():
      cells = [str(row[key][t]) if t in row[key] else 'n/a' for t in tasks]
      lines.append(f'| {NAMES[c]} | ' + ' | '.join(cells) + ' |')
    lines.append('')

  rows = new_task_rows(results)
  if rows:
    held_out = list(dict.fromkeys(r['task'] for r in rows))
    lines += [
        '## Adding a task to a trained Global model',
        '',
        'For each held-out task, HyperPrompt-Global is trained (fully) on the '
        '8 other tasks; then the task is added (`hyperprompt.new_task`) and '
        f'only its new rows train: {", ".join(rows[0]["per_task_parameters"])} '
        f'({rows[0]["trained_parameters"]:,} parameters), '
        f'{settings["adapt_steps"]} steps of AdamW at learning rate '
        f'{settings["adapt_learning_rate"]} on that task alone, every other '
        'parameter frozen by an update mask. It is compared with Global '
        'trained on all 9 tasks from the start (the full-tuning runs above). '
        '"Others unchanged" checks that every other parameter (backbone, '
        'hypernetworks, the old tasks\' rows) is bit for bit what it was, so '
        'the 8 old tasks keep their exact outputs.',
        '',
        '| Added task | Seed | Before training its rows | Added (best) | '
        'Added (final) | Trained with it from the start | Others unchanged |',
        '|---|---:|---:|---:|---:|---:|:---:|',
    ]
    for r in rows:
      lines.append(
          f'| {r["task"]} | {r["seed"]} | {_pct(r["before"])} | '
          f'{_pct(r["adapted"])} | {_pct(r["adapted_final"])} | '
          f'{_pct(r["from_start"])} | '
          f'{"yes" if r["others_unchanged"] else "NO"} |')
    lines.append('')
    for task in held_out:
      mine = [r for r in rows if r['task'] == task]
      adapted = Stat([r['adapted'] for r in mine])
      scratch = Stat([r['from_start'] for r in mine])
      lines.append(
          f'- `{task}`: {adapted} with only its new rows trained vs '
          f'{scratch} when trained with it from the start '
          f'({adapted.mean - scratch.mean:+.1f} points).')
    lines.append('')

  mass = next((r['attention_mass'] for r in results['runs']
               if 'attention_mass' in r), None)
  if mass:
    enc = np.mean([np.nanmean(m['encoder_self']) for m in mass.values()])
    dec = np.mean([np.nanmean(m['decoder_self']) for m in mass.values()])
    lines += [
        '## Attention mass on the hyper-prompts',
        '',
        'The paper\'s analysis: the share of attention that queries put on '
        'the prompts, per layer, averaged over heads, real (non-padding) '
        'queries and validation examples (`hyperprompt.analyze`), for the '
        'fully tuned Global model of seed 0. Averaged over layers and tasks: '
        f'{enc:.2f} in the encoder, {dec:.2f} in the decoder, with 4 '
        'prompt keys next to 9 real keys.',
        '',
        f'![attention mass]({os.path.join(image_dir, MASS_PNG)})',
        '',
    ]

  scale = _scale_counts(results)
  if scale:
    sizes = list(scale)
    lines += [
        '## Parameter overhead at the paper\'s sizes',
        '',
        f'With {8} tasks and this project\'s default knobs (the paper\'s '
        'were not recovered), from shapes only (`hyperprompt.params`): '
        'conditioning parameters and percent of the backbone.',
        '',
        '| Method | ' + ' | '.join(SIZE_NAMES.get(s, s) for s in sizes) +
        ' |', '|---|' + '---:|' * len(sizes)]
    for c in next(iter(scale.values())):
      cells = [f'{scale[s][c]["conditioning"]:,} '
               f'({scale[s][c]["percent"]:.3f}%)' for s in sizes]
      lines.append(f'| {NAMES[c]} | ' + ' | '.join(cells) + ' |')
    lines.append('')

  lines += ['## Agreement with the paper', '']
  for paragraph in findings(results, table):
    lines += [f'- {paragraph}']
  lines += [
      '',
      '## Limits',
      '',
      '- A tiny model on a synthetic suite, a few minutes of CPU per run: '
      'these are checks that every method trains, conditions on the task '
      'and composes with the runner\'s pieces, not a reproduction of the '
      'paper\'s GLUE/SuperGLUE numbers. The configurations for that are in '
      '`gin/experiments/` (T5.1.1 Base/Large on TPU).',
      '- Learning rates and step counts were set once for the whole study, '
      'not tuned per method.',
      '',
  ]
  return '\n'.join(lines)


def write(results: Mapping, markdown_path: str, output_dir: str,
          results_path: str) -> None:
  """Writes the markdown and the PNGs (into `output_dir`)."""
  table = summary(results)
  os.makedirs(output_dir, exist_ok=True)
  plot_accuracy(table, os.path.join(output_dir, ACCURACY_PNG))
  mass = next((r['attention_mass'] for r in results['runs']
               if 'attention_mass' in r), None)
  if mass:
    from hyperprompt import analyze  # pylint: disable=g-import-not-at-top
    analyze.plot_tasks(mass, os.path.join(output_dir, MASS_PNG))
  here = os.path.dirname(os.path.abspath(markdown_path))
  with open(markdown_path, 'w') as f:
    f.write(markdown(results, os.path.relpath(output_dir, here),
                     os.path.relpath(results_path, here)))
