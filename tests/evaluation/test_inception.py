"""The Flax FID Inception: pytorch-fid equivalence, weight conversion and loading, batch independence."""

import jax
import numpy as np
import pytest
from flax import traverse_util

from helpers import numerics
from qagan_jax.evaluation import inception


def to_torch_names(variables):
  """The inverse of the converter's mapping, on numpy arrays."""
  state = {}
  for path, value in traverse_util.flatten_dict(dict(variables)).items():
    collection, *modules, leaf = path
    name = '.'.join(modules)
    if modules == ['fc']:
      state[f'fc.{ {"kernel": "weight", "bias": "bias"}[leaf] }'] = (
          value.T if leaf == 'kernel' else value)
    elif leaf == 'kernel':
      state[f'{name}.weight'] = value.transpose(3, 2, 0, 1)
    else:
      torch_leaf = {('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
                    ('batch_stats', 'mean'): 'running_mean',
                    ('batch_stats', 'var'): 'running_var'}[(collection, leaf)]
      state[f'{name}.{torch_leaf}'] = value
      if torch_leaf == 'running_var':
        state[f'{name}.num_batches_tracked'] = np.array(0)
  return state


def test_output_shapes_parameter_count_and_batch_independence(
    random_inception_variables):
  variables = random_inception_variables()
  model = inception.FIDInceptionV3(resize=False)
  apply = jax.jit(model.apply)
  images = np.random.default_rng(1).uniform(size=(3, 75, 75, 3)).astype(
      np.float32)
  pool, logits = apply(variables, images)
  assert pool.shape == (3, 2048) and logits.shape == (3, 1008)
  assert np.all(np.isfinite(pool)) and np.all(np.asarray(pool) >= 0)
  again = apply(variables, images)
  np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(pool))
  # each image's outputs depend on that image only
  reordered = apply(variables, images[::-1])
  # the widest sums: 3 x 3 x 768-channel convolutions
  numerics.assert_trees_close(np.asarray(reordered[0])[::-1], pool,
                              numerics.reordered_sum(3 * 3 * 768))
  # 21,785,568 conv and BatchNorm weights and the 2048 x 1008 classifier
  # with its bias: the parameters of pytorch-fid's state dict (the
  # equivalence test below converts one and checks every shape)
  count = sum(v.size for v in jax.tree_util.tree_leaves(variables['params']))
  assert count == 23_850_960


def test_converter_maps_every_torch_name_and_checks_the_structure(
    tmp_path, random_inception_variables):
  variables = random_inception_variables(seed=2)
  state = to_torch_names(variables)
  assert 'Mixed_7c.branch_pool.conv.weight' in state
  assert state['Conv2d_1a_3x3.conv.weight'].shape == (32, 3, 3, 3)
  converted = inception.convert_torch_state_dict(state)
  for a, b in zip(jax.tree_util.tree_leaves(converted),
                  jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)
  path = tmp_path / 'weights.npz'
  inception.save_weights(converted, path)
  loaded = inception.load_weights(path)
  assert jax.tree_util.tree_structure(loaded) == (
      jax.tree_util.tree_structure(variables))
  # wrong networks are refused with what differs
  del state['Mixed_5b.branch1x1.conv.weight']
  with pytest.raises(ValueError, match='missing.*Mixed_5b/branch1x1'):
    inception.convert_torch_state_dict(state)
  with pytest.raises(ValueError, match='unexpected entry'):
    inception.convert_torch_state_dict({'features.0.weight': np.zeros(3)})


def test_missing_or_damaged_weights_say_what_to_do(tmp_path):
  with pytest.raises(inception.InceptionWeightsMissing) as error:
    inception.load_weights(tmp_path / 'absent.npz')
  message = str(error.value)
  assert inception.WEIGHTS_URL in message
  assert 'python -m qagan_jax.evaluation.inception' in message
  assert str(tmp_path / 'absent.npz') in message
  bad = tmp_path / 'bad.npz'
  bad.write_bytes(b'not a zip file')
  with pytest.raises(ValueError, match='not a readable weights file'):
    inception.load_weights(bad)


def test_equals_pytorch_fid_on_random_weights(monkeypatch):
  why = ('the comparison with pytorch-fid needs the optional torch, '
         'torchvision and pytorch-fid (several GB): pip install '
         '".[inception-check]"')
  torch = pytest.importorskip('torch', reason=why)
  fid_inception = pytest.importorskip('pytorch_fid.inception', reason=why)
  torch.manual_seed(0)
  net = fid_inception._inception_v3(num_classes=1008, aux_logits=False,
                                    weights=None)
  net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
  net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
  # random BatchNorm statistics and affine terms, so that every entry matters
  generator = torch.Generator().manual_seed(1)
  for module in net.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      n = module.num_features
      module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
      module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
      module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
      module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))
  net.eval()
  monkeypatch.setattr(fid_inception, 'fid_inception_v3', lambda: net)
  wrapper = fid_inception.InceptionV3([3], resize_input=True,
                                      normalize_input=True).eval()
  images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3)).astype(
      np.float32) / 255.0
  with torch.no_grad():
    pool_t = wrapper(torch.from_numpy(images.transpose(0, 3, 1, 2)))[0]
    pool_t = pool_t[:, :, 0, 0]
    logits_t = net.fc(pool_t).numpy()
    pool_t = pool_t.numpy()
  variables = inception.convert_torch_state_dict(net.state_dict())
  pool, logits = jax.jit(inception.FIDInceptionV3().apply)(variables, images)
  # two frameworks, other convolution algorithms: the same sums reordered,
  # the widest 3 x 3 x 768 terms, through ~50 layers
  rel = numerics.reordered_sum(3 * 3 * 768, amplification=3)
  for ours, theirs in ((pool, pool_t), (logits, logits_t)):
    numerics.assert_trees_close(np.asarray(ours), theirs, rel)


def test_command_line_converts_a_torch_file(tmp_path, random_inception_variables):
  torch = pytest.importorskip(
      'torch', reason='the converter needs the optional torch: pip install '
      '".[convert]"')
  variables = random_inception_variables(seed=5)
  source = tmp_path / inception.WEIGHTS_FILE
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v))
              for k, v in to_torch_names(variables).items()}, source)
  out = tmp_path / 'converted.npz'
  inception.main([str(source), '--out', str(out)])
  loaded = inception.load_weights(out)
  for a, b in zip(jax.tree_util.tree_leaves(loaded),
                  jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)
