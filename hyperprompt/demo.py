"""The laptop demo (`make demo`): HyperPrompt-Global vs multi-task T5 without
conditioning (the 'none' method).

Trains a tiny T5 on the synthetic suite twice, once conditioned by
HyperPrompt-Global and once without conditioning, with the same data, steps
and optimizer (gin/runs/demo.gin), then prints each task's validation score
at the last step side by side. Every task reads the same digit strings; only
the task id says what to output, so the unconditioned model cannot tell
first_small from first_large or last_even from last_odd (50% is the best it
can do there), while a conditioned model can.
"""
import argparse
import json
import os
import tempfile

from hyperprompt import quiet_logs
# A script: TensorFlow (imported by the runner and history) starts without its
# notices.
quiet_logs.import_tensorflow_quietly()
# pylint: disable=g-import-not-at-top,wrong-import-position
from hyperprompt import atomic_files
from hyperprompt import cli_errors
from hyperprompt import history
from hyperprompt import main
from hyperprompt.conditioning import registry
# pylint: enable=g-import-not-at-top,wrong-import-position

CONDITIONERS = ('hyperprompt_global', 'none')


def last_eval(model_dir: str) -> dict:
  """{task: {metric: value}} of the last evaluation in the run's history."""
  rows = [r for r in history.read_history(model_dir)
          if any(k.startswith('eval/') for k in r)]
  out = {}
  for key, value in rows[-1].items():
    if key.startswith('eval/'):
      task, metric = key[len('eval/'):].rsplit('/', 1)
      out.setdefault(task, {})[metric] = value
  return out


def table(results: dict) -> str:
  names = list(results)
  tasks = sorted(next(iter(results.values())))
  width = max(len(t) for t in tasks) + 2
  lines = [f'{"task":<{width}}{"metric":<13}' +
           ''.join(f'{n:>22}' for n in names)]
  for task in tasks:
    metric = next(iter(results[names[0]][task]))
    lines.append(f'{task:<{width}}{metric:<13}' + ''.join(
        f'{results[n][task][metric]:>22.1f}' for n in names))
  means = [sum(next(iter(v.values())) for v in results[n].values()) /
           len(tasks) for n in names]
  lines.append(f'{"mean":<{width + 13}}' +
               ''.join(f'{m:>22.1f}' for m in means))
  return '\n'.join(lines)


def run(model_root: str, extra_bindings=()) -> dict:
  results = {}
  # Minutes of compiling and evaluating are otherwise silent: say the plan.
  names = [registry.display_name(c) for c in CONDITIONERS]
  print(f'Two training runs ({" and ".join(names)}) of '
        'the same tiny T5 on the synthetic suite, each evaluated on the '
        'validation split at its last step; then a table of the scores.',
        flush=True)
  for i, (name, conditioner) in enumerate(zip(names, CONDITIONERS), 1):
    model_dir = os.path.join(model_root, conditioner)
    print(f'[{i}/{len(CONDITIONERS)}] Training {name} in {model_dir} '
          '(compiling first)...', flush=True)
    main.run('train', [
        '--gin_file=models/sizes/tiny.gin',
        f'--gin_file=models/conditioners/{conditioner}.gin',
        '--gin_file=runs/demo.gin',
        f'--gin.MODEL_DIR="{model_dir}"', *extra_bindings])
    results[name] = last_eval(model_dir)
  return results


def console_main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--model_dir', default=None,
                      help='where the two runs go (default: a temp dir)')
  args, extra = parser.parse_known_args()
  cli_errors.exit_on_error(lambda: _demo(args.model_dir, extra), extra)


def _demo(model_dir, extra):
  root = model_dir or tempfile.mkdtemp(prefix='hyperprompt_demo_')
  results = run(root, extra)
  print(f'\nValidation scores (%) at the last step; runs in {root}\n')
  print(table(results))
  with atomic_files.open_for_write(os.path.join(root,
                                                'demo_results.json')) as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  console_main()
