"""Federated batch prediction: `efl.procedure_fn.predict(output_path)` writes one row per example.

The rows are the example's sample id, then each prediction declared with `model.add_prediction(name, tensor)`
in `eval_fn`, in the order the data is read. A file whose name ends in `.tfrecord` (or `.tfrecords`) gets one
`tf.train.Example` per row, any other a CSV file with a header.

Exactly once, restart-safe: the prediction readers are rewound to their first record when prediction starts
(whatever position a checkpoint restored), the rows go to a hidden file next to `output_path`, and that file
is renamed to `output_path` only once the data has ended. A killed run leaves no partial `output_path`; run
again, it writes the same complete file.
"""

import csv
import glob
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf

from efl.mode import MODE, task_scope

_TFRECORD_SUFFIXES = ('.tfrecord', '.tfrecords')


def check_output_path(output_path):
  """Raises a ValueError naming the problem unless `output_path`'s directory exists and is writable."""
  if not output_path or not isinstance(output_path, str):
    raise ValueError(
      'predict needs output_path, a file path (.csv, or .tfrecord for TFRecords), got %r' % (output_path,)
    )
  directory = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(directory):
    raise ValueError(
      'predict: the directory of output_path %r does not exist; create %s first' % (output_path, directory)
    )
  if not os.access(directory, os.W_OK):
    raise ValueError('predict: cannot write output_path %r: directory %s is not writable' % (output_path, directory))
  if os.path.isdir(output_path):
    raise ValueError('predict: output_path %r is a directory; give a file path' % (output_path,))


def _columns(name, width):
  return [name] if width == 1 else ['%s_%d' % (name, i) for i in range(width)]


class _CsvRows(object):
  def __init__(self, f, header):
    self._writer = csv.writer(f)
    self._writer.writerow(header)

  def write(self, ids, values):
    for i, row in zip(ids, values):
      self._writer.writerow([i] + ['%.9g' % v if isinstance(v, float) else v for v in row])


class _ExampleRows(object):
  def __init__(self, f, header):
    self._f = f
    self._header = header
    self._writer = None

  def write(self, ids, values):
    for i, row in zip(ids, values):
      feature = {}
      for key, value in zip(self._header, [i] + list(row)):
        if isinstance(value, bytes):
          feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif isinstance(value, (int, np.integer)):
          feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        else:
          feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
      self._f.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _flatten(name, value, batch):
  """`[batch]` or `[batch, ...]` -> a `[batch, width]` array of Python scalars' dtype."""
  value = np.asarray(value)
  if value.ndim == 0 or value.shape[0] != batch:
    raise ValueError(
      'prediction %r must have one row per example: the batch has %d examples but the '
      'prediction has shape %s' % (name, batch, value.shape)
    )
  return value.reshape(batch, -1)


def _scalar(v):
  return v.item() if hasattr(v, 'item') else v


def run_prediction(model, output_path, max_step=None, task=None):
  """Runs the task's evaluation graph over its eval data once and writes the predictions (module doc)."""
  sample = model.input(MODE.EVAL, task)
  if sample is None:
    raise ValueError('predict: task %r has no EVAL input; its input_fn must return a Sample for MODE.EVAL' % (task,))
  predictions = model.predictions(task)
  writes = bool(predictions)
  if not writes and getattr(model, 'federal_role', 'leader') == 'leader':
    raise ValueError(
      'predict: task %r declares no prediction; call model.add_prediction(name, tensor) in its '
      'eval_fn (e.g. the score of each example)' % (task,)
    )
  ids = sample.sample_ids
  fetches = {'eval': model.eval_op(task) or [], 'predictions': predictions, 'batch': sample.batch_size}
  if ids is not None:
    fetches['ids'] = ids
  sess = model.session
  _rewind_readers(sess, [sample.batch_size] + list(sample.features.values()))
  tmp = None
  rows = 0
  try:
    out = None
    if writes:
      directory = os.path.dirname(os.path.abspath(output_path))
      partial = '.%s.partial-' % os.path.basename(output_path)
      for stale in glob.glob(os.path.join(glob.escape(directory), glob.escape(partial) + '*')):
        os.remove(stale)  # left by a killed run
      tmp = os.path.join(directory, partial + str(os.getpid()))
      tfrecord = output_path.endswith(_TFRECORD_SUFFIXES)
      out = tf.io.TFRecordWriter(tmp) if tfrecord else open(tmp, 'w', newline='')
    writer = None
    steps = 0
    with task_scope(MODE.EVAL, task):
      while max_step is None or steps < max_step:
        try:
          r = sess.run(fetches, feed_dict={model.training_flag: False})
        except tf.errors.OutOfRangeError:
          break
        steps += 1
        batch = int(r['batch'])
        if not writes:
          continue
        values = [_flatten(n, v, batch) for n, v in r['predictions'].items()]
        if writer is None:
          header = [sample.sample_id_name or 'row']
          for name, v in zip(r['predictions'], values):
            header += _columns(name, v.shape[1])
          writer = (_ExampleRows if tfrecord else _CsvRows)(out, header)
        batch_ids = np.asarray(r['ids']).reshape(batch, -1)[:, 0] if 'ids' in r else np.arange(rows, rows + batch)
        table = np.concatenate(values, axis=1) if len(values) > 1 else values[0]
        writer.write([_scalar(i) for i in batch_ids], [[_scalar(v) for v in row] for row in table])
        rows += batch
    if out is not None:
      out.close()
      out = None
      os.replace(tmp, output_path)
      tmp = None
      tf.logging.info('predict: wrote %d rows (%d steps) to %s', rows, steps, output_path)
    else:
      tf.logging.info('predict: ran %d steps; this party declared no prediction and writes nothing', steps)
  finally:
    if out is not None:
      out.close()
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)
  return rows


def _rewind_readers(sess, tensors):
  """Starts the efl.data readers behind `tensors` at their first record (other inputs start where they are)."""
  if 'efl.data' not in sys.modules:
    return
  readers = sys.modules['efl.data'].readers_feeding(tensors)

  def rewind(step_context):
    for reader in readers:
      reader.rewind(step_context.session)

  if readers:
    sess.run_step_fn(rewind)
    tf.logging.info('predict: readers %s start at their first record', [r.name for r in readers])
