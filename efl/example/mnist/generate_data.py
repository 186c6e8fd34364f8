"""Writes the data of the federated MNIST example: each image split by columns between leader and follower.

The leader gets columns 0..13 of every 28x28 image and the follower columns 14..27, each flattened to 392
float32 values (raw pixel values 0..255, which the example's hyperparameters are tuned for). Both get the
label. Output, in `--output_dir` (default: the directory the script is run from, where the example's readers
look for `./leader_train` ...)::

  leader_train/data_{0..9}.tfrd     follower_train/data_{0..9}.tfrd     60000 images, 6000 per file
  leader_test/data_{0..9}.tfrd      follower_test/data_{0..9}.tfrd      10000 images, 1000 per file

Records: `sample_id` int64 (the row index within the split), `feature` float[392], `label` float[1].
Record i of a leader file and record i of the follower file of the same name are the same image.

MNIST is read from a Keras-layout `mnist.npz` (x_train, y_train, x_test, y_test), looked up in this order:
`--mnist_npz PATH`, the environment variable EFL_MNIST_NPZ, Keras' cache `~/.keras/datasets/mnist.npz`, then
`tf.keras.datasets.mnist.load_data()` (which downloads it). The output appears only once complete: it is
written into a hidden directory and renamed into place.

Usage::

  cd efl/example/mnist && python generate_data.py
  python generate_data.py --mnist_npz /data/mnist.npz --output_dir /tmp/mnist --train_rows 600 --test_rows 100
"""

from __future__ import absolute_import, division, print_function

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow.compat.v1 as tf

from efl.data import record_encoding

HALF_WIDTH = 14
FEATURE_DIM = 28 * HALF_WIDTH
NUM_FILES = 10
SPLITS = ('leader_train', 'follower_train', 'leader_test', 'follower_test')
_KERAS_CACHE = os.path.join('~', '.keras', 'datasets', 'mnist.npz')


class MnistNotFoundError(IOError):
  """No MNIST file could be found or downloaded; the message says how to provide one."""


def _load_npz(path):
  with np.load(path) as data:
    missing = [k for k in ('x_train', 'y_train', 'x_test', 'y_test') if k not in data]
    if missing:
      raise ValueError('%s is not a Keras-layout mnist.npz: it lacks %s.' % (path, ', '.join(missing)))
    splits = {'train': (data['x_train'], data['y_train']), 'test': (data['x_test'], data['y_test'])}
  for name, (x, y) in splits.items():
    if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
      raise ValueError(
        '%s: x_%s must be [N, 28, 28] with y_%s [N]. Found %s and %s.' % (path, name, name, x.shape, y.shape)
      )
  return splits


def load_mnist(mnist_npz=None):
  """Finds and loads MNIST.

  Args:
    mnist_npz: path of a Keras-layout mnist.npz; None looks at EFL_MNIST_NPZ, then Keras' cache, then asks
      `tf.keras.datasets.mnist.load_data()`.

  Returns:
    (splits, source): `splits` maps 'train' and 'test' to (images uint8 [N, 28, 28], labels [N]); `source`
    says where they came from.

  Raises:
    MnistNotFoundError: no source worked (the message lists what was tried and how to pass the file).
    ValueError: the file does not hold MNIST in the Keras layout.
  """
  tried = []
  for origin, path in (
    ('--mnist_npz', mnist_npz),
    ('EFL_MNIST_NPZ', os.environ.get('EFL_MNIST_NPZ')),
    ('Keras cache', os.path.expanduser(_KERAS_CACHE)),
  ):
    if not path:
      continue
    if os.path.isfile(path):
      return _load_npz(path), path
    if origin != 'Keras cache':
      # An explicit path that does not exist is a mistake to report, not to paper over with a download.
      raise MnistNotFoundError('%s points to %s, which does not exist.' % (origin, path))
    tried.append('%s (%s): not found' % (origin, path))
  try:
    (x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()
    return {'train': (x_train, y_train), 'test': (x_test, y_test)}, 'tf.keras.datasets.mnist'
  except Exception as e:  # pylint: disable=broad-except
    tried.append('tf.keras.datasets.mnist.load_data(): %s: %s' % (type(e).__name__, e))
  raise MnistNotFoundError(
    'MNIST not found. Tried: %s. Pass a Keras-layout mnist.npz (x_train, y_train, x_test, y_test) with '
    '--mnist_npz PATH or the environment variable EFL_MNIST_NPZ, or place it at %s.' % ('; '.join(tried), _KERAS_CACHE)
  )


def generate(output_dir, mnist_npz=None, train_rows=None, test_rows=None, num_files=NUM_FILES):
  """Writes the leader and follower halves of MNIST as TFRecords (see the module docstring).

  Args:
    output_dir: where `{leader,follower}_{train,test}/` are written; existing ones are replaced.
    mnist_npz: path of mnist.npz (see `load_mnist`).
    train_rows: write only the first `train_rows` training images (None: all 60000).
    test_rows: write only the first `test_rows` test images (None: all 10000).
    num_files: files per directory (fewer if there are fewer rows than files).

  Returns:
    A dict: `source` and, per split, the number of rows written (`train`, `test`).

  Raises:
    MnistNotFoundError, ValueError: see `load_mnist`; ValueError also for bad row or file counts.
  """
  if num_files <= 0:
    raise ValueError('num_files must be positive. Found %r.' % (num_files,))
  splits, source = load_mnist(mnist_npz)
  wanted = {'train': train_rows, 'test': test_rows}
  for name, rows in wanted.items():
    available = splits[name][0].shape[0]
    if rows is not None and not 0 < rows <= available:
      raise ValueError(
        '%s_rows must be in [1, %d] (the %s split of %s). Found %r.' % (name, available, name, source, rows)
      )
  os.makedirs(output_dir, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(prefix='.mnist_output_', dir=output_dir)
  written = {}
  try:
    for name in ('train', 'test'):
      images, labels = splits[name]
      rows = wanted[name] or images.shape[0]
      images = images[:rows].astype(np.float32)
      labels = labels[:rows].astype(np.float32)
      halves = {
        'leader': images[:, :, :HALF_WIDTH].reshape(rows, FEATURE_DIM),
        'follower': images[:, :, HALF_WIDTH:].reshape(rows, FEATURE_DIM),
      }
      bounds = np.linspace(0, rows, min(num_files, rows) + 1).astype(np.int64)
      for side, features in halves.items():
        directory = os.path.join(tmp_dir, '%s_%s' % (side, name))
        os.makedirs(directory)
        for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
          record_encoding.write_examples(
            os.path.join(directory, 'data_%d.tfrd' % j),
            [
              record_encoding.int64_field(b'sample_id', np.arange(a, b)),
              record_encoding.float_field(b'feature', features[a:b]),
              record_encoding.float_field(b'label', labels[a:b]),
            ],
          )
      written[name] = rows
    # Remove every old directory before moving the new ones in, so that an interrupted run leaves missing
    # directories (a loud failure), never a mix of two generations.
    for name in SPLITS:
      old = os.path.join(output_dir, name)
      if os.path.isdir(old):
        shutil.rmtree(old)
    for name in SPLITS:
      os.rename(os.path.join(tmp_dir, name), os.path.join(output_dir, name))
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  written['source'] = source
  return written


def main(argv=None):
  parser = argparse.ArgumentParser(description='Split MNIST by columns into leader and follower TFRecords.')
  parser.add_argument(
    '--mnist_npz',
    default=None,
    help='Keras-layout mnist.npz (default: $EFL_MNIST_NPZ, then ~/.keras/datasets/mnist.npz, '
    'then tf.keras.datasets.mnist.load_data())',
  )
  parser.add_argument(
    '--output_dir',
    default='.',
    help='where {leader,follower}_{train,test}/ are written (default: the current directory)',
  )
  parser.add_argument('--train_rows', type=int, default=None, help='write only the first N training images')
  parser.add_argument('--test_rows', type=int, default=None, help='write only the first N test images')
  parser.add_argument('--num_files', type=int, default=NUM_FILES, help='files per directory')
  args = parser.parse_args(argv)
  start = time.time()
  try:
    written = generate(args.output_dir, args.mnist_npz, args.train_rows, args.test_rows, args.num_files)
  except (IOError, ValueError) as e:
    sys.stderr.write('error: %s\n' % e)
    return 2
  print(
    'wrote %d train and %d test images from %s to %s (%.1f s)'
    % (written['train'], written['test'], written['source'], os.path.abspath(args.output_dir), time.time() - start)
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
