"""Tests of efl/data/record_encoding.py against the bytes TensorFlow's protos and TFRecord writer produce."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from efl.data import record_encoding as enc

INT64_VALUES = [0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**56, 2**63 - 1, -1, -300, -(2**63)]


def _int64(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _float(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _example(**features):
  return tf.train.Example(features=tf.train.Features(feature=features))


def _records(path):
  return list(tf.io.tf_record_iterator(path))


def _write_with_tf(path, records):
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  with open(path, 'rb') as f:
    return f.read()


def test_varint_matches_the_packed_int64_list():
  for value in INT64_VALUES:
    # Int64List: tag 0x0a, length of the packed values (< 128 here), then the varint.
    assert enc.varint(value) == tf.train.Int64List(value=[value]).SerializeToString()[2:], value
  assert enc.varint(2**64 - 1) == enc.varint(-1)  # the same 64 bits
  assert enc.varint(np.int64(300)) == enc.varint(300)


def test_varint_rejects_what_does_not_fit():
  with pytest.raises(ValueError, match='int64 or a uint64. Found 18446744073709551616'):
    enc.varint(2**64)
  with pytest.raises(ValueError, match='Found -9223372036854775809'):
    enc.varint(-(2**63) - 1)
  with pytest.raises(TypeError):
    enc.varint(1.5)


def test_varints_match_varint():
  encodings, lengths = enc.varints(np.array(INT64_VALUES, dtype=np.int64))
  assert encodings.shape == (len(INT64_VALUES), 10)
  for row, length, value in zip(encodings, lengths, INT64_VALUES):
    assert bytes(row[:length]) == enc.varint(value)
    assert not row[length:].any()
  encodings, lengths = enc.varints(np.array([0, 200], dtype=np.uint8))
  assert [bytes(r[:n]) for r, n in zip(encodings, lengths)] == [b'\x00', b'\xc8\x01']
  with pytest.raises(ValueError, match=r'one-dimensional integer array. Found dtype float64 and shape \(2,\)'):
    enc.varints(np.array([1.0, 2.0]))
  with pytest.raises(ValueError, match=r'shape \(1, 2\)'):
    enc.varints(np.array([[1, 2]]))


@pytest.mark.parametrize(
  'key,list_tag,payload,feature',
  [
    (b'id', enc.INT64_LIST, enc.varint(5), _int64([5])),
    (b'id', enc.INT64_LIST, enc.varint(-7) + enc.varint(2**40), _int64([-7, 2**40])),
    (b'x', enc.FLOAT_LIST, np.arange(3, dtype='<f4').tobytes(), _float([0.0, 1.0, 2.0])),
    # Lengths of 128 and more take varints of two bytes at every level.
    (b'x' * 130, enc.FLOAT_LIST, np.arange(40, dtype='<f4').tobytes(), _float(list(range(40)))),
    (b's', enc.BYTES_LIST, b'abc', _bytes([b'abc'])),
    (b's', enc.BYTES_LIST, b'', _bytes([b''])),
    (b's', enc.BYTES_LIST, b'\x00q' * 9000, _bytes([b'\x00q' * 9000])),
  ],
)
def test_entry_prefix_builds_the_example_bytes(key, list_tag, payload, feature):
  entry = enc.entry_prefix(key, list_tag, len(payload)) + payload
  record = b'\x0a' + enc.varint(len(entry)) + entry
  assert record == _example(**{key.decode(): feature}).SerializeToString()


def test_masked_crc32c_of_a_known_vector():
  # CRC32C('123456789') = 0xe3069283 (RFC 3720, B.4); TFRecord masks it as rotate-right-15 plus 0xa282ead8.
  crc = 0xE3069283
  masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
  rows = np.frombuffer(b'123456789' * 2, dtype=np.uint8).reshape(2, 9)
  assert enc.masked_crc32c(rows).tolist() == [masked, masked]
  assert enc.masked_crc32c(rows).dtype == np.uint32


def test_frame_records_matches_the_tfrecord_writer(tmp_path):
  rng = np.random.RandomState(0)
  records = rng.randint(0, 256, size=(5, 300)).astype(np.uint8)
  expected = _write_with_tf(str(tmp_path / 'tf.tfrd'), [bytes(r) for r in records])
  frames = enc.frame_records(records)
  assert frames.shape == (5, 316)
  assert frames.tobytes() == expected
  assert enc.frame_records(np.zeros((2, 0), np.uint8)).tobytes() == _write_with_tf(
    str(tmp_path / 'empty.tfrd'), [b'', b'']
  )


def test_fields_hold_the_values():
  field = enc.float_field(b'x', np.array([[1.5, -2.0], [0.25, 3.0]]))
  assert (field.key, field.list_tag, field.lengths) == (b'x', enc.FLOAT_LIST, None)
  assert field.payload.tobytes() == np.array([1.5, -2.0, 0.25, 3.0], dtype='<f4').tobytes()
  assert enc.float_field(b'y', np.array([1.0, 2.0])).payload.shape == (2, 4)
  field = enc.int64_field(b'id', np.array([1, 300]))
  assert field.list_tag == enc.INT64_LIST and field.lengths.tolist() == [1, 2]
  # A value ends before its trailing NULs, as numpy reads it; a NUL inside a value stays.
  field = enc.bytes_field(b's', np.array([b'ab', b'', b'a\x00b', b'abcd'], dtype='S4'))
  assert field.list_tag == enc.BYTES_LIST and field.lengths.tolist() == [2, 0, 3, 4]
  with pytest.raises(ValueError, match='dtype S<width>. Found dtype int64'):
    enc.bytes_field(b's', np.array([1, 2], dtype=np.int64))


def _mixed_fields(n, seed):
  """Fields whose lengths vary between records, in sorted key order; with the equivalent tf.train.Examples."""
  rng = np.random.RandomState(seed)
  ids = np.concatenate([rng.randint(0, 2**62, size=n // 2, dtype=np.int64), rng.randint(-5, 400, size=n // 2)])
  rng.shuffle(ids)
  dense = rng.randn(n, 3).astype(np.float32)
  words = np.array([b'w' * k for k in rng.randint(0, 7, size=n)], dtype='S6')
  fields = [
    enc.float_field(b'dense', dense),
    enc.int64_field(b'label', ids % 2),
    enc.int64_field(b'sample_id', ids),
    enc.bytes_field(b'word', words),
  ]
  examples = [
    _example(
      dense=_float(dense[i].tolist()),
      label=_int64([int(ids[i] % 2)]),
      sample_id=_int64([int(ids[i])]),
      word=_bytes([words[i]]),
    )
    for i in range(n)
  ]
  return fields, examples, ids, dense, words


def test_write_examples_matches_tf_example_and_keeps_record_order(tmp_path):
  fields, examples, _, _, _ = _mixed_fields(60, seed=1)
  path = str(tmp_path / 'data.tfrd')
  enc.write_examples(path, fields)
  # Deterministic serialization sorts the map by key, the order of `fields`, so the bytes must agree exactly.
  expected = _write_with_tf(str(tmp_path / 'tf.tfrd'), [e.SerializeToString(deterministic=True) for e in examples])
  with open(path, 'rb') as f:
    assert f.read() == expected
  assert [tf.train.Example.FromString(r) for r in _records(path)] == examples


def test_written_records_parse_with_tf_data(tmp_path):
  fields, _, ids, dense, words = _mixed_fields(40, seed=2)
  path = str(tmp_path / 'data.tfrd')
  enc.write_examples(path, fields)
  spec = {
    'sample_id': tf.FixedLenFeature([1], tf.int64),
    'dense': tf.FixedLenFeature([3], tf.float32),
    'label': tf.FixedLenFeature([1], tf.int64),
    'word': tf.FixedLenFeature([], tf.string),
  }
  batch = tf.data.TFRecordDataset(path).batch(100)
  parsed = tf.io.parse_example(tf.data.make_one_shot_iterator(batch).get_next(), spec)
  with tf.Session() as sess:
    values = sess.run(parsed)
  np.testing.assert_array_equal(values['sample_id'].ravel(), ids)
  np.testing.assert_array_equal(values['label'].ravel(), ids % 2)
  np.testing.assert_array_equal(values['dense'], dense)
  assert values['word'].tolist() == words.tolist()


def test_write_examples_without_records_writes_an_empty_file(tmp_path):
  path = str(tmp_path / 'empty.tfrd')
  enc.write_examples(path, [enc.int64_field(b'id', np.zeros(0, np.int64))])
  assert _records(path) == []


def test_write_examples_rejects_malformed_fields(tmp_path):
  path = str(tmp_path / 'bad.tfrd')
  ids = enc.int64_field(b'id', np.arange(3))
  with pytest.raises(ValueError, match='at least one field'):
    enc.write_examples(path, [])
  with pytest.raises(ValueError, match=r"list_tag of field b'x' must be .* Found b'\\x05'"):
    enc.write_examples(path, [ids, enc.Field(b'x', b'\x05', np.zeros((3, 4), np.uint8))])
  with pytest.raises(ValueError, match=r"payload of field b'x' must be \[3, width\] like that of field b'id'"):
    enc.write_examples(path, [ids, enc.float_field(b'x', np.zeros(4))])
  with pytest.raises(ValueError, match=r"lengths of field b'x' must be in \[0, 4\].*Found \[0, 5\]"):
    enc.write_examples(path, [ids, enc.Field(b'x', enc.BYTES_LIST, np.zeros((3, 4), np.uint8), [0, 5, 1])])
