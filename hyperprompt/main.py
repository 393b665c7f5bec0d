"""The `hyperprompt` command: train, eval, infer, export, params, analyze,
compile.

    hyperprompt train --gin_file=models/sizes/tiny.gin \\
        --gin_file=models/conditioners/hyperprompt_global.gin \\
        --gin_file=runs/train.gin --gin.MODEL_DIR=\\"/tmp/run\\" ...

Flags as in t5x's binaries: `--gin_file` (repeatable; a path, or a path
relative to `--gin_search_paths`, the installed `hyperprompt/gin` data or the
repository's gin/), `--gin.NAME=VALUE` (a gin binding; strings quoted, as in
t5x: `--gin.MODEL_DIR=\\"gs://bucket/run\\"`) and `--gin_search_paths=DIR,...`.
Bindings apply after all files, so they override them. `python -m
hyperprompt.train|eval|infer` are the same as the subcommands.

export, params, analyze and compile are separate tools (hyperprompt.export,
...); the command passes its remaining arguments to them.

Every command exits 0 on success. A failure prints one line, the last on
stderr, and exits 1 (130 after Ctrl-C); `--verbose` or HYPERPROMPT_VERBOSE=1
shows the traceback instead.
"""
import argparse
import importlib
import importlib.util
import logging
import runpy
import sys
from typing import Optional, Sequence

from hyperprompt import cli_errors
from hyperprompt import gin_cli
from hyperprompt import libtpu_options
from hyperprompt import quiet_logs

RUNS = {'train': 'train', 'eval': 'evaluate', 'infer': 'infer'}
TOOLS = ('export', 'params', 'analyze', 'compile')


def run(command: str, argv: Sequence[str]):
  """Runs train, eval or infer with gin flags from `argv`; returns the
  runner's result (for Python callers; the command prints nothing of it)."""
  files, bindings, rest = gin_cli.split_gin_flags(argv)
  parser = argparse.ArgumentParser(
      prog=f'hyperprompt {command}',
      description=f'{command.capitalize()} as gin configures it '
      f'(hyperprompt.runner.{RUNS[command]}).')
  gin_cli.add_flags(parser)
  args = parser.parse_args(rest)
  quiet_logs.configure()
  # On a TPU VM the runner's first JAX call loads libtpu, which reads its
  # options then.
  libtpu_options.set_defaults()
  # Imported here so `hyperprompt --help` stays fast.
  from hyperprompt import partitioning  # pylint: disable=g-import-not-at-top
  from hyperprompt import runner  # pylint: disable=g-import-not-at-top
  gin_cli.parse_gin(files, bindings,
                    gin_cli.search_paths(args.gin_search_paths))
  gin_cli.check_macro_values()
  partitioning.initialize_distributed()
  # Gin reports a missing macro or binding at this call, naming it.
  return getattr(runner, RUNS[command])()


def run_tool(name: str, argv: Sequence[str]):
  """Runs `python -m hyperprompt.<name>` with `argv`."""
  module = f'hyperprompt.{name}'
  if importlib.util.find_spec(module) is None:
    raise SystemExit(f'`hyperprompt {name}` needs the module {module}, which '
                     'is not installed in this version.')
  sys.argv = [module, *argv]
  quiet_logs.configure(logging.WARNING)  # The tools print their results.
  runpy.run_module(module, run_name='__main__', alter_sys=True)


def console_main(argv: Optional[Sequence[str]] = None) -> None:
  """The console script: exits 0 on success, 1 with one line on failure."""
  argv = list(sys.argv[1:] if argv is None else argv)
  commands = (*RUNS, *TOOLS)
  usage = (f'usage: hyperprompt {{{",".join(commands)}}} --gin_file=... '
           '[--gin.NAME=VALUE ...] [--verbose]\n' + __doc__)
  if argv[:1] in (['-h'], ['--help']):
    print(usage)
    return
  if not argv or argv[0] not in commands:
    raise SystemExit(usage)
  command, rest = argv[0], argv[1:]
  if not cli_errors.verbose_requested(rest):
    quiet_logs.import_tensorflow_quietly()
  if command in TOOLS:
    cli_errors.exit_on_error(lambda: run_tool(command, rest), rest)
  else:
    cli_errors.exit_on_error(lambda: run(command, rest), rest)


if __name__ == '__main__':
  console_main()
