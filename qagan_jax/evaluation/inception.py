"""The FID Inception network in Flax: pool features (2048) and logits (1008) in one pass.

This is the Inception-v3 of TensorFlow's 2015-12-05 graph, the network that
FID and the Inception Score are defined with, as pytorch-fid ports it
(`pytorch_fid.inception.fid_inception_v3`): torchvision's Inception3 with
1008 classes and the FID-specific blocks, whose average pools ignore the
zero padding (TensorFlow's behaviour) and whose last block max-pools. Module
names follow torchvision's, so that `convert_torch_state_dict` maps the
published weights one to one.

Its weights cannot be downloaded by this package. Convert the published
PyTorch file once (torch is needed for that step only):

    pip install ".[convert]"      # in the repository's folder: torch
    python -m qagan_jax.evaluation.inception pt_inception-2015-12-05-6726825d.pth

(torch beside a CUDA build of jax can clash over CUDA's libraries: convert
in an environment of its own, with the CPU builds, then point
eval.inception_weights or $QAGAN_INCEPTION_WEIGHTS at the file.)

which writes `default_weights_path()` (or --out), read by `load_weights`.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from qagan_jax import errors

WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
               'fid_weights/pt_inception-2015-12-05-6726825d.pth')
WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
INPUT_SIZE = 299
NUM_CLASSES = 1008
FEATURES = 2048


class InceptionWeightsMissing(errors.DataError, FileNotFoundError):
  """The converted Inception weights are not where they were looked for."""


class InvalidInceptionWeights(errors.DataError, ValueError):
  """A weights file that cannot be read, or holds other weights."""


def default_weights_path() -> pathlib.Path:
  """$QAGAN_INCEPTION_WEIGHTS, else ~/.cache/qagan_jax/fid_inception.npz."""
  return pathlib.Path(os.path.expanduser(os.environ.get(
      'QAGAN_INCEPTION_WEIGHTS', '~/.cache/qagan_jax/fid_inception.npz')))


def missing_weights_message(path) -> str:
  return (
      f'The FID Inception weights are not at {path}. FID, KID and the '
      'Inception Score need the Inception-v3 of TensorFlow\'s 2015-12-05 '
      f'graph, published for PyTorch by pytorch-fid as {WEIGHTS_FILE}:\n'
      f'  {WEIGHTS_URL}\n'
      'Download it, then convert it once (this needs torch, for this step '
      'only):\n'
      f'  {errors.install_command("convert")} && python -m '
      f'qagan_jax.evaluation.inception {WEIGHTS_FILE} --out {path}\n'
      'or set eval.inception_weights (or $QAGAN_INCEPTION_WEIGHTS) to a '
      'converted file, or leave fid, kid and is out of eval.metrics.')


class BasicConv(nn.Module):
  """Conv (no bias) + BatchNorm (eps 1e-3, inference statistics) + ReLU."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, self.kernel, strides=self.strides,
                padding=[(p, p) for p in self.padding], use_bias=False,
                name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_same(x):
  # TensorFlow's average pool: the zero padding is not counted.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool(x, stride, pad=0):
  return nn.max_pool(x, (3, 3), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, (1, 1), name='branch1x1')(x)
    b5 = BasicConv(48, (1, 1), name='branch5x5_1')(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = BasicConv(self.pool_features, (1, 1),
                   name='branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), strides=2, name='branch3x3')(x)
    bd = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = BasicConv(96, (3, 3), strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = BasicConv(192, (1, 1), name='branch1x1')(x)
    b7 = BasicConv(c, (1, 1), name='branch7x7_1')(x)
    b7 = BasicConv(c, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv(c, (1, 1), name='branch7x7dbl_1')(x)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv(c, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv(192, (1, 1), name='branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, (1, 1), name='branch3x3_1')(x)
    b3 = BasicConv(320, (3, 3), strides=2, name='branch3x3_2')(b3)
    b7 = BasicConv(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """The last two blocks; the FID graph's second one max-pools its pool branch."""
  max_pool_branch: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, (1, 1), name='branch1x1')(x)
    b3 = BasicConv(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], -1)
    bd = BasicConv(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([
        BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
        BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], -1)
    pooled = (_max_pool(x, 1, 1) if self.max_pool_branch
              else _avg_pool_same(x))
    bp = BasicConv(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """`images [B, H, W, 3]` in [0, 1] -> (pool features `[B, 2048]`, logits `[B, 1008]`).

  As pytorch-fid: a bilinear resize to 299x299 (half-pixel centres, no
  antialiasing, as torch's `F.interpolate(..., align_corners=False)`), then
  2x - 1. `resize=False` feeds the images as they are (at least 75x75).
  """
  resize: bool = True

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32)
    if self.resize and x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
      b, h, w, c = x.shape
      size = jnp.array([INPUT_SIZE / h, INPUT_SIZE / w])
      x = jax.image.scale_and_translate(
          x, (b, INPUT_SIZE, INPUT_SIZE, c), (1, 2), size, jnp.zeros(2),
          method='linear', antialias=False)
    x = 2.0 * x - 1.0
    x = BasicConv(32, (3, 3), strides=2, name='Conv2d_1a_3x3')(x)
    x = BasicConv(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool(x, 2)
    x = BasicConv(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = BasicConv(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool(x, 2)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(name='Mixed_7b')(x)
    x = InceptionE(max_pool_branch=True, name='Mixed_7c')(x)
    pool = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(NUM_CLASSES, name='fc')(pool)
    return pool, logits


# --- weights ----------------------------------------------------------------------------


def convert_torch_state_dict(state_dict) -> dict[str, Any]:
  """Flax variables `{'params', 'batch_stats'}` from pytorch-fid's state dict.

  `state_dict` maps torchvision names (`Mixed_5b.branch1x1.conv.weight`, ...)
  to arrays (torch tensors or numpy); conv kernels go from OIHW to HWIO and
  the dense kernel is transposed.
  """
  flat = {}
  for name, value in state_dict.items():
    value = np.asarray(value.detach().cpu().numpy() if hasattr(value, 'detach')
                       else value, np.float32)
    *path, leaf = name.split('.')
    if leaf == 'num_batches_tracked':
      continue
    if path == ['fc']:
      flat[('params', 'fc', {'weight': 'kernel', 'bias': 'bias'}[leaf])] = (
          value.T if leaf == 'weight' else value)
    elif path[-1] == 'conv' and leaf == 'weight':
      flat[('params', *path, 'kernel')] = value.transpose(2, 3, 1, 0)
    elif path[-1] == 'bn':
      collection, key = {'weight': ('params', 'scale'),
                         'bias': ('params', 'bias'),
                         'running_mean': ('batch_stats', 'mean'),
                         'running_var': ('batch_stats', 'var')}[leaf]
      flat[(collection, *path, key)] = value
    else:
      raise InvalidInceptionWeights(
          f'unexpected entry {name!r} in the state dict: not '
          "pytorch-fid's FID Inception")
  variables = traverse_util.unflatten_dict(flat)
  _check_structure(variables)
  return variables


@functools.cache
def _abstract_variables():
  """Shapes of every variable, without running an init (which compiles ~30 s);
  traced once a process (~2 s)."""
  return jax.eval_shape(lambda: FIDInceptionV3(resize=False).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3))))


def random_variables(seed: int = 0) -> dict[str, Any]:
  """Random weights of the right shapes: for architecture tests and timing
  only (the computation costs the same), never for metrics.

  He-normal kernels, BatchNorm scales and variances in [0.5, 1.5), small
  biases and means, so that activations stay in range through the network.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in traverse_util.flatten_dict(
      dict(_abstract_variables())).items():
    if path[-1] == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
    elif path[-1] in ('var', 'scale'):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:   # biases and means
      value = 0.1 * rng.standard_normal(leaf.shape)
    flat[path] = value.astype(np.float32)
  return traverse_util.unflatten_dict(flat)


def _check_structure(variables) -> None:
  want = {k: v.shape for k, v in traverse_util.flatten_dict(
      dict(_abstract_variables()), sep='/').items()}
  have = {k: np.shape(v) for k, v in traverse_util.flatten_dict(
      dict(variables), sep='/').items()}
  if want != have:
    missing = sorted(set(want) - set(have))[:3]
    extra = sorted(set(have) - set(want))[:3]
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])[:3]
    raise InvalidInceptionWeights(
        'these are not the FID Inception weights: missing '
        f'{missing}, unexpected {extra}, wrong shapes {wrong}')


def save_weights(variables, path) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  flat = traverse_util.flatten_dict(dict(variables), sep='/')
  tmp = path.with_name(path.name + '.tmp.npz')
  np.savez(tmp, **{k: np.asarray(v) for k, v in flat.items()})
  os.replace(tmp, path)


def load_weights(path=None) -> dict[str, Any]:
  """The converted weights at `path` (default: `default_weights_path()`)."""
  path = pathlib.Path(os.path.expanduser(str(path))) if path else (
      default_weights_path())
  if not path.is_file():
    raise InceptionWeightsMissing(missing_weights_message(path))
  try:
    with np.load(path) as stored:
      variables = traverse_util.unflatten_dict(
          {k: stored[k] for k in stored.files}, sep='/')
  except Exception as error:  # zipfile and numpy raise several types
    raise InvalidInceptionWeights(
        f'{path} is not a readable weights file ({error}); convert the '
        'weights again.') from error
  _check_structure(variables)
  return variables


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m qagan_jax.evaluation.inception',
      description='Converts pytorch-fid\'s FID Inception weights '
      f'({WEIGHTS_FILE}, from {WEIGHTS_URL}) for qagan_jax.')
  parser.add_argument('torch_file', help=f'the downloaded {WEIGHTS_FILE}')
  parser.add_argument('--out', default=str(default_weights_path()),
                      help='where to write the converted weights '
                      '(default: %(default)s)')
  args = parser.parse_args(argv)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    sys.exit('Converting needs torch (this step only): '
             f'{errors.install_command("convert")}')
  state_dict = torch.load(args.torch_file, map_location='cpu',
                          weights_only=True)
  save_weights(convert_torch_state_dict(state_dict), args.out)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
