"""Downloads a tfds dataset and prepares it for training, once.

    pip install ".[prepare]"                  # TensorFlow, needed to build only
    python -m qagan_jax.prepare_data cifar10 --data_dir ~/tensorflow_datasets

Writes the array_record files that `tfds.data_source` reads, so that
training itself needs neither TensorFlow nor a network. Datasets: cifar10,
stl10, celeb_a. CelebA's files come from Google Drive, which often refuses
automated downloads; if so, download them by hand into DIR/downloads/manual
(see the tfds celeb_a page) and run the command again with --manual_dir.
"""

from __future__ import annotations

import argparse
import os
import sys

from qagan_jax import errors

PREPARABLE = ('cifar10', 'stl10', 'celeb_a')


def prepare(name: str, data_dir: str, manual_dir: str | None = None) -> str:
  """Builds `name` into `data_dir` in array_record format; returns its path."""
  if name not in PREPARABLE:
    raise ValueError(f'dataset must be one of {PREPARABLE}, got {name!r}.')
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as error:
    raise SystemExit(
        'Building a tfds dataset needs TensorFlow (training does not): '
        f'{errors.install_command("prepare")}') from error
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=config,
                               file_format='array_record')
  return builder.data_dir


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('dataset', choices=PREPARABLE)
  parser.add_argument('--data_dir', default='~/tensorflow_datasets')
  parser.add_argument('--manual_dir', default=None,
                      help='folder with files downloaded by hand (CelebA)')
  args = parser.parse_args(argv)
  path = prepare(args.dataset, args.data_dir, args.manual_dir)
  print(f'{args.dataset} is ready in {path}; train with '
        f'--config.data.data_dir={os.path.expanduser(args.data_dir)}')


if __name__ == '__main__':
  sys.exit(main())
