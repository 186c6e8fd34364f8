"""The TensorFlow stacks efl runs on: 1.15, and 2.x in graph mode through `tensorflow.compat.v1`.

Importing efl puts TensorFlow 2 in graph mode (`efl/__init__.py`); the rest of efl uses `tensorflow.compat.v1`,
which is the same API on both. What still differs is decided here.
"""

import re

import tensorflow as _tf
from tensorflow.python.ops import variables as _variables

TF_MAJOR = int(_tf.__version__.split('.')[0])
TF2 = TF_MAJOR >= 2

# TF 2's sessions put this first in an op's error message, then where each node it names was defined (blocks
# from "Detected at node ..." to "Node: '<name>'"), then the op's own message, which TF 1.15 puts first.
_GRAPH_ERROR_HEADER = 'Graph execution error:'
_NODE_BLOCK_END = re.compile(r'^Node: .*(\n|$)', re.M)


def op_error_text(error):
  """The message of `error`, a `tf.errors.OpError`, as the op raised it: its own sentence on the first line."""
  text = getattr(error, 'message', None) or ''
  if not text.startswith(_GRAPH_ERROR_HEADER):
    return text
  rest = text[len(_GRAPH_ERROR_HEADER) :].lstrip('\n')
  while rest.startswith('Detected at node '):
    end = _NODE_BLOCK_END.search(rest)
    if end is None:
      break
    rest = rest[end.end() :]
  return rest


def is_variable(value):
  """Whether `value` is a variable of any kind: TF 2's resource variables are no `tf.compat.v1.Variable`."""
  return isinstance(value, _variables.Variable)


def dense_features(columns, name):
  """A `DenseFeatures` layer of `columns` named `name`, TF 1.15's on TF 1 and tf-keras' on TF 2.

  Both create the columns' variables under the same names (`<scope>/<name>/<column>/...`), so a checkpoint of
  one stack restores on the other.
  """
  import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

  cls = getattr(tf.keras.layers, 'DenseFeatures', None)
  if cls is None:
    # tf.keras is Keras 3 (TF_USE_LEGACY_KERAS was off when tf.keras was first used), which has no feature
    # columns and no graph mode; tf-keras, the Keras 2 of TF 2, has both.
    try:
      from tf_keras.api._v1 import keras as tf_keras_v1  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(
        'efl on TensorFlow %s needs the package tf-keras (Keras 2) for its feature columns: pip '
        'install tf-keras~=%s (%s)' % (_tf.__version__, '.'.join(_tf.__version__.split('.')[:2]), e)
      ) from e
    cls = tf_keras_v1.layers.DenseFeatures
  return cls(list(columns), name=name)
