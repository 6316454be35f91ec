"""The paper's figures, from any run's workdir (its config.json says how to rebuild the models).

    python experiments/figures.py curves  runs/cifar10_wgangp runs/cifar10_ssim [--out F.png]
    python experiments/figures.py mscn    runs/cifar10_niqe [--num 256]
    python experiments/figures.py weights runs/cifar10_wgangp runs/cifar10_niqe
    python experiments/figures.py grids   runs/cifar10_wgangp runs/cifar10_ssim [--num 64]

curves:  critic loss and Wasserstein estimate against iterations, one line
         per run (Figs. 6-7 of the paper: WGAN-GP against QAGAN).
mscn:    histograms of the MSCN coefficients of the critic's input-gradient
         maps at real and at generated images, beside those of the real
         images themselves (supplementary Fig. 4).
weights: histograms of the critic's weights, one per run, and the variance
         of each layer's kernel (Fig. 5).
grids:   sample grids of the EMA generators side by side, same latents.

Each writes a PNG (default: <first workdir>/figures/<name>.png) and prints
its path. Checkpoints are read with the config the run was trained with.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from qagan_jax import compilation  # pylint: disable=wrong-import-position
from qagan_jax import input_pipeline  # pylint: disable=wrong-import-position
from qagan_jax import losses  # pylint: disable=wrong-import-position
from qagan_jax import modes  # pylint: disable=wrong-import-position
from qagan_jax import quality  # pylint: disable=wrong-import-position
from qagan_jax import reporting  # pylint: disable=wrong-import-position
from qagan_jax import sampling  # pylint: disable=wrong-import-position
from qagan_jax import workdirs  # pylint: disable=wrong-import-position


def run_config(workdir) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json)."""
  config = workdirs.saved_config(workdir)
  if config is None:
    sys.exit(f'{workdir} has no {workdirs.CONFIG_FILE}: not a qagan_jax run.')
  return config


def run_label(workdir) -> str:
  config = run_config(workdir)
  return {'wgangp': 'WGAN-GP', 'ssim': 'QAGAN-SSIM',
          'niqe': 'QAGAN-NIQE'}[config.loss.method] + f' ({pathlib.Path(workdir).name})'


def _save(fig, path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  print(path)
  return path


def curves(run_dirs, out) -> pathlib.Path:
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for workdir in run_dirs:
    records = reporting.read_metrics(workdir)
    for ax, key in zip(axes, ('critic_loss', 'wasserstein')):
      points = [(r['step'], r[key]) for r in records if key in r]
      if points:
        ax.plot(*zip(*points), label=run_label(workdir))
  for ax, title in zip(axes, ('critic loss', 'Wasserstein estimate '
                              'E[D(x)] - E[D(G(z))]')):
    ax.set_title(title)
    ax.set_xlabel('generator iteration')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return _save(fig, out)


def critic_gradient_maps(setup, state, images):
  """Normalised grayscale critic input-gradient maps, as the NIQE penalty sees them."""
  critic = lambda x: setup.critic.apply({'params': state.critic_params}, x)
  grads = jax.grad(lambda x: critic(x).sum())(jnp.asarray(images))
  return losses.gradient_maps(grads, setup.loss.niqe_map_scale)


def mscn_histograms(workdir, out, num: int = 256) -> pathlib.Path:
  config = run_config(workdir)
  setup, state, step = modes.restore_state(config, workdir)
  real = input_pipeline.split_images(config.data, 'train', num)
  sampler = sampling.Sampler(setup, config.run.standing_stats_samples)
  fake = sampling.generate(sampler, state, num, seed=7)
  maps = compilation.jit(lambda x: critic_gradient_maps(setup, state, x))
  coefficient = jax.jit(lambda m: quality.mscn(m).coefficients)
  sets = {
      'gradient maps at real images': coefficient(maps(real)),
      'gradient maps at generated images': coefficient(maps(fake)),
      'real images (grayscale, [0, 255])': coefficient(
          (quality.rgb_to_grayscale(jnp.asarray(real)) + 1) * 127.5),
  }
  fig, ax = plt.subplots(figsize=(6, 4))
  bins = np.linspace(-3, 3, 121)
  for label, values in sets.items():
    ax.hist(np.asarray(values).ravel(), bins=bins, density=True,
            histtype='step', linewidth=1.5, label=label)
  ax.set_title(f'MSCN coefficients, {run_label(workdir)}, step {step}')
  ax.set_xlabel('MSCN coefficient')
  ax.legend(fontsize=8)
  return _save(fig, out)


def critic_kernels(workdir) -> dict[str, np.ndarray]:
  """Every kernel of the critic of a workdir's newest checkpoint, by layer path."""
  config = run_config(workdir)
  _, state, _ = modes.restore_state(config, workdir)
  flat = jax.tree_util.tree_flatten_with_path(
      jax.device_get(state.critic_params))[0]
  kernels = {'/'.join(str(getattr(k, 'key', k)) for k in path[:-1]):
             np.asarray(v) for path, v in flat
             if getattr(path[-1], 'key', None) == 'kernel'}
  # input to output: the first block, down-sampling and plain blocks, dense
  stage = lambda name: (['block', 'down', 'plain', 'output'].index(
      next((s for s in ('block', 'down', 'plain') if name.startswith(s)),
           'output')), name)
  return dict(sorted(kernels.items(), key=lambda item: stage(item[0])))


def weights(run_dirs, out) -> pathlib.Path:
  fig, (hist_ax, var_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
  for workdir in run_dirs:
    kernels = critic_kernels(workdir)
    values = np.concatenate([k.ravel() for k in kernels.values()])
    limit = np.percentile(np.abs(values), 99.5)
    hist_ax.hist(values, bins=np.linspace(-limit, limit, 101), density=True,
                 histtype='step', label=run_label(workdir))
    var_ax.plot([np.var(k) for k in kernels.values()], marker='o',
                label=run_label(workdir))
    names = list(kernels)
  hist_ax.set_title('critic weights')
  hist_ax.set_yscale('log')
  hist_ax.legend(fontsize=8)
  var_ax.set_title('variance of each critic layer\'s kernel')
  var_ax.set_xticks(range(len(names)))
  var_ax.set_xticklabels(names, rotation=60, ha='right', fontsize=7)
  var_ax.set_yscale('log')
  var_ax.legend(fontsize=8)
  return _save(fig, out)


def grids(run_dirs, out, num: int = 64) -> pathlib.Path:
  fig, axes = plt.subplots(1, len(run_dirs), figsize=(4 * len(run_dirs), 4.3),
                           squeeze=False)
  for ax, workdir in zip(axes[0], run_dirs):
    config = run_config(workdir)
    setup, state, step = modes.restore_state(config, workdir)
    sampler = sampling.Sampler(setup, config.run.standing_stats_samples)
    images = sampling.generate(sampler, state, num, seed=0)
    ax.imshow(reporting.image_grid(images))
    ax.set_title(f'{run_label(workdir)}, step {step}', fontsize=9)
    ax.axis('off')
  return _save(fig, out)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('figure', choices=('curves', 'mscn', 'weights', 'grids'))
  parser.add_argument('workdirs', nargs='+', type=pathlib.Path)
  parser.add_argument('--out', type=pathlib.Path, default=None,
                      help='PNG to write (default: <first workdir>/figures/'
                      '<figure>.png)')
  parser.add_argument('--num', type=int, default=None,
                      help='images per set (mscn: 256, grids: 64)')
  args = parser.parse_args(argv)
  for workdir in args.workdirs:
    run_config(workdir)             # each must be a run
  out = args.out or args.workdirs[0] / 'figures' / f'{args.figure}.png'
  if args.figure == 'curves':
    curves(args.workdirs, out)
  elif args.figure == 'mscn':
    if len(args.workdirs) != 1:
      parser.error('mscn takes one workdir')
    mscn_histograms(args.workdirs[0], out, args.num or 256)
  elif args.figure == 'weights':
    weights(args.workdirs, out)
  else:
    grids(args.workdirs, out, args.num or 64)


if __name__ == '__main__':
  main()
