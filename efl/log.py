"""Logging setup: one format, INFO to stdout, warnings and errors to stderr."""

import logging
import sys
import warnings

import tensorflow.compat.v1 as tf

_FORMAT = '[%(asctime)s][%(levelname)s] %(message)s'
_configured = False


class _MaxLevel(logging.Filter):
  def __init__(self, level):
    super(_MaxLevel, self).__init__()
    self._level = level

  def filter(self, record):
    return record.levelno < self._level


class _StdHandler(logging.StreamHandler):
  """Writes to the current sys.stdout/sys.stderr, so later redirections of them are honoured."""

  def __init__(self, name):
    logging.Handler.__init__(self)
    self._name = name

  @property
  def stream(self):
    return getattr(sys, self._name)

  @stream.setter
  def stream(self, value):
    pass


def redirect_log():
  """Routes TensorFlow's logger (which efl logs through) to stdout/stderr with efl's format. Idempotent."""
  global _configured
  if _configured:
    return
  logger = tf.get_logger()
  for h in list(logger.handlers):
    logger.removeHandler(h)
  fmt = logging.Formatter(_FORMAT)
  out = _StdHandler('stdout')
  out.setFormatter(fmt)
  out.addFilter(_MaxLevel(logging.WARNING))
  err = _StdHandler('stderr')
  err.setFormatter(fmt)
  err.setLevel(logging.WARNING)
  logger.addHandler(out)
  logger.addHandler(err)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  # TF 1.15 prints a deprecation notice for most tf.layers / compat.v1 calls the seed's scripts use: noise.
  try:
    from tensorflow.python.util import deprecation  # pylint: disable=g-import-not-at-top

    deprecation._PRINT_DEPRECATION_WARNINGS = False  # pylint: disable=protected-access
  except ImportError:
    pass
  # TF 2's tf-keras warns the same (once per call site) that tf.layers is deprecated.
  warnings.filterwarnings('ignore', message=r'`tf\.layers\.\w+` is deprecated', category=UserWarning)
  _configured = True


def get_logger():
  return tf.get_logger()
