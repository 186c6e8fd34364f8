"""Bad input: each problem is reported with what is wrong, where, and how to fix it."""

import pytest
import tensorflow.compat.v1 as tf

import efl.data
from data_helpers import declare, example, read_all, write_dataset, write_records


def _read(base, **kwargs):
  io = efl.data.DataIO(str(base), 2, **kwargs)
  declare(io)
  return io, io.read()


def test_missing_dir(tmp_path):
  with pytest.raises(efl.data.DataNotFoundError, match=r"data directory '.*nowhere' does not exist"):
    _read(tmp_path / 'nowhere')


def test_empty_dir(tmp_path):
  (tmp_path / '_SUCCESS').write_bytes(b'')
  with pytest.raises(efl.data.DataNotFoundError, match='holds no data files'):
    _read(tmp_path)


def test_missing_file_node(tmp_path):
  write_dataset(tmp_path, 1, 2)
  io = efl.data.DataIO(str(tmp_path), 2)
  declare(io)
  io.add_file_node('part1')
  with pytest.raises(efl.data.DataNotFoundError, match="file node 'part1' does not exist"):
    io.read()


def test_more_workers_than_files(tmp_path):
  write_dataset(tmp_path, 2, 2)
  with pytest.raises(ValueError, match='worker 2 of 3 gets no file'):
    _read(tmp_path, worker_idx=2, worker_num=3)


def test_missing_feature_names_feature_and_file(tmp_path):
  path = write_records(
    str(tmp_path / 'f.tfrd'),
    [
      tf.train.Example(
        features=tf.train.Features(
          feature={
            'sample_id': tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
            'dense': tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 2.0, 3.0])),
          }
        )
      ).SerializeToString()
    ],
  )
  with pytest.raises(efl.data.SchemaError) as info:
    _read(tmp_path)
  message = str(info.value)
  assert "feature 'label' is declared but the records of" in message and path in message
  assert "['dense', 'sample_id']" in message


def test_wrong_dtype(tmp_path):
  write_records(str(tmp_path / 'f.tfrd'), [example(0)])
  io = efl.data.DataIO(str(tmp_path), 2)
  io.fixedlen_feature('label', 1, dtype=tf.float32)
  with pytest.raises(
    efl.data.SchemaError, match=r"feature 'label' is declared as float32 but .*f.tfrd' stores it as int64_list"
  ):
    io.read()


def test_wrong_length(tmp_path):
  write_records(str(tmp_path / 'f.tfrd'), [example(0, dense_len=4)])
  with pytest.raises(efl.data.SchemaError, match=r"feature 'dense' is declared with 3 value\(s\) per record .* has 4"):
    _read(tmp_path)


def test_not_an_example(tmp_path):
  write_records(str(tmp_path / 'f.tfrd'), [b'\xff\xfe not a proto'])
  with pytest.raises(efl.data.SchemaError, match='not a serialized tf.train.Example'):
    _read(tmp_path)


def test_truncated_first_file(tmp_path):
  path = write_records(str(tmp_path / 'f.tfrd'), [example(0)])
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[: len(data) - 5])
  with pytest.raises(efl.data.CorruptFileError, match=r"cannot read '.*f.tfrd' as a TFRecord file"):
    _read(tmp_path)


def test_wrong_compression(tmp_path):
  write_records(str(tmp_path / 'f.tfrd'), [example(0)], 'GZIP')
  with pytest.raises(efl.data.CorruptFileError, match='compression'):
    _read(tmp_path)


def test_corrupt_later_file_is_explained(tmp_path):
  paths = write_dataset(tmp_path, 2, 4)
  data = bytearray(open(paths[1], 'rb').read())
  data[len(data) // 2] ^= 0xFF
  open(paths[1], 'wb').write(bytes(data))
  io, features = _read(tmp_path, prefetch=0)
  with pytest.raises(tf.errors.DataLossError) as info:
    read_all(features, [io.get_hook()])
  clearer = efl.data.explain_error(info.value)
  assert isinstance(clearer, tf.errors.DataLossError)
  assert "Reader 'dataio'" in clearer.message and paths[1] in clearer.message
  assert 'truncated or corrupt' in clearer.message


def test_bad_record_later_is_named_by_the_parser(tmp_path):
  write_records(str(tmp_path / 'a.tfrd'), [example(i) for i in range(3)])
  bad = write_records(str(tmp_path / 'b.tfrd'), [example(3), example(4, dense_len=2)])
  io, features = _read(tmp_path, prefetch=2)
  with pytest.raises(tf.errors.InvalidArgumentError) as info:
    read_all(features, [io.get_hook()])
  assert bad + ':1' in info.value.message  # the file and the record index inside it
  clearer = efl.data.explain_error(info.value)
  assert isinstance(clearer, tf.errors.InvalidArgumentError)
  assert "Reader 'dataio': a record does not match the declared features" in clearer.message
  assert 'Key: dense' in clearer.message and bad in clearer.message
  assert 'function_node' not in clearer.message


def test_explain_ignores_other_errors():
  err = tf.errors.InvalidArgumentError(None, None, 'something else')
  assert efl.data.explain_error(err) is None


def test_later_record_without_a_feature_is_explained(tmp_path):
  write_records(str(tmp_path / 'a.tfrd'), [example(i) for i in range(2)])
  lacking = tf.train.Example(
    features=tf.train.Features(
      feature={
        'sample_id': tf.train.Feature(int64_list=tf.train.Int64List(value=[2])),
        'dense': tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 2.0, 3.0])),
      }
    )
  ).SerializeToString()
  bad = write_records(str(tmp_path / 'b.tfrd'), [lacking])
  io, features = _read(tmp_path, prefetch=0)
  with pytest.raises(tf.errors.InvalidArgumentError) as info:
    read_all(features, [io.get_hook()])
  clearer = efl.data.explain_error(info.value)
  assert 'Feature: label' in clearer.message and bad + ':0' in clearer.message
