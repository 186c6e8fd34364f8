"""Feature-column helpers of EFLS: `make_parse_example_spec` (also `efl.make_parse_example_spec`), `input_layer`."""

import tensorflow.compat.v1 as tf


def get_feature_key(column):
  """The feature name(s) a column reads: one name, or a sorted list when it reads several."""
  keys = sorted(tf.feature_column.make_parse_example_spec([column]).keys())
  return keys[0] if len(keys) == 1 else keys


def make_parse_example_spec(feature_columns):
  """The `tf.io.parse_example` spec of every column in `feature_columns`, merged into one dict.

  Raises a ValueError naming the feature when two columns read it with different specs.
  """
  spec = {}
  for column in feature_columns:
    for key, value in tf.feature_column.make_parse_example_spec([column]).items():
      if key in spec and spec[key] != value:
        raise ValueError(
          'feature %r is read with two different specs: %r and %r (column %r); give the columns '
          'one spec per feature' % (key, spec[key], value, column.name)
        )
      spec[key] = value
  return spec


def input_layer(features, feature_columns, trainable=True):
  """(one `[batch, width]` tensor of all dense columns, {column name: its tensor})."""
  columns = list(feature_columns)
  tensors = {}
  with tf.variable_scope(tf.get_variable_scope(), reuse=tf.AUTO_REUSE):
    out = tf.feature_column.input_layer(features, columns, trainable=trainable, cols_to_output_tensors=tensors)
  return out, {c.name: t for c, t in tensors.items()}
