"""Lets `tf.keras.datasets.mnist.load_data()` read a local mnist.npz.

Keras downloads MNIST on first use, which fails offline. `use_local_mnist()`
makes `tf.keras.datasets.mnist.load_data()` read the Keras-layout mnist.npz
named by the environment variable EFL_MNIST_NPZ instead (the file is read as
is; Keras' download checksum is not applied to it). Without the variable,
Keras behaves as usual.
"""

import os

import numpy as np
import tensorflow.compat.v1 as tf

ENV_VAR = 'EFL_MNIST_NPZ'
_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')


def load_npz(path):
  """Returns `((x_train, y_train), (x_test, y_test))` from a Keras-layout npz.

  Raises:
    ValueError: if the file lacks one of the four arrays.
  """
  with np.load(path) as f:
    missing = [k for k in _KEYS if k not in f.files]
    if missing:
      raise ValueError('{} is not a Keras-layout mnist.npz: it lacks {}.'.format(path, ', '.join(missing)))
    return (f['x_train'], f['y_train']), (f['x_test'], f['y_test'])


def use_local_mnist(path=None):
  """Routes `tf.keras.datasets.mnist.load_data()` to a local file.

  Args:
    path: the mnist.npz to read; None reads the EFL_MNIST_NPZ variable.

  Returns:
    The path that `load_data()` will read, or None when neither `path` nor
    EFL_MNIST_NPZ is set (Keras then downloads or uses its cache).

  Raises:
    FileNotFoundError: if the named file does not exist.
  """
  path = path or os.environ.get(ENV_VAR)
  if not path:
    return None
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise FileNotFoundError(
      '{} names {}, which is not a file. Point it at a Keras-layout mnist.npz.'.format(ENV_VAR, path)
    )

  def load_data(path_in_cache='mnist.npz'):
    del path_in_cache  # the local file replaces Keras' cache
    return load_npz(path)

  tf.keras.datasets.mnist.load_data = load_data
  # On TF 2, scripts may also use the v2 API's tf.keras, another module tree.
  import tensorflow as tf_root  # pylint: disable=import-outside-toplevel

  tf_root.keras.datasets.mnist.load_data = load_data
  return path
