"""Throughput of `efl.data.DataIO.read()` against a bare tf.data pipeline on the same files.

Writes synthetic criteo-like records (sample_id, dense[10], label, 21 bytes features) into a temp dir, then
reads them all, alternating between the two pipelines and keeping the best of a few repeats of each:

- raw:    TFRecordDataset(files) -> batch(1000) -> map(parse_example)
- dataio: DataIO(dir, 1000).read() (default prefetch=1), which also records the exact position of every batch

Prints `BENCH dataio_records_per_s`, `BENCH raw_records_per_s` and `BENCH dataio_ratio` (target >= 0.9), plus
the ratio against raw with the same prefetch for reference.

Usage: python benchmarks/dataio.py [--records 200000] [--files 20] [--repeats 3] [--batch 1000]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import efl.data  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_BYTES_FEATURES = 21


def _varint(value):
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _field(number, payload):
  """A length-delimited protobuf field."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(name, feature):
  """One `map<string, Feature>` entry of tf.train.Features."""
  return _field(1, _field(1, name.encode()) + _field(2, feature))


def _int64_feature(values):
  return _field(3, _field(1, b''.join(_varint(v) for v in values)))


def _float_feature(array):
  return _field(2, _field(1, array.astype('<f4').tobytes()))


def _bytes_feature(value):
  return _field(1, _field(1, value))


def serialize(sample_id, dense, label, tokens):
  """A serialized tf.train.Example, encoded directly (reference encoder for one record)."""
  entries = [
    _entry('sample_id', _int64_feature([sample_id])),
    _entry('dense', _float_feature(dense)),
    _entry('label', _int64_feature([label])),
  ]
  entries += [_entry('feature%d' % k, _bytes_feature(token)) for k, token in enumerate(tokens)]
  return _field(1, b''.join(entries))


def _fixed_part(dense, labels, tokens):
  """The entries after sample_id for many records at once: one uint8 row per record.

  Their layout is the same for every record (10 floats, a 0/1 label, 21 tokens of 8 bytes), so a template
  row is encoded once and only the value bytes are filled in.
  """
  count = len(dense)
  parts = [(_entry('dense', _float_feature(np.zeros(10, np.float32))), dense.astype('<f4').view(np.uint8))]
  parts.append((_entry('label', _int64_feature([0])), labels.astype(np.uint8)[:, None]))
  for k in range(NUM_BYTES_FEATURES):
    parts.append((_entry('feature%d' % k, _bytes_feature(b'0' * 8)), tokens[:, k, :]))
  rows = []
  for template, values in parts:
    head = np.frombuffer(template[: len(template) - values.shape[1]], np.uint8)
    rows.append(np.broadcast_to(head, (count, len(head))))
    rows.append(values)
  return np.ascontiguousarray(np.concatenate(rows, axis=1))


def write_data(directory, num_records, num_files):
  rng = np.random.RandomState(0)
  per_file = -(-num_records // num_files)
  sample_id = 0
  for f in range(num_files):
    count = min(per_file, num_records - sample_id)
    dense = rng.rand(count, 10).astype(np.float32)
    labels = rng.randint(0, 2, size=count)
    tokens = rng.randint(ord('a'), ord('z') + 1, size=(count, NUM_BYTES_FEATURES, 8)).astype(np.uint8)
    rest = _fixed_part(dense, labels, tokens)
    with tf.io.TFRecordWriter(os.path.join(directory, 'data_%03d.tfrd' % f)) as writer:
      for i in range(count):
        payload = _entry('sample_id', _int64_feature([sample_id])) + rest[i].tobytes()
        writer.write(b'\x0a' + _varint(len(payload)) + payload)
        sample_id += 1
  return sample_id


def feature_spec():
  spec = {
    'sample_id': tf.io.FixedLenFeature([1], tf.int64),
    'dense': tf.io.FixedLenFeature([10], tf.float32),
    'label': tf.io.FixedLenFeature([1], tf.int64),
  }
  for k in range(NUM_BYTES_FEATURES):
    spec['feature%d' % k] = tf.io.FixedLenFeature([1], tf.string)
  return spec


def _drain(sess, fetch, batch):
  start, count = time.time(), 0
  try:
    while True:
      count += len(sess.run(fetch)['sample_id'])
  except tf.errors.OutOfRangeError:
    pass
  return count, count / (time.time() - start)


def run_raw(directory, batch, prefetch=0):
  with tf.Graph().as_default():
    files = sorted(os.path.join(directory, f) for f in os.listdir(directory))
    spec = feature_spec()
    dataset = tf.data.TFRecordDataset(files).batch(batch).map(lambda r: tf.io.parse_example(r, spec))
    if prefetch:
      dataset = dataset.prefetch(prefetch)
    iterator = tf.data.make_initializable_iterator(dataset)
    features = iterator.get_next()
    with tf.Session() as sess:
      sess.run(iterator.initializer)
      return _drain(sess, features, batch)


def run_dataio(directory, batch):
  with tf.Graph().as_default():
    io = efl.data.DataIO(directory, batch)
    for name, feature in feature_spec().items():
      io.fixedlen_feature(name, feature.shape[0], dtype=feature.dtype)
    features = io.read()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      io.initialize_iter(sess)
      result = _drain(sess, features, batch)
      io.stop()
      return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--records', type=int, default=200000)
  parser.add_argument('--files', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--batch', type=int, default=1000)
  args = parser.parse_args(argv)
  tf.disable_eager_execution()
  tf.get_logger().setLevel('ERROR')
  directory = tempfile.mkdtemp(prefix='efl_dataio_bench_')
  try:
    start = time.time()
    total = write_data(directory, args.records, args.files)
    print('wrote %d records in %d files in %.1f s' % (total, args.files, time.time() - start))
    best = {'raw': 0.0, 'raw_prefetch': 0.0, 'dataio': 0.0}
    runners = {
      'raw': lambda: run_raw(directory, args.batch),
      'raw_prefetch': lambda: run_raw(directory, args.batch, prefetch=1),
      'dataio': lambda: run_dataio(directory, args.batch),
    }
    for repeat in range(args.repeats):
      for name, runner in runners.items():
        count, rate = runner()
        if count != total:
          raise RuntimeError('%s read %d records, expected %d' % (name, count, total))
        best[name] = max(best[name], rate)
        print('repeat %d %-12s %10.0f records/s' % (repeat, name, rate))
    print('BENCH raw_records_per_s %.0f' % best['raw'])
    print('BENCH dataio_records_per_s %.0f' % best['dataio'])
    print('BENCH dataio_ratio_vs_raw_prefetch %.3f' % (best['dataio'] / best['raw_prefetch']))
    print('BENCH dataio_ratio %.3f' % (best['dataio'] / best['raw']))
  finally:
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
  main()
