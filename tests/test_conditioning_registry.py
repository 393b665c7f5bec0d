"""conditioning.registry: the methods are the files of gin/models/conditioners/,
and each one's class is what gin builds from its file."""
import glob
import os

import gin
import pytest

from hyperprompt import gin_cli
from hyperprompt.conditioning import registry

FILES = sorted(os.path.basename(p)[:-len('.gin')] for p in glob.glob(
    os.path.join(gin_cli.GIN_DIR, 'models', 'conditioners', '*.gin')))


def test_names_are_the_gin_files_with_none_first():
  assert registry.names()[0] == 'none'
  assert sorted(registry.names()) == FILES
  # precomputed serves prefixes exported from a trained model.
  assert registry.method('precomputed').needs == ('PREFIX_FILE',)
  assert registry.names(learned=True) == tuple(
      n for n in registry.names() if n != 'precomputed')
  displays = [m.display_name for m in registry.methods()]
  assert len(set(displays)) == len(displays)
  assert registry.display_name('hyperprompt_global') == 'HyperPrompt-Global'


@pytest.mark.parametrize('name', FILES)
def test_class_is_what_gin_builds_from_the_file(name):
  method = registry.method(name)
  gin_cli.parse_gin(['models/sizes/tiny.gin', method.gin_file],
                    ['NUM_TASKS = 3'] + [f"{macro} = '/unused'"
                                         for macro in method.needs])
  built = gin_cli.transformer().conditioner
  gin.clear_config()
  made = registry.conditioner(
      name, 3, **({'path': '/unused'} if method.needs else {}))
  assert type(built) is method.conditioner is type(made)
  # Code defaults on both sides: the files bind only NUM_TASKS (and a path).
  assert made == built


def test_unknown_name_lists_the_files():
  with pytest.raises(ValueError, match='define none, adapters'):
    registry.method('vanilla')
