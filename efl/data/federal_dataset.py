"""`FederalDataset`: the records of a list of blocks, starting at a record index of the first block.

It is also the building block of `DataIO`: every record is read together with its *position code*,
`block << INDEX_BITS | record_index`, which is what makes resuming exact.
"""

import tensorflow.compat.v1 as tf
from tensorflow.python.data.ops import dataset_ops
from tensorflow.python.data.ops import readers

from efl.data import files as files_lib

# A position code packs a block number (23 bits) and a record index inside the block (40 bits) into an int64.
INDEX_BITS = 40
INDEX_MASK = (1 << INDEX_BITS) - 1
MAX_BLOCK = (1 << (63 - INDEX_BITS)) - 1


def plain_tf(fn):
  """Marks a dataset function as plain TensorFlow.

  Autograph would convert it through a temporary source file (left behind when the process is killed) to find no
  Python control flow to convert.
  """
  return tf.autograph.experimental.do_not_convert(fn)


def _single_file_records(path, compression):
  """The records of one file."""
  # `tf.data.TFRecordDataset` wraps even a single file name in a flat_map over a file list: one more dataset
  # layer per record. Its single-file reader is used directly when this TF version has it.
  single_file = getattr(readers, '_TFRecordDataset', None)
  if single_file is not None:
    return single_file(path, compression)
  return tf.data.TFRecordDataset(path, compression_type=compression)


def block_records(path, start, compression, block):
  """The records of one block from record `start` on, each paired with its position code.

  Args:
      path: scalar `tf.string`, the file.
      start: scalar `tf.int64`, records to skip at the start of the file.
      compression: scalar `tf.string`, '', 'ZLIB' or 'GZIP'.
      block: scalar `tf.int64`, the block number stored in the codes (at most `MAX_BLOCK`).

  Returns:
      A dataset of `(code, record)`, with `code = block << INDEX_BITS | record_index`.
  """
  records = _single_file_records(path, compression).skip(start)
  base = block * (1 << INDEX_BITS)
  codes = tf.data.Dataset.range(base + start, base + (1 << INDEX_BITS))
  return tf.data.Dataset.zip((codes, records))


def block_batches(path, start, compression, block, batch_size):
  """The records of one block from record `start` on, in batches of at most `batch_size`, with their codes.

  The batched form of `block_records`: pairing codes with records batch by batch instead of record by record
  saves one dataset layer per record, which is most of what positions cost. `rebatch` makes the batches of
  consecutive blocks exactly `batch_size` long.

  A scan counts the records and cuts the first `start` off: `skip` would add a layer per record and
  `enumerate` costs about a millisecond per block to set up, which for files of some thousand records
  is more than reading them.

  Returns:
      A dataset of `(codes, records)`, two vectors of one length (at most `batch_size`; empty while the
      first `start` records are cut).
  """
  first = block * (1 << INDEX_BITS)

  def step(seen, records):
    size = tf.size(records, out_type=tf.int64)
    cut = tf.clip_by_value(start - seen, 0, size)
    return seen + size, (first + seen + cut + tf.range(size - cut), records[cut:])

  return _scan(_single_file_records(path, compression).batch(batch_size), tf.constant(0, tf.int64), step)


def _scan(dataset, initial, step):
  """`dataset.scan(initial, step)`, where this TF version has it (TF 1.15 only has the experimental form)."""
  if hasattr(tf.data.Dataset, 'scan'):
    return dataset.scan(initial, plain_tf(step))
  return dataset.apply(tf.data.experimental.scan(initial, plain_tf(step)))


def rebatch(dataset, batch_size, drop_remainder):
  """Regroups the `(codes, records)` batches of `dataset` into batches of exactly `batch_size`, in order.

  Each input batch is at most `batch_size` long; the last output batch is shorter unless `drop_remainder`.
  """
  if hasattr(tf.data.Dataset, 'rebatch'):  # TF >= 2.8: in C++, with one copy
    return dataset.rebatch(batch_size, drop_remainder=drop_remainder)
  batch_size = tf.constant(batch_size, tf.int64)
  # A marker after the last batch flushes what is left.
  flush = tf.data.Dataset.from_tensors((True, tf.zeros([0], tf.int64), tf.zeros([0], tf.string)))
  marked = dataset.map(plain_tf(lambda c, r: (False, c, r))).concatenate(flush)

  def step(left, element):
    last, codes, records = element
    codes = tf.concat([left[0], codes], 0)
    records = tf.concat([left[1], records], 0)
    size = tf.size(codes, out_type=tf.int64)
    # Left over plus one batch is under two batches: at most one full batch leaves per element.
    take = batch_size * tf.cast(size >= batch_size, tf.int64)
    if not drop_remainder:  # at the marker, size < batch_size: all of it
      take += tf.cast(last, tf.int64) * (size - take)
    return (codes[take:], records[take:]), (codes[:take], records[:take])

  initial = (tf.zeros([0], tf.int64), tf.zeros([0], tf.string))
  out = _scan(marked, initial, step)
  out = out.filter(plain_tf(lambda c, r: tf.size(c) > 0))
  if drop_remainder:
    size = tf.get_static_value(batch_size)
    out = out.map(plain_tf(lambda c, r: (tf.ensure_shape(c, [size]), tf.ensure_shape(r, [size]))))
  return out


class FederalDataset(dataset_ops.DatasetV1Adapter):
  """A dataset of the serialized records of `filenames`, read in order, the first one from `sample_index` on.

  Usable on its own like a `tf.data.TFRecordDataset`:

      ds = FederalDataset(['a.tfrecord', 'b.tfrecord'], sample_index=3)  # skips a's first 3 records

  With `with_positions=True` each element is `(block_id, record_index, record)` instead, where `block_id`
  names the file (`block_ids[i]`, default the file name) and `record_index` counts from the start of the
  file, so a position can be saved and a later `FederalDataset` started from it.

  Args:
      filenames: `list` of `str`, the files in reading order.
      block_ids: `list` of `str` (same length) naming the files in positions; default `filenames`.
      sample_index: `int` or scalar `tf.int64`, records of the first file to skip. Skipping past its end simply
          continues with the next file.
      compression_type: '', 'ZLIB', 'GZIP', or None to choose per file from its extension (.gz, .zlib).
      with_positions: `bool`, whether elements carry their position.

  Raises:
      ValueError: no file, `block_ids` of another length, or an unknown compression type.
  """

  def __init__(self, filenames, block_ids=None, sample_index=0, compression_type='', with_positions=False):
    if isinstance(filenames, (str, bytes)):
      filenames = [filenames]
    filenames = [f.decode() if isinstance(f, bytes) else str(f) for f in filenames]
    if not filenames:
      raise ValueError('FederalDataset needs at least one file name. Found an empty list.')
    if block_ids is None:
      block_ids = filenames
    block_ids = [b.decode() if isinstance(b, bytes) else str(b) for b in block_ids]
    if len(block_ids) != len(filenames):
      raise ValueError(
        'block_ids must name every file: found {} block ids for {} files.'.format(len(block_ids), len(filenames))
      )
    compression_type = files_lib.check_compression_type(compression_type)
    compressions = [files_lib.compression_of(f, compression_type) for f in filenames]
    sample_index = tf.cast(sample_index, tf.int64)
    blocks = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(filenames), dtype=tf.int64), tf.constant(filenames), tf.constant(compressions))
    )

    def start_of(block):
      return sample_index * tf.cast(tf.equal(block, 0), tf.int64)

    if with_positions:
      ids = tf.constant(block_ids)
      dataset = blocks.flat_map(plain_tf(lambda b, f, c: block_records(f, start_of(b), c, b))).map(
        plain_tf(lambda code, record: (tf.gather(ids, code // (1 << INDEX_BITS)), code % (1 << INDEX_BITS), record))
      )
    else:
      dataset = blocks.flat_map(plain_tf(lambda b, f, c: _single_file_records(f, c).skip(start_of(b))))
    super(FederalDataset, self).__init__(dataset)
