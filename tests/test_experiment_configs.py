"""gin/experiments: the paper's runs parse, and say what the paper did."""
import gin
import jax
import numpy as np
import pytest

from hyperprompt import freezing
from hyperprompt import gin_cli
from hyperprompt import runner  # pylint: disable=unused-import
from hyperprompt import trainer
from hyperprompt import tasks
from hyperprompt.conditioning import registry

RUNS = {'glue_t5_1_1_base': ('hp_glue', 768), 'glue_t5_1_1_large': (
    'hp_glue', 1024), 'superglue_t5_1_1_base': ('hp_superglue', 768),
        'superglue_t5_1_1_large': ('hp_superglue', 1024)}
CONDITIONERS = registry.names(learned=True)


def _parse(*files):
  gin_cli.parse_gin(files, ['MODEL_DIR = "/tmp/unused"'])


@pytest.mark.parametrize('run', sorted(RUNS))
@pytest.mark.parametrize('conditioner', CONDITIONERS)
def test_paper_run(run, conditioner):
  _parse(f'experiments/{run}.gin', f'models/conditioners/{conditioner}.gin')
  mixture, emb_dim = RUNS[run]
  q = gin.query_parameter
  assert q('%MIXTURE_OR_TASK_NAME') == mixture
  assert gin_cli.transformer().conditioner.num_tasks == len(
      tasks.task_vocabulary(mixture)) == 8
  # The paper: a checkpoint and an evaluation every 2000 steps.
  assert q('%CHECKPOINT_PERIOD') == q('%EVAL_PERIOD') == 2000
  # Starts from Google's T5.1.1 checkpoint of the same size.
  size = run.split('_', 1)[1]
  assert q('%INITIAL_CHECKPOINT_PATH') == (
      f'gs://t5-data/pretrained_models/t5x/{size}/checkpoint_1000000')
  # Whole-network tuning, the paper's main setting.
  assert q('trainer.make_optimizer.train') == 'all'
  module = gin_cli.transformer()
  assert module.config.emb_dim == emb_dim
  assert module.conditioner.num_tasks == 8


def test_conditioning_only_freezes_the_backbone():
  _parse('experiments/superglue_t5_1_1_base.gin',
         'models/conditioners/hyperprompt_global.gin',
         'experiments/conditioning_only.gin')
  params = {'token_embedder': {'embedding': np.ones((3, 2), np.float32)},
            'conditioner': {'task_prompts': np.ones((8, 2), np.float32)}}
  optimizer = trainer.make_optimizer(params)
  assert isinstance(optimizer, freezing.Partial)
  assert optimizer.train == 'conditioning'
  # Optimizer state for the conditioner only: the backbone's embedding
  # [3, 2] has no moments.
  shapes = {x.shape for x in jax.tree.leaves(optimizer.init(params))}
  assert (8, 2) in shapes or {(8,), (2,)} <= shapes
  assert not shapes & {(3, 2), (3,)}


def test_conditioning_only_refuses_the_none_conditioner():
  _parse('experiments/glue_t5_1_1_base.gin', 'models/conditioners/none.gin',
         'experiments/conditioning_only.gin')
  params = {'token_embedder': {'embedding': np.ones((3, 2), np.float32)}}
  with pytest.raises(ValueError, match='conditioning parameters'):
    trainer.make_optimizer(params)


def test_study_knobs_compose_with_every_conditioner():
  for conditioner in CONDITIONERS:
    gin_cli.parse_gin(['models/sizes/tiny.gin',
                  f'models/conditioners/{conditioner}.gin',
                  'experiments/synthetic_small.gin'], ['NUM_TASKS = 9'])
    module = gin_cli.transformer()
    assert module.conditioner.num_tasks == 9
    if conditioner.startswith('hyperprompt'):
      assert module.conditioner.prompt_length == 4
