"""The ResNet generator and critic of WGAN-GP / QAGAN, one family for all resolutions.

Architecture as in the QAGAN supplementary material (Tables 1-2), which
follows the ResNet of Gulrajani et al. (2017):

  generator: dense(latent -> base x base x width), up-ResBlocks with
    BatchNorm (BN, ReLU, upsample, conv3x3, BN, ReLU, conv3x3; shortcut:
    upsample, conv1x1), then BN, ReLU, conv3x3 to 3 channels, tanh;
  critic: an optimised first down-ResBlock (conv3x3, ReLU, conv3x3, pool;
    shortcut: pool, conv1x1), down-ResBlocks (ReLU, conv3x3, ReLU, conv3x3,
    pool; shortcut conv1x1, pool) and plain pre-activation ResBlocks
    (identity shortcut), no normalisation, then ReLU, global mean pool and
    dense -> 1.

Upsampling is nearest-neighbour before the conv; downsampling is 2x2 mean
pooling after it. Initialisers: He-uniform for 3x3 convs, Glorot-uniform for
1x1 shortcuts, the output conv and the dense layers, zero biases. At 32x32
and width 128 the generator has 1,204,483 and the critic 1,053,825
parameters, as the released code.

Images are NHWC in [-1, 1]. `dtype` is the compute dtype (float32 default;
bfloat16 on accelerators); parameters are float32 and both networks return
float32 (float64 when computing in float64).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

he_uniform = nn.initializers.he_uniform()
glorot_uniform = nn.initializers.glorot_uniform()


@dataclasses.dataclass(frozen=True)
class Architecture:
  """Block counts of one resolution.

  Attributes:
    base: side of the generator's first feature map (resolution / 2**up).
    up_blocks: generator up-ResBlocks.
    critic_down_blocks: critic blocks that halve the resolution, the
      optimised first block included.
    critic_plain_blocks: critic blocks at the final resolution.
  """
  base: int
  up_blocks: int
  critic_down_blocks: int
  critic_plain_blocks: int


# 32: CIFAR-10 (Table 1). 48: STL-10 as in the supplementary Table 2 (critic
# maps 24, 12, 6, 6; the released script instead used 2 down + 2 plain
# blocks, maps 24, 12, 12, 12: set critic_down_blocks=2,
# critic_plain_blocks=2). 64: CelebA, one more up- and down-block than 32.
# 96: STL-10 native, one more than 48. 128: one more than 64.
ARCHITECTURES = {
    32: Architecture(base=4, up_blocks=3, critic_down_blocks=2,
                     critic_plain_blocks=2),
    48: Architecture(base=6, up_blocks=3, critic_down_blocks=3,
                     critic_plain_blocks=1),
    64: Architecture(base=4, up_blocks=4, critic_down_blocks=3,
                     critic_plain_blocks=2),
    96: Architecture(base=6, up_blocks=4, critic_down_blocks=4,
                     critic_plain_blocks=1),
    128: Architecture(base=4, up_blocks=5, critic_down_blocks=4,
                      critic_plain_blocks=2),
}


def architecture(resolution: int, **overrides) -> Architecture:
  """The block counts for `resolution`, with optional field overrides."""
  if resolution not in ARCHITECTURES:
    raise ValueError(f'no architecture for resolution {resolution}; '
                     f'choose one of {sorted(ARCHITECTURES)}.')
  arch = dataclasses.replace(ARCHITECTURES[resolution], **{
      k: v for k, v in overrides.items() if v is not None})
  if arch.base * 2**arch.up_blocks != resolution:
    raise ValueError(f'base {arch.base} with {arch.up_blocks} up-blocks does '
                     f'not make {resolution}x{resolution} images.')
  if not 1 <= arch.critic_down_blocks or resolution % 2**arch.critic_down_blocks:
    raise ValueError(f'{arch.critic_down_blocks} critic down-blocks do not fit '
                     f'{resolution}x{resolution} images.')
  return arch


def _output_dtype(dtype):
  """float32 outputs for float32 and lower-precision compute (float64 stays)."""
  return jnp.promote_types(dtype, jnp.float32)


def upsample(x):
  """Nearest-neighbour 2x upsampling of NHWC maps."""
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
  return x.reshape(n, 2 * h, 2 * w, c)


def mean_pool(x):
  """2x2 mean pooling of NHWC maps."""
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _conv(features: int, size: int, kernel_init, dtype, name: str) -> nn.Conv:
  return nn.Conv(features, (size, size), padding='SAME',
                 kernel_init=kernel_init, dtype=dtype, name=name)


def _batch_norm(train: bool, axis_name: str | None, momentum: float, dtype,
                name: str):
  return nn.BatchNorm(use_running_average=not train,
                      axis_name=axis_name if train else None,
                      momentum=momentum, dtype=dtype, name=name)


class UpBlock(nn.Module):
  """Generator ResBlock that doubles the resolution."""
  features: int
  axis_name: str | None = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name: _batch_norm(train, self.axis_name, self.bn_momentum,
                                    self.dtype, name)
    shortcut = _conv(self.features, 1, glorot_uniform, self.dtype,
                     'shortcut')(upsample(x))
    h = nn.relu(norm('norm1')(x))
    h = _conv(self.features, 3, he_uniform, self.dtype, 'conv1')(
        upsample(h))
    h = nn.relu(norm('norm2')(h))
    h = _conv(self.features, 3, he_uniform, self.dtype, 'conv2')(h)
    return shortcut + h


class Generator(nn.Module):
  """Maps latents `[B, latent_dim]` to images `[B, R, R, 3]` in [-1, 1].

  BatchNorm statistics live in the 'batch_stats' collection; with
  `train=True` they are batch statistics, averaged over the mapped axis
  `axis_name` when one is given (data-parallel training inside shard_map),
  and the running averages move by `1 - bn_momentum` towards them; with
  `train=False` the stored running averages are used.
  """
  resolution: int = 32
  width: int = 128
  arch: Architecture | None = None
  channels: int = 3
  axis_name: str | None = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = True):
    arch = self.arch or architecture(self.resolution)
    x = nn.Dense(arch.base * arch.base * self.width,
                 kernel_init=glorot_uniform, dtype=self.dtype, name='input')(z)
    x = x.reshape(z.shape[0], arch.base, arch.base, self.width)
    for i in range(arch.up_blocks):
      x = UpBlock(self.width, self.axis_name, self.bn_momentum, self.dtype,
                  name=f'up{i + 1}')(x, train)
    x = _batch_norm(train, self.axis_name, self.bn_momentum, self.dtype,
                    'output_norm')(x)
    x = _conv(self.channels, 3, glorot_uniform, self.dtype, 'output')(
        nn.relu(x))
    return jnp.tanh(x).astype(_output_dtype(self.dtype))


class OptimizedBlock(nn.Module):
  """The critic's first block: conv, ReLU, conv, pool; shortcut pool, conv1x1."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    shortcut = _conv(self.features, 1, glorot_uniform, self.dtype,
                     'shortcut')(mean_pool(x))
    h = _conv(self.features, 3, he_uniform, self.dtype, 'conv1')(x)
    h = _conv(self.features, 3, he_uniform, self.dtype, 'conv2')(
        nn.relu(h))
    return shortcut + mean_pool(h)


class CriticBlock(nn.Module):
  """Pre-activation critic ResBlock, halving the resolution if `down`."""
  features: int
  down: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.down:
      shortcut = mean_pool(_conv(self.features, 1, glorot_uniform, self.dtype,
                                 'shortcut')(x))
    else:
      shortcut = x
    h = _conv(x.shape[-1], 3, he_uniform, self.dtype, 'conv1')(nn.relu(x))
    h = _conv(self.features, 3, he_uniform, self.dtype, 'conv2')(
        nn.relu(h))
    return shortcut + (mean_pool(h) if self.down else h)


class Critic(nn.Module):
  """Maps images `[B, R, R, 3]` to scores `[B]` (float32); no normalisation,
  so each score depends on its own image only."""
  resolution: int = 32
  width: int = 128
  arch: Architecture | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    arch = self.arch or architecture(self.resolution)
    x = x.astype(self.dtype)
    x = OptimizedBlock(self.width, self.dtype, name='block1')(x)
    for i in range(arch.critic_down_blocks - 1):
      x = CriticBlock(self.width, True, self.dtype, name=f'down{i + 2}')(x)
    for i in range(arch.critic_plain_blocks):
      x = CriticBlock(self.width, False, self.dtype, name=f'plain{i + 1}')(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    x = nn.Dense(1, kernel_init=glorot_uniform, dtype=self.dtype,
                 name='output')(x)
    return x[:, 0].astype(_output_dtype(self.dtype))


def count_params(params) -> int:
  """Number of scalars in a parameter pytree."""
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
