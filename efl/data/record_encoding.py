"""Encodes `tf.train.Example` records and TFRecord files with numpy, without building protos.

Writers of large data sets (the example generators) use this module: filling one `tf.train.Example` proto per
record and writing them one by one is many times slower. Every record of a file has the same layout up to the
lengths of a few fields (the varint of a sample id, a string), so records are built in groups of equal layout
from a template, and the CRC32C checksums of a whole group are computed at once. The module needs numpy only.

Wire format of a record::

  Example {Features features = 1}
  Features {map<string, Feature> feature = 1}   each entry a message {string key = 1; Feature value = 2}
  Feature {BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3}
  each list holds its values in field 1: packed little-endian float32, packed varints, or one bytes value

Every message field is its tag byte, the varint length of its body, then the body. A TFRecord file is the
concatenation of frames: uint64 length, masked CRC32C of those 8 bytes, the record, masked CRC32C of the record,
all little-endian.

A file is written from `Field`s, one per feature, each holding the payload of every record::

  write_examples(path, [int64_field(b'sample_id', ids), float_field(b'x', features)])
"""

import collections
import struct

import numpy as np

from efl.protowire import varint

# Tag bytes of the lists in a Feature (field number << 3 | wire type 2).
BYTES_LIST = b'\x0a'
FLOAT_LIST = b'\x12'
INT64_LIST = b'\x1a'
_LIST_TAGS = (BYTES_LIST, FLOAT_LIST, INT64_LIST)

_MAX_VARINT_BYTES = 10  # 64 bits, 7 a byte


class Field(collections.namedtuple('Field', ['key', 'list_tag', 'payload', 'lengths'])):
  """One feature of every record of a file.

  Attributes:
    key: `bytes`, the feature's name.
    list_tag: `BYTES_LIST`, `FLOAT_LIST` or `INT64_LIST`.
    payload: uint8 array [n, width]; row i starts with the payload of record i: its packed numbers (varints for
      int64, little-endian float32) or the bytes of its one value.
    lengths: int array [n], the payload length of each record, or None when every record uses the whole row.
  """

  __slots__ = ()

  def __new__(cls, key, list_tag, payload, lengths=None):
    return super(Field, cls).__new__(cls, key, list_tag, payload, lengths)


def varints(values):
  """Encodes many integers as protobuf varints at once (what `varint` does to each).

  Args:
    values: integer array [n]; negative values are encoded as protobuf encodes int64, in 10 bytes.

  Returns:
    (encodings, lengths): uint8 array [n, 10] with the bytes of value i at the start of row i, and the int64
    array [n] of their lengths.

  Raises:
    ValueError: `values` is not a one-dimensional integer array.
  """
  values = np.asarray(values)
  if values.ndim != 1 or values.dtype.kind not in 'iu':
    raise ValueError(
      'varints takes a one-dimensional integer array. Found dtype %s and shape %s.' % (values.dtype, values.shape)
    )
  values = values.astype(np.uint64)  # int64 -> two's complement, as protobuf encodes negative int64
  lengths = np.ones(values.shape[0], dtype=np.int64)
  for i in range(1, _MAX_VARINT_BYTES):
    lengths += values >= np.uint64(1 << (7 * i))
  shifts = np.arange(_MAX_VARINT_BYTES, dtype=np.uint64) * np.uint64(7)
  groups = ((values[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
  groups |= np.where(np.arange(_MAX_VARINT_BYTES) < (lengths - 1)[:, None], 0x80, 0).astype(np.uint8)
  return groups, lengths


def entry_prefix(key, list_tag, payload_len):
  """Bytes of one Features map entry up to its payload.

  The entry is complete once followed by `payload_len` bytes of payload: the packed numbers of a FLOAT_LIST or
  INT64_LIST, or the bytes of the one value of a BYTES_LIST.

  Args:
    key: `bytes`, the feature's name.
    list_tag: `BYTES_LIST`, `FLOAT_LIST` or `INT64_LIST`.
    payload_len: length of the payload in bytes.

  Returns:
    The prefix, `bytes`.
  """
  list_head = b'\x0a' + varint(payload_len)
  feature_head = list_tag + varint(len(list_head) + payload_len) + list_head
  body_head = b'\x0a' + varint(len(key)) + key + b'\x12' + varint(len(feature_head) + payload_len) + feature_head
  return b'\x0a' + varint(len(body_head) + payload_len) + body_head


def _crc32c_table():
  table = np.zeros(256, dtype=np.uint32)
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # reversed Castagnoli polynomial
    table[i] = crc
  return table


_CRC_TABLE = _crc32c_table()


def masked_crc32c(rows):
  """Masked CRC32C, as TFRecord frames store it, of every row of a byte matrix.

  Args:
    rows: uint8 array [n, width].

  Returns:
    uint32 array [n].
  """
  rows = np.asarray(rows, dtype=np.uint8)
  crc = np.full(rows.shape[0], 0xFFFFFFFF, dtype=np.uint32)
  # One column at a time over all rows: n checksums advance together.
  for column in np.ascontiguousarray(rows.T):
    crc = _CRC_TABLE[(crc ^ column) & 0xFF] ^ (crc >> 8)
  crc ^= np.uint32(0xFFFFFFFF)
  return ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)


def frame_records(records):
  """TFRecord frames of serialized records of equal length.

  Args:
    records: uint8 array [n, length], one serialized record a row.

  Returns:
    uint8 array [n, length + 16], the frame of each record; its rows in order are the bytes of a TFRecord file.
  """
  records = np.asarray(records, dtype=np.uint8)
  header = np.frombuffer(struct.pack('<Q', records.shape[1]), dtype=np.uint8)
  frames = np.empty((records.shape[0], records.shape[1] + 16), dtype=np.uint8)
  frames[:, :8] = header
  frames[:, 8:12] = masked_crc32c(header[None, :]).astype('<u4').view(np.uint8)
  frames[:, 12:-4] = records
  frames[:, -4:] = masked_crc32c(records).astype('<u4').view(np.uint8).reshape(-1, 4)
  return frames


def int64_field(key, values):
  """A `Field` of one int64 value a record.

  Args:
    key: `bytes`, the feature's name.
    values: integer array [n], the value of each record.

  Returns:
    The `Field`.
  """
  payload, lengths = varints(values)
  return Field(key, INT64_LIST, payload, lengths)


def float_field(key, values):
  """A `Field` of float values, the same number for every record.

  Args:
    key: `bytes`, the feature's name.
    values: float array [n] (one value a record) or [n, d]; stored as float32.

  Returns:
    The `Field`.
  """
  values = np.ascontiguousarray(values, dtype='<f4')
  return Field(key, FLOAT_LIST, values.view(np.uint8).reshape(values.shape[0], -1))


def bytes_field(key, values):
  """A `Field` of one bytes value a record.

  Args:
    key: `bytes`, the feature's name.
    values: fixed-width bytes array [n] (dtype 'S<width>'); as numpy reads it, a value ends before its trailing
      NUL bytes.

  Returns:
    The `Field`.
  """
  values = np.ascontiguousarray(values)
  if values.ndim != 1 or values.dtype.kind != 'S':
    raise ValueError(
      'bytes_field takes a one-dimensional array of dtype S<width>. Found dtype %s and shape %s.'
      % (values.dtype, values.shape)
    )
  payload = values.view(np.uint8).reshape(values.shape[0], values.dtype.itemsize)
  nonzero = payload != 0
  # Length = index after the last non-NUL byte; argmax on the reversed row finds it (0 for an all-NUL row).
  lengths = np.where(nonzero.any(axis=1), payload.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
  return Field(key, BYTES_LIST, payload, lengths.astype(np.int64))


def _lengths_matrix(fields):
  """Checks the fields; returns their payload lengths as an int64 array [n, len(fields)]."""
  if not fields:
    raise ValueError('A record needs at least one field. Found none.')
  n = fields[0].payload.shape[0]
  lengths = np.empty((n, len(fields)), dtype=np.int64)
  for j, field in enumerate(fields):
    if field.list_tag not in _LIST_TAGS:
      raise ValueError(
        'list_tag of field %r must be BYTES_LIST, FLOAT_LIST or INT64_LIST. Found %r.' % (field.key, field.list_tag)
      )
    if field.payload.ndim != 2 or field.payload.shape[0] != n:
      raise ValueError(
        'The payload of field %r must be [%d, width] like that of field %r. Found shape %s.'
        % (field.key, n, fields[0].key, field.payload.shape)
      )
    lengths[:, j] = field.payload.shape[1] if field.lengths is None else field.lengths
    if n and not 0 <= lengths[:, j].min() <= lengths[:, j].max() <= field.payload.shape[1]:
      raise ValueError(
        'The lengths of field %r must be in [0, %d] (its payload width). Found [%d, %d].'
        % (field.key, field.payload.shape[1], lengths[:, j].min(), lengths[:, j].max())
      )
  return lengths


def _group_frames(fields, lengths, rows):
  """TFRecord frames of the records `rows`, whose fields have the payload lengths `lengths`."""
  body = bytearray()
  offsets = []
  for field, length in zip(fields, lengths):
    body += entry_prefix(field.key, field.list_tag, int(length))
    offsets.append(len(body))
    body += bytes(int(length))
  head = b'\x0a' + varint(len(body))  # Example.features
  records = np.empty((rows.size, len(head) + len(body)), dtype=np.uint8)
  records[:] = np.frombuffer(head + bytes(body), dtype=np.uint8)
  for field, length, offset in zip(fields, lengths, offsets):
    start = len(head) + offset
    records[:, start : start + length] = field.payload[rows, :length]
  return frame_records(records)


def write_examples(path, fields):
  """Writes a TFRecord file of `tf.train.Example` records, one a row of the fields' payloads.

  Each record holds the features in the order of `fields`, as `tf.train.Example(...).SerializeToString()`
  does when the features are added in that order.

  Args:
    path: the file to write (replaced if it exists).
    fields: list of `Field`, all with the same number of records.

  Raises:
    ValueError: a field is malformed (the message names it).
  """
  lengths = _lengths_matrix(fields)
  if not lengths.shape[0]:
    open(path, 'wb').close()
    return
  # Group the records by their row of lengths. Usually one or two fields vary (a sample id of 1 to 4 bytes),
  # so columns of one value are skipped and the others folded into one small integer key.
  key = np.zeros(lengths.shape[0], dtype=np.int64)
  for column in lengths.T:
    low, high = column.min(), column.max()
    if low != high:
      key = np.unique(key * (high - low + 1) + (column - low), return_inverse=True)[1]
  _, first, group = np.unique(key, return_index=True, return_inverse=True)
  frames = []
  rank = np.empty(group.size, dtype=np.int64)
  for g, group_lengths in enumerate(lengths[first]):
    rows = np.flatnonzero(group == g)
    rank[rows] = np.arange(rows.size)
    frames.append(_group_frames(fields, group_lengths, rows))
  # Records keep their order: copy each run of consecutive records that share a layout.
  run_starts = np.concatenate([[0], np.flatnonzero(np.diff(group)) + 1, [group.size]])
  with open(path, 'wb') as f:
    for a, b in zip(run_starts[:-1], run_starts[1:]):
      f.write(frames[group[a]][rank[a] : rank[a] + b - a].tobytes())
