"""Helpers for the data reader tests: TFRecord files in tmp dirs, sessions, connected communicator pairs."""

import os
import threading

import tensorflow.compat.v1 as tf

from ports import pair  # noqa: E402

tf.disable_eager_execution()


def example(sample_id, offset=0, dense_len=3, **extra):
  """A tf.Example with `sample_id`, `dense` = [sample_id + offset] * dense_len, `label`, plus `extra` lists."""
  feature = {
    'sample_id': tf.train.Feature(int64_list=tf.train.Int64List(value=[sample_id])),
    'dense': tf.train.Feature(float_list=tf.train.FloatList(value=[float(sample_id + offset)] * dense_len)),
    'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[sample_id % 2])),
  }
  for name, values in extra.items():
    if values and isinstance(values[0], bytes):
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    elif values and isinstance(values[0], float):
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    else:
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_records(path, records, compression=''):
  """Writes serialized records to `path` (creating its directory)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression)) as writer:
    for record in records:
      writer.write(record)
  return path


def write_dataset(base, num_files, per_file, offset=0, name='data_{}.tfrd', compression='', **kwargs):
  """`num_files` files of `per_file` records; sample ids run 0, 1, ... across the files in order."""
  paths = []
  for f in range(num_files):
    ids = range(f * per_file, (f + 1) * per_file)
    paths.append(
      write_records(os.path.join(str(base), name.format(f)), [example(i, offset, **kwargs) for i in ids], compression)
    )
  return paths


def declare(io, varlen=False):
  io.fixedlen_feature('sample_id', 1, dtype=tf.int64)
  io.fixedlen_feature('dense', 3, dtype=tf.float32)
  io.fixedlen_feature('label', 1, dtype=tf.int64)
  if varlen:
    io.varlen_feature('ids', dtype=tf.int64)


def read_all(features, hooks, max_batches=1000, session_creator=None):
  """Runs a MonitoredSession until the data ends; returns the list of fetched batches."""
  batches = []
  with tf.train.MonitoredSession(session_creator=session_creator, hooks=hooks) as sess:
    while not sess.should_stop() and len(batches) < max_batches:
      batches.append(sess.run(features))
  return batches


def run_in_threads(*fns, timeout=60):
  """Runs the functions concurrently; returns their results, re-raising the first exception."""
  results = [None] * len(fns)
  errors = [None] * len(fns)

  def run(i, fn):
    try:
      results[i] = fn()
    except BaseException as err:  # pylint: disable=broad-except
      errors[i] = err

  threads = [threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout)
    if t.is_alive():
      raise TimeoutError('a party did not finish within %d s' % timeout)
  return results, errors


class CommPairs(object):
  """Makes leader/follower `efl.Communicator` pairs on ports they pick and closes them at teardown."""

  def __init__(self):
    self.comms = []

  def make(self):
    leader, follower = pair()
    self.comms += [leader, follower]
    return leader, follower

  @staticmethod
  def connect(leader, follower):
    _, errors = run_in_threads(lambda: leader.connect(timeout_s=20), lambda: follower.connect(timeout_s=20))
    for err in errors:
      if err is not None:
        raise err

  def close_all(self):
    run_in_threads(*[c.close for c in self.comms], timeout=30)
