"""The features a reader declares, and the checks of records against them."""

import collections

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.python.util import deprecation

from efl.data.errors import CorruptFileError, SchemaError

SUPPORTED_DTYPES = (tf.float32, tf.int64, tf.string)
_KIND_OF_DTYPE = {tf.float32: 'float_list', tf.int64: 'int64_list', tf.string: 'bytes_list'}
_DTYPE_OF_KIND = {kind: dtype for dtype, kind in _KIND_OF_DTYPE.items()}

Feature = collections.namedtuple('Feature', ['name', 'shape', 'dtype', 'varlen'])


def make_feature(name, shape, dtype, varlen):
  """Validates one declaration and returns it as a `Feature`.

  Raises:
      ValueError: the name is empty, the shape is not positive, or the dtype cannot be parsed from a record.
  """
  if not isinstance(name, str) or not name:
    raise ValueError('A feature name must be a non-empty string. Found {!r}.'.format(name))
  try:
    dtype = tf.as_dtype(dtype)
  except TypeError:
    raise ValueError(
      'Feature {!r}: dtype must be one of tf.float32, tf.int64, tf.string. Found {!r}.'.format(name, dtype)
    )
  if dtype not in SUPPORTED_DTYPES:
    raise ValueError(
      'Feature {!r}: tf.Example stores only tf.float32, tf.int64 and tf.string values. '
      'Found {}; read it as one of those and cast it afterwards.'.format(name, dtype.name)
    )
  if not varlen:
    dims = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    if not dims or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in dims):
      raise ValueError('Feature {!r}: dim must be a positive int (or a list of them). Found {!r}.'.format(name, shape))
    shape = [int(d) for d in dims]
  return Feature(name, shape, dtype, varlen)


def parse_spec(features):
  """The `tf.io.parse_example` spec of `features` (an ordered dict name -> `Feature`)."""
  spec = collections.OrderedDict()
  for feature in features.values():
    if feature.varlen:
      spec[feature.name] = tf.io.VarLenFeature(feature.dtype)
    else:
      spec[feature.name] = tf.io.FixedLenFeature(feature.shape, feature.dtype)
  return spec


def first_record(path, compression, reader_name):
  """The first serialized record of `path`, or None if it has none.

  Raises:
      CorruptFileError: the file cannot be read as a TFRecord file with this compression.
  """
  options = tf.io.TFRecordOptions(compression or '')
  try:
    with deprecation.silence():  # the suggested replacement needs eager mode
      for record in tf.io.tf_record_iterator(path, options):
        return record
  except (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError) as err:
    raise CorruptFileError(
      'Reader {!r}: cannot read {!r} as a TFRecord file with compression {!r}: {}. The file is truncated, '
      'corrupt, or compressed in another way: re-create it, or pass the right compression_type (files '
      'ending in .gz/.zlib are read as GZIP/ZLIB unless compression_type says otherwise).'.format(
        reader_name, path, compression, err.message
      )
    ) from None
  return None


def readable(path, compression):
  """Whether every record of `path` reads without a checksum or framing error (reads the whole file)."""
  options = tf.io.TFRecordOptions(compression or '')
  try:
    with deprecation.silence():
      for _ in tf.io.tf_record_iterator(path, options):
        pass
  except (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError):
    return False
  return True


def check_record(record, path, features, reader_name):
  """Checks one serialized `tf.train.Example` against the declared features.

  Raises:
      SchemaError: the record is no tf.train.Example, lacks a declared fixed-length feature, or stores a feature
          with another dtype or length than declared.
  """
  try:
    example = tf.train.Example.FromString(record)
  except Exception as err:  # the protobuf decode error type depends on the protobuf backend
    raise SchemaError(
      'Reader {!r}: the first record of {!r} is not a serialized tf.train.Example ({}). '
      'Write the files with tf.io.TFRecordWriter and tf.train.Example.'.format(reader_name, path, err)
    ) from None
  stored = example.features.feature
  for feature in features.values():
    if feature.name not in stored:
      if feature.varlen:
        continue  # a variable-length feature may be absent from a record: it reads as empty
      raise SchemaError(
        'Reader {!r}: feature {!r} is declared but the records of {!r} do not have it (the first record has '
        '{}). Declare only features the files hold, or regenerate the files.'.format(
          reader_name, feature.name, path, sorted(stored.keys())
        )
      )
    kind = stored[feature.name].WhichOneof('kind')
    if kind is None:
      values = []
    else:
      if kind != _KIND_OF_DTYPE[feature.dtype]:
        raise SchemaError(
          'Reader {!r}: feature {!r} is declared as {} but {!r} stores it as {} ({}). Declare '
          'dtype=tf.{} for it.'.format(
            reader_name,
            feature.name,
            feature.dtype.name,
            path,
            kind,
            _DTYPE_OF_KIND[kind].name,
            _DTYPE_OF_KIND[kind].name,
          )
        )
      values = getattr(stored[feature.name], kind).value
    if not feature.varlen:
      expected = int(np.prod(feature.shape))
      if len(values) != expected:
        raise SchemaError(
          'Reader {!r}: feature {!r} is declared with {} value(s) per record (dim {}) but the first '
          'record of {!r} has {}. Declare dim={} or regenerate the files.'.format(
            reader_name,
            feature.name,
            expected,
            feature.shape if len(feature.shape) > 1 else feature.shape[0],
            path,
            len(values),
            len(values),
          )
        )


def check_files(paths, compressions, features, reader_name, max_files=16):
  """Checks the first record found in the first files against the declared features.

  Only the first non-empty file among the first `max_files` is checked, so the check stays cheap; records
  further on are checked by the parser while training (see `efl.data.explain_error`).

  Raises:
      CorruptFileError: a file examined is not readable.
      SchemaError: the first record does not match the declared features.
  """
  for path, compression in list(zip(paths, compressions))[:max_files]:
    record = first_record(path, compression, reader_name)
    if record is not None:
      check_record(record, path, features, reader_name)
      return
