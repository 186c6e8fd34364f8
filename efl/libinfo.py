"""Versions: `efl_version()` and `tf_version()`."""

EFL_VERSION = '0.1.0'


def efl_version():
  return EFL_VERSION


def tf_version():
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top

  return tf.__version__
