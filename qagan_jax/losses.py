"""Critic and generator losses and the QAGAN penalties, as pure functions.

A critic is given as `critic_fn(params, images) -> scores`, images
`[B, H, W, 3]` in [-1, 1] and scores `[B]` float32; the critic has no
normalisation, so each score depends on its own image only. Randomness comes
as one PRNG key per sample, `keys: [B]`, so that a batch gives the same result
however it is split across devices.

The critic loss (the paper's; docs/method.md) is

  L_D = adversarial + gp_weight * E[(|grad D(x_hat)| - 1)^2]
        + quality_weight * R + drift_weight * E[D(x)^2]

with R = 0 (WGAN-GP), the SSIM Lipschitz penalty (QAGAN-SSIM) or the NIQE
distance of the critic's gradient maps to a pristine model (QAGAN-NIQE).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from qagan_jax import quality

CriticFn = Callable[[Any, jax.Array], jax.Array]
METHODS = ('wgangp', 'ssim', 'niqe')
ADVERSARIAL = ('wasserstein', 'hinge')


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Static settings of the critic loss (hashable, so usable under jit).

  Attributes:
    method: 'wgangp', 'ssim' (QAGAN-SSIM) or 'niqe' (QAGAN-NIQE).
    adversarial: 'wasserstein' (WGAN) or 'hinge'.
    gp_weight: lambda_1 of the gradient penalty (1.0 in the QAGAN code).
    quality_weight: lambda_2 of the SSIM or NIQE penalty (0.1).
    drift_weight: weight of E[D(x)^2] (1e-5).
    ssim_window, ssim_sigma, ssim_padding: d_Q's Gaussian window and
      borders (8, 1.5 and 'same' in the QAGAN code), on grayscale images with
      data range 2.
    ssim_min_distance: floor on d_Q in |D(x) - D(G(z))| / d_Q, so that an
      exact copy of a real image (d_Q = 0) gives a finite penalty.
    niqe_patch_size: patch side for NIQE features of gradient maps (the
      image side: one patch per map, as the QAGAN code's 32x32 patches).
    niqe_map_scale: standard deviation each gradient map is scaled to.
  """
  method: str = 'wgangp'
  adversarial: str = 'wasserstein'
  gp_weight: float = 1.0
  quality_weight: float = 0.1
  drift_weight: float = 1e-5
  ssim_window: int = 8
  ssim_sigma: float = 1.5
  ssim_padding: str = 'same'
  ssim_min_distance: float = 1e-3
  niqe_patch_size: int = 32
  niqe_map_scale: float = 64.0

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f'loss method must be one of {METHODS}, got '
                       f'{self.method!r}.')
    if self.adversarial not in ADVERSARIAL:
      raise ValueError(f'adversarial loss must be one of {ADVERSARIAL}, got '
                       f'{self.adversarial!r}.')
    for name in ('gp_weight', 'quality_weight', 'drift_weight'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}.')


# --- adversarial terms ------------------------------------------------------------


def wasserstein_critic_loss(real_scores, fake_scores):
  """E[D(G(z))] - E[D(x)]: minus the critic's Wasserstein estimate."""
  return jnp.mean(fake_scores) - jnp.mean(real_scores)


def hinge_critic_loss(real_scores, fake_scores):
  """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
  return (jnp.mean(jax.nn.relu(1 - real_scores))
          + jnp.mean(jax.nn.relu(1 + fake_scores)))


def generator_loss(fake_scores):
  """-E[D(G(z))], for both the Wasserstein and the hinge critic."""
  return -jnp.mean(fake_scores)


def drift_penalty(real_scores):
  """E[D(x)^2], which keeps the critic's scores from drifting."""
  return jnp.mean(real_scores**2)


# --- the gradient penalty ---------------------------------------------------------


def interpolates(real, fake, keys):
  """x_hat = eps x + (1 - eps) G(z), eps ~ U(0, 1) per sample from `keys`."""
  eps = jax.vmap(lambda k: jax.random.uniform(k, (), real.dtype))(keys)
  eps = eps[:, None, None, None]
  return eps * real + (1 - eps) * fake


def input_gradients(critic_fn: CriticFn, params, images):
  """Scores `[B]` and their gradients w.r.t. the images `[B, H, W, C]`."""
  scores, pullback = jax.vjp(lambda x: critic_fn(params, x), images)
  (grads,) = pullback(jnp.ones_like(scores))
  return scores, grads


def _norms(grads):
  """Per-sample L2 norms with a zero (sub)gradient at 0 instead of NaN."""
  squared = jnp.sum(grads.reshape(grads.shape[0], -1)**2, axis=-1)
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1)), 0)


def gradient_penalty(grads):
  """Two-sided penalty E[(|grad|_2 - 1)^2] on per-sample input gradients."""
  return jnp.mean((_norms(grads) - 1)**2)


# --- QAGAN-SSIM ---------------------------------------------------------------------


def ssim_lipschitz_penalty(real, fake, real_scores, fake_scores, *,
                           window_size: int = 8, sigma: float = 1.5,
                           padding: str = 'same', min_distance: float = 1e-3):
  """E_i[(|D(x_i) - D(G(z_i))| / d_Q(x_i, G(z_i)) - 1)^2].

  The critic is asked to be 1-Lipschitz w.r.t. d_Q, pairing each real image
  with the fake of the same batch index. d_Q is computed on grayscale
  (BT.601) images in [-1, 1] (data range 2), as `quality.QAGAN_SSIM` with
  the window given here, and does not depend on the critic.

  Args:
    real, fake: `[B, H, W, 3]` images in [-1, 1].
    real_scores, fake_scores: `[B]` critic scores of those images.
    window_size, sigma, padding: d_Q's window (see `ssim_distance`).
    min_distance: floor on d_Q.
  """
  distance = quality.ssim_distance(
      real, fake, **(quality.QAGAN_SSIM | {
          'window_size': window_size, 'sigma': sigma, 'padding': padding}))
  ratio = jnp.abs(real_scores - fake_scores) / jnp.maximum(distance,
                                                           min_distance)
  return jnp.mean((ratio - 1)**2)


# --- QAGAN-NIQE ---------------------------------------------------------------------


def normalise_maps(maps, scale: float = 64.0):
  """Scales each map `[B, H, W, 1]` to standard deviation `scale`.

  NSS features do not depend on a map's mean, and depend on its scale only
  through the MSCN constant C = 1: fixing the scale to 64, about the standard
  deviation of natural 8-bit photographs, gives C its usual meaning and makes
  the penalty independent of the gradient's norm, which the gradient penalty
  controls. The pristine model is built from maps scaled the same way.
  All-zero maps stay zero.
  """
  variance = jnp.var(maps, axis=(-3, -2, -1), keepdims=True)
  return maps * (scale / jnp.sqrt(variance + 1e-30))


def gradient_maps(grads, scale: float = 64.0):
  """Grayscale (BT.601) critic input gradients `[B, H, W, 3]`, normalised."""
  return normalise_maps(quality.rgb_to_grayscale(grads), scale)


def sobel_maps(images, scale: float = 64.0):
  """Sobel gradient magnitudes of grayscale images, normalised as above.

  The QAGAN authors' released code estimated the NIQE pristine model from
  these (on real training images) rather than from critic gradients.
  """
  gray = quality.rgb_to_grayscale(images)
  padded = jnp.pad(gray, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
  h, w = gray.shape[1], gray.shape[2]
  shifted = lambda di, dj: padded[:, 1 + di:1 + di + h, 1 + dj:1 + dj + w]
  gx = (shifted(-1, 1) + 2 * shifted(0, 1) + shifted(1, 1)
        - shifted(-1, -1) - 2 * shifted(0, -1) - shifted(1, -1))
  gy = (shifted(1, -1) + 2 * shifted(1, 0) + shifted(1, 1)
        - shifted(-1, -1) - 2 * shifted(-1, 0) - shifted(-1, 1))
  squared = gx**2 + gy**2
  positive = squared > 0
  magnitude = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1)), 0)
  return normalise_maps(magnitude, scale)


class MapFeatures(NamedTuple):
  features: jax.Array   # [N, 36], N = B * patches per map
  valid: jax.Array      # [N, 36] bool


def map_features(maps, patch_size: int, axis_name: str | None = None):
  """NIQE features of all patches of normalised maps `[B, H, W, 1]`.

  With `axis_name`, the patches of every device are gathered, so each device
  sees the features of the global batch; differentiating through the gather
  hands each device the gradient of its own maps.
  """
  found = quality.niqe_features(maps, patch_size)
  features = found.features.reshape(-1, found.features.shape[-1])
  valid = found.valid.reshape(features.shape)
  if axis_name is not None:
    features = jax.lax.all_gather(features, axis_name, tiled=True)
    valid = jax.lax.all_gather(valid, axis_name, tiled=True)
  return MapFeatures(features, valid)


def niqe_penalty(features: MapFeatures, pristine_mean, pristine_cov):
  """NIQE distance between the MVG of the features and the pristine model."""
  mean, cov = quality.mvg_fit(features.features, features.valid)
  return quality.mvg_distance(pristine_mean, pristine_cov, mean, cov)


# --- the critic loss ------------------------------------------------------------------


class Pristine(NamedTuple):
  """The NIQE pristine model the penalty compares against."""
  mean: jax.Array    # [36]
  cov: jax.Array     # [36, 36]


def critic_loss(critic_fn: CriticFn, params, real, fake, keys,
                config: LossConfig, pristine: Pristine | None = None,
                axis_name: str | None = None):
  """The critic's loss and its terms.

  Args:
    critic_fn: `critic_fn(params, images) -> scores`.
    params: critic parameters (differentiated).
    real, fake: `[B, H, W, 3]` batches in [-1, 1] (fake without gradient).
    keys: `[B]` PRNG keys, one per sample (interpolation weights).
    config: the loss settings.
    pristine: the NIQE pristine model (method 'niqe' only).
    axis_name: mapped axis over which the NIQE features are pooled.

  Returns:
    (loss, metrics) with scalar metrics.
  """
  # one call on both batches: fewer, larger kernels; the critic has no
  # batch-dependent layer, so each score is the one its image gets alone
  both = jnp.result_type(real.dtype, fake.dtype)
  scores = critic_fn(params, jnp.concatenate([real.astype(both),
                                              fake.astype(both)]))
  real_scores, fake_scores = scores[:real.shape[0]], scores[real.shape[0]:]
  if config.adversarial == 'wasserstein':
    adversarial = wasserstein_critic_loss(real_scores, fake_scores)
  else:
    adversarial = hinge_critic_loss(real_scores, fake_scores)
  _, grads = input_gradients(critic_fn, params,
                             interpolates(real, fake, keys))
  grads = grads.astype(jnp.float32)
  penalty = gradient_penalty(grads)
  drift = drift_penalty(real_scores)
  norms = _norms(grads)
  metrics = {
      'wasserstein': jnp.mean(real_scores) - jnp.mean(fake_scores),
      'adversarial_loss': adversarial,
      'gradient_penalty': penalty,
      'drift': drift,
      'input_grad_norm_mean': jnp.mean(norms),
      'input_grad_norm_max': jnp.max(norms),
  }
  loss = adversarial + config.gp_weight * penalty + config.drift_weight * drift
  if config.method == 'ssim':
    quality_penalty = ssim_lipschitz_penalty(
        real, fake, real_scores, fake_scores, window_size=config.ssim_window,
        sigma=config.ssim_sigma, padding=config.ssim_padding,
        min_distance=config.ssim_min_distance)
  elif config.method == 'niqe':
    if pristine is None:
      raise ValueError('the NIQE penalty needs a pristine model.')
    found = map_features(gradient_maps(grads, config.niqe_map_scale),
                         config.niqe_patch_size, axis_name)
    quality_penalty = niqe_penalty(found, pristine.mean, pristine.cov)
  if config.method != 'wgangp':
    loss = loss + config.quality_weight * quality_penalty
    metrics['quality_penalty'] = quality_penalty
  metrics['critic_loss'] = loss
  return loss, metrics
