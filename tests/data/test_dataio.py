"""DataIO: order, sharding, epochs, batching, varlen, compression, exact resume, FederalDataset."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import efl.data
from data_helpers import declare, example, read_all, write_dataset, write_records


def _ids(batches):
  return [b['sample_id'].ravel().tolist() for b in batches]


def _reader(base, batch_size, **kwargs):
  varlen = kwargs.pop('varlen', False)
  io = efl.data.DataIO(str(base), batch_size, **kwargs)
  declare(io, varlen=varlen)
  return io


def test_order_and_features_across_batches(tmp_path):
  write_dataset(tmp_path, 3, 5)  # ids 0..14
  io = _reader(tmp_path, 4)
  features = io.read()
  assert list(features) == ['sample_id', 'dense', 'label']
  assert io.read() is features  # idempotent
  batches = read_all(features, [io.get_hook()])
  assert _ids(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14]]
  for b in batches:
    ids = b['sample_id'].ravel()
    np.testing.assert_allclose(b['dense'], np.repeat(ids[:, None], 3, axis=1).astype(np.float32))
    np.testing.assert_array_equal(b['label'].ravel(), ids % 2)


def test_files_sorted_recursive_and_marker_files_skipped(tmp_path):
  write_records(str(tmp_path / 'b' / 'x.tfrd'), [example(2), example(3)])
  write_records(str(tmp_path / 'a.tfrd'), [example(0), example(1)])
  (tmp_path / '_SUCCESS').write_bytes(b'')
  (tmp_path / '.a.tfrd.crc').write_bytes(b'garbage')
  io = _reader(tmp_path, 10)
  features = io.read()
  assert io.files == [str(tmp_path / 'a.tfrd'), str(tmp_path / 'b' / 'x.tfrd')]
  assert _ids(read_all(features, [io.get_hook()])) == [[0, 1, 2, 3]]


def test_file_nodes(tmp_path):
  write_records(str(tmp_path / 'n1' / 'f.tfrd'), [example(0)])
  write_records(str(tmp_path / 'n2' / 'f.tfrd'), [example(1)])
  write_records(str(tmp_path / 'n3' / 'f.tfrd'), [example(2)])
  io = _reader(tmp_path, 10)
  io.add_file_nodes(['n3', 'n1'])
  assert _ids(read_all(io.read(), [io.get_hook()])) == [[0, 2]]


def test_worker_sharding(tmp_path):
  write_dataset(tmp_path, 4, 2)  # file i holds ids 2i, 2i+1
  got = []
  for worker in range(2):
    with tf.Graph().as_default():
      io = _reader(tmp_path, 100, worker_idx=worker, worker_num=2)
      got.append(_ids(read_all(io.read(), [io.get_hook()]))[0])
  assert got == [[0, 1, 4, 5], [2, 3, 6, 7]]


def test_epochs_and_drop_remainder(tmp_path):
  write_dataset(tmp_path, 2, 3)  # ids 0..5
  io = _reader(tmp_path, 4, num_epochs=2)
  assert _ids(read_all(io.read(), [io.get_hook()])) == [[0, 1, 2, 3], [4, 5, 0, 1], [2, 3, 4, 5]]
  with tf.Graph().as_default():
    io = _reader(tmp_path, 4, num_epochs=1, drop_remainder=True)
    features = io.read()
    assert features['sample_id'].shape.as_list() == [4, 1]
    assert _ids(read_all(features, [io.get_hook()])) == [[0, 1, 2, 3]]


@pytest.mark.parametrize('drop_remainder', [False, True])
def test_batches_span_uneven_files(tmp_path, drop_remainder):
  # Files of 5, 1, 7 and 2 records: batches of 4 take records from up to three files.
  sizes, first = [5, 1, 7, 2], 0
  for f, size in enumerate(sizes):
    write_records(str(tmp_path / ('data_%d.tfrd' % f)), [example(i) for i in range(first, first + size)])
    first += size
  io = _reader(tmp_path, 4, drop_remainder=drop_remainder)
  features = io.read()
  expected = [list(range(i, min(i + 4, 15))) for i in range(0, 15, 4)]
  assert _ids(read_all(features, [io.get_hook()])) == (expected[:-1] if drop_remainder else expected)


def test_endless_epochs(tmp_path):
  write_dataset(tmp_path, 1, 3)
  io = _reader(tmp_path, 2, num_epochs=None)
  assert _ids(read_all(io.read(), [io.get_hook()], max_batches=4)) == [[0, 1], [2, 0], [1, 2], [0, 1]]


def test_varlen_feature(tmp_path):
  write_records(str(tmp_path / 'f.tfrd'), [example(i, ids=list(range(10 * i, 10 * i + i))) for i in range(4)])
  io = _reader(tmp_path, 4, varlen=True)
  features = io.read()
  assert isinstance(features['ids'], tf.SparseTensor)
  (batch,) = read_all(features, [io.get_hook()])
  sparse = batch['ids']
  assert sparse.dense_shape.tolist() == [4, 3]
  assert sparse.values.tolist() == [10, 20, 21, 30, 31, 32]
  assert sparse.indices[:, 0].tolist() == [1, 2, 2, 3, 3, 3]


@pytest.mark.parametrize(
  'name,compression,argument',
  [('f.tfrd.gz', 'GZIP', None), ('f.tfrd.zlib', 'ZLIB', None), ('f.tfrd', 'GZIP', 'GZIP'), ('f.tfrd', 'ZLIB', 'zlib')],
)
def test_compressed_files(tmp_path, name, compression, argument):
  write_records(str(tmp_path / name), [example(i) for i in range(5)], compression)
  io = _reader(tmp_path, 2, compression_type=argument)
  assert _ids(read_all(io.read(), [io.get_hook()])) == [[0, 1], [2, 3], [4]]


def test_schema_frozen_after_read_and_duplicates(tmp_path):
  write_dataset(tmp_path, 1, 2)
  io = _reader(tmp_path, 2)
  with pytest.raises(ValueError, match="'dense' is declared twice"):
    io.fixedlen_feature('dense', 3)
  io.read()
  with pytest.raises(RuntimeError, match='after read'):
    io.fixedlen_feature('other', 1)
  with pytest.raises(RuntimeError, match='after read'):
    io.varlen_feature('other')
  with pytest.raises(RuntimeError, match='after read'):
    io.add_file_node('x')


def test_argument_checks(tmp_path):
  with pytest.raises(ValueError, match='batch_size must be an int >= 1. Found 0'):
    efl.data.DataIO(str(tmp_path), 0)
  with pytest.raises(ValueError, match=r'worker_idx must be in \[0, worker_num=2\). Found 2'):
    efl.data.DataIO(str(tmp_path), 1, 2, 2)
  with pytest.raises(ValueError, match='compression_type'):
    efl.data.DataIO(str(tmp_path), 1, compression_type='LZ4')
  with pytest.raises(ValueError, match="name must start with .* Found 'my reader'"):
    efl.data.DataIO(str(tmp_path), 1, name='my reader')
  io = efl.data.DataIO(str(tmp_path), 1)
  with pytest.raises(ValueError, match='Found int32'):
    io.fixedlen_feature('x', 1, dtype=tf.int32)
  with pytest.raises(ValueError, match='dim must be a positive int'):
    io.fixedlen_feature('x', 0)
  with pytest.raises(ValueError, match='at least one feature'):
    io.read()


def test_repeated_names_get_their_own_scope(tmp_path):
  write_dataset(tmp_path, 1, 2)
  first, second = _reader(tmp_path, 2), _reader(tmp_path, 2)
  first.read()
  second.read()
  assert (first.scope, second.scope) == ('dataio', 'dataio_1')
  assert first.state_variable.op.name == 'dataio/reader_state'
  assert second.state_variable.op.name == 'dataio_1/reader_state'


def _save_after(tmp_path, ckpt_dir, batches_to_read, prefetch):
  """Reads `batches_to_read` batches in a MonitoredSession whose CheckpointSaverHook saves at the end."""
  with tf.Graph().as_default():
    io = _reader(tmp_path, 3, prefetch=prefetch, num_epochs=2)
    features = io.read()
    step = tf.train.get_or_create_global_step()
    train_op = tf.assign_add(step, 1)
    saver_hook = tf.train.CheckpointSaverHook(str(ckpt_dir), save_steps=1000)
    got = []
    with tf.train.MonitoredSession(
      session_creator=tf.train.ChiefSessionCreator(checkpoint_dir=str(ckpt_dir)), hooks=[io.get_hook(), saver_hook]
    ) as sess:
      for _ in range(batches_to_read):
        got.append(sess.run([features, train_op])[0])
      # Runs that do not evaluate the features must not move the recorded position.
      sess.run(train_op)
  return _ids(got)


def test_exact_resume_with_prefetch(tmp_path):
  write_dataset(tmp_path / 'data', 3, 5)  # ids 0..14, two epochs -> 10 batches of 3
  data = tmp_path / 'data'
  expected = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14], [0, 1, 2], [3, 4, 5]]
  ckpt = tmp_path / 'ckpt'
  assert _save_after(data, ckpt, 3, prefetch=4) == expected[:3]
  # A new graph and session restore the checkpoint: the next batch is the 4th, whatever prefetch read.
  assert _save_after(data, ckpt, 3, prefetch=4) == expected[3:6]
  assert _save_after(data, ckpt, 1, prefetch=0) == expected[6:7]
  with tf.Graph().as_default():
    io = _reader(data, 3, num_epochs=2)
    features = io.read()
    rest = read_all(features, [io.get_hook()], session_creator=tf.train.ChiefSessionCreator(checkpoint_dir=str(ckpt)))
  assert _ids(rest) == [[6, 7, 8], [9, 10, 11], [12, 13, 14]]


def test_state_records_position_and_initialize_iter(tmp_path):
  write_dataset(tmp_path, 2, 4)
  io = _reader(tmp_path, 3, prefetch=2)
  features = io.read()
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    io.initialize_iter(sess)
    sess.run(features)
    sess.run(features)
    assert sess.run(io.state_variable) == b'1:2:data_1.tfrd'
    assert efl.data.parse_position(sess.run(io.state_variable)) == (1, 2, 'data_1.tfrd')
    io.initialize_iter(sess)  # restarts from the recorded position
    assert sess.run(features)['sample_id'].ravel().tolist() == [6, 7]


def test_federal_dataset_standalone(tmp_path):
  paths = write_dataset(tmp_path, 2, 5)
  dataset = efl.data.FederalDataset(paths, sample_index=3)
  assert isinstance(dataset, tf.data.Dataset)
  records = dataset.batch(100).make_one_shot_iterator().get_next()
  positioned = efl.data.FederalDataset(paths, block_ids=['a', 'b'], sample_index=4, with_positions=True)
  block, index, record = positioned.batch(100).make_one_shot_iterator().get_next()
  parsed = tf.io.parse_example(record, {'sample_id': tf.io.FixedLenFeature([1], tf.int64)})
  with tf.Session() as sess:
    got = sess.run(records)
    ids = [tf.train.Example.FromString(r).features.feature['sample_id'].int64_list.value[0] for r in got]
    assert ids == [3, 4, 5, 6, 7, 8, 9]
    b, i, p = sess.run([block, index, parsed])
  assert b.tolist() == [b'a', b'b', b'b', b'b', b'b', b'b']
  assert i.tolist() == [4, 0, 1, 2, 3, 4]
  assert p['sample_id'].ravel().tolist() == [4, 5, 6, 7, 8, 9]


def test_hook_needs_read(tmp_path):
  io = efl.data.DataIO(str(tmp_path), 2)
  with pytest.raises(RuntimeError, match='call read'):
    io.get_hook().begin()


def test_pipelines_leave_no_temporary_files(tmp_path):
  # Autograph converts dataset functions through temporary source files, which a killed process leaves
  # behind; the readers' functions are plain TensorFlow and must not go through it.
  import os
  import subprocess
  import sys

  data, scratch = tmp_path / 'data', tmp_path / 'scratch'
  write_dataset(data, 2, 3)
  scratch.mkdir()
  script = '\n'.join(
    [
      'import os, sys',
      'import tensorflow.compat.v1 as tf',
      'import efl',
      'io = efl.data.DataIO(sys.argv[1], 2)',
      "io.fixedlen_feature('sample_id', 1, dtype=tf.int64)",
      'io.read()',
      'paths = sorted(os.path.join(sys.argv[1], f) for f in os.listdir(sys.argv[1]))',
      'efl.data.FederalDataset(paths)',
      "efl.data.FederalDataset(paths, block_ids=['a', 'b'])",
      'sys.stdout.flush()',
      'os._exit(0)',  # as a killed process: no cleanup at exit
    ]
  )
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, TMPDIR=str(scratch), PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL='2')
  done = subprocess.run(
    [sys.executable, '-c', script, str(data)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120
  )
  assert done.returncode == 0, done.stdout.decode('utf-8', 'replace')[-2000:]
  assert sorted(os.listdir(str(scratch))) == []
