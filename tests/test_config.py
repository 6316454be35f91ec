"""The configs: nine paper configs, their strong-baseline twins, the demo; validation that names the field."""

import importlib.util
import pathlib

import jax
import pytest
import tensorflow_datasets as tfds

from qagan_jax import config as config_lib
from qagan_jax import input_pipeline
from qagan_jax import train_state


def load_config_file(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


CONFIG_FILES = sorted(
    (pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py'))


def test_there_are_nine_paper_configs_a_base_and_the_demo():
  names = {p.stem for p in CONFIG_FILES}
  assert {'base', 'demo'} < names
  assert {f'{d}_{m}' for d in ('cifar10', 'stl10', 'celeba')
          for m in ('wgangp', 'ssim', 'niqe')} < names


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.stem)
def test_every_config_file_validates_and_builds_models_and_pipeline(path):
  config = load_config_file(path)
  config_lib.validate(config)
  setup = train_state.build(config)
  state = jax.eval_shape(lambda: train_state.create_train_state(
      setup, jax.random.PRNGKey(0)))
  assert state.gen_params and state.critic_params
  side = config.model.resolution
  with tfds.testing.mock_data(num_examples=2 * config.train.batch_size):
    loader = input_pipeline.create_loader(config.data, config.train.batch_size,
                                          seed=0, device_count=1)
    batch = next(iter(loader))
  assert batch.shape == (config.train.batch_size, side, side, 3)
  if path.stem != 'base' and path.stem != 'demo':
    dataset, method, *protocol = path.stem.split('_')
    assert config.loss.method == method
    assert config.data.dataset == {'celeba': 'celeb_a'}.get(dataset, dataset)
    assert (config.train.n_critic, config.train.learning_rate,
            config.loss.gp_weight, config.loss.quality_weight) == (
                5, 2e-4, 10.0 if protocol == ['gp10'] else 1.0, 0.1)


def _flat(tree, prefix=''):
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


@pytest.mark.parametrize('path', [p for p in CONFIG_FILES
                                  if p.stem.endswith('_gp10')],
                         ids=lambda p: p.stem)
def test_strong_baseline_configs_differ_from_the_paper_only_as_documented(
    path):
  strong = _flat(load_config_file(path).to_dict())
  paper = _flat(load_config_file(
      path.with_name(path.stem[:-len('_gp10')] + '.py')).to_dict())
  assert strong.keys() == paper.keys()
  differences = {k: strong[k] for k in strong if strong[k] != paper[k]}
  assert differences == config_lib.GP10_FIELDS
  assert paper['loss.gp_weight'] == 1.0 and paper['loss.drift_weight'] == 1e-5


def test_nine_strong_baseline_configs():
  assert sorted(p.stem for p in CONFIG_FILES if p.stem.endswith('_gp10')) == (
      sorted(f'{d}_{m}_gp10' for d in ('cifar10', 'stl10', 'celeba')
             for m in ('wgangp', 'ssim', 'niqe')))


def test_validate_names_bad_fields_and_suggests(tiny_run_config):
  config = tiny_run_config()
  config.loss.method = 'nique'
  config.model.resolution = 48
  config.train.learning_rate = -1.0
  with pytest.raises(ValueError) as error:
    config_lib.validate(config)
  message = str(error.value)
  assert "loss.method = 'nique'" in message and "did you mean 'niqe'" in message
  assert 'train.learning_rate must be in (0.0, inf)' in message
  config = tiny_run_config()
  config.model.resolution = 48
  with pytest.raises(ValueError, match='does not match the 32x32 images'):
    config_lib.validate(config)
  config = config_lib.get_config('cifar10', 'ssim')   # IS: 10 splits
  config.eval.num_samples = 5
  with pytest.raises(ValueError, match='eval.num_samples must be at least 10'):
    config_lib.validate(config)
  config = tiny_run_config()
  config.eval.reference_cache = 'nosuch://bucket/cache'
  with pytest.raises(ValueError, match=r'eval.reference_cache=nosuch://bucket/'
                     r'cache: nosuch:// is not a storage'):
    config_lib.validate(config)


@pytest.mark.parametrize('data_dir', ['gs://bucket/tfds', 's3://bucket/tfds/'])
def test_a_data_dir_on_remote_storage_is_refused_with_how_to_stage_it(
    data_dir):
  """Reading a record of a tfds dataset from gs:// (a Cloud Storage API on
  this machine) hung: refused at load, with the copy to each host's disk."""
  config = config_lib.get_config('cifar10', 'ssim')
  config.data.data_dir = data_dir
  with pytest.raises(config_lib.ConfigurationError) as refused:
    config_lib.validate(config)
  message = str(refused.value)
  assert f'data.data_dir = {data_dir!r}' in message
  assert f"gcloud storage cp -r {data_dir.rstrip('/')}/NAME" in message
  assert '--worker=all' in message
