"""Turns the Kaggle Criteo `train.txt` into the TFRecords of the federated Criteo example.

Input: `train.txt` of the Criteo Display Advertising Challenge (Kaggle): one example per line, 40
tab-separated fields: the label (0/1), 13 integer features I1..I13, 26 categorical features C1..C26 (hashed,
8 hex characters). An empty field is a missing value.

Processing:

1. Drop the mostly-empty columns I1, I10, I12, C19, C20, C22, C25, C26 (fields 1, 10, 12, 32, 33, 35, 38, 39
   of the 40), which leaves the label, 10 integer and 21 categorical columns, and drop every row that still
   has an empty field.
2. Balance the classes: keep `--sample_size` rows of each class, chosen at random (default: as many as the
   rarer class has).
3. z-score the 10 integer columns (mean and population standard deviation over the kept rows).
4. Shuffle, split into train and test (`--test_fraction` of the rows go to test).
5. Write `{leader,follower}_{train,test}/data_{i}.tfrd` with `--rows_per_file` records per file. The leader
   gets `sample_id` (int64, row index within the split), `dense` (float[10]) and `label` (int64); the follower
   gets `sample_id` and `feature0`..`feature20` (bytes: the raw categorical strings). Record i of a leader
   file and record i of the follower file of the same name describe the same example.

The input is streamed in chunks, never loaded whole: pass 1 counts the complete rows of each class, pass 2
parses the chosen rows into scratch arrays on disk (about 250 bytes per kept row, inside `--output_dir`,
removed at the end), pass 3 writes the TFRecords. Every pass runs on all cores. Memory holds a few chunks
and a few tens of bytes per complete row. The output appears only once complete: it is written into a hidden
directory inside `--output_dir` and renamed into place at the end.

Input and output are relative to the directory the script is run from (as the example's readers, which
read `./leader_train` ...), wherever the script itself lies. Usage (in the folder that holds train.txt)::

  python generate_data.py
  python generate_data.py --input /data/train.txt --output_dir /data/criteo --workers 8
"""

from __future__ import absolute_import, division, print_function

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from efl.data import record_encoding

NUM_FIELDS = 40
DROPPED_FIELDS = (1, 10, 12, 32, 33, 35, 38, 39)
KEPT_FIELDS = tuple(i for i in range(1, NUM_FIELDS) if i not in DROPPED_FIELDS)
DENSE_FIELDS = tuple(i for i in KEPT_FIELDS if i <= 13)
CATEGORICAL_FIELDS = tuple(i for i in KEPT_FIELDS if i >= 14)
SPLITS = ('leader_train', 'follower_train', 'leader_test', 'follower_test')

DEFAULT_TEST_FRACTION = 0.32  # EFLS: 3.8M test rows out of 11.8M
DEFAULT_ROWS_PER_FILE = 100000
DEFAULT_CHUNK_BYTES = 32 << 20

_DOWNLOAD_HINT = (
  'Download train.txt of the Criteo Display Advertising Challenge from Kaggle '
  '(e.g. https://www.kaggle.com/mrkmakr/criteo-dataset), put it next to generate_data.py or pass '
  '--input PATH.'
)


class CriteoFormatError(ValueError):
  """The input is not in the Kaggle Criteo train.txt format; the message names the line."""


# --------------------------------------------------------------------------------------------------------------
# Parsing one chunk of lines.


class _ChunkError(Exception):
  """A format error at a line of a chunk (0-based within the chunk); turned into CriteoFormatError."""

  def __init__(self, local_line, message):
    super(_ChunkError, self).__init__(local_line, message)
    self.local_line = local_line
    self.message = message


def _read_chunk(path, start, end):
  with open(path, 'rb') as f:
    f.seek(start)
    return f.read(end - start)


def _split_fields(data):
  """Locates the fields of every line of `data`.

  Returns:
    (buf, starts, lengths): `buf` the bytes as uint8, `starts`/`lengths` int64 arrays [lines, 40].

  Raises:
    _ChunkError: a line does not have 40 fields.
  """
  buf = np.frombuffer(data, dtype=np.uint8)
  if buf.size and buf[-1] != 10:  # last line of the file without its newline
    buf = np.concatenate([buf, np.array([10], dtype=np.uint8)])
  is_newline = buf == 10
  delims = np.flatnonzero(is_newline | (buf == 9))
  newline_at = np.flatnonzero(is_newline[delims])  # index in `delims` of each line end
  lines = newline_at.size
  fields_per_line = np.diff(np.concatenate([[-1], newline_at]))
  if lines and (fields_per_line != NUM_FIELDS).any():
    bad = int(np.flatnonzero(fields_per_line != NUM_FIELDS)[0])
    raise _ChunkError(
      bad, 'found %d tab-separated field(s), expected %d (label, I1..I13, C1..C26)' % (fields_per_line[bad], NUM_FIELDS)
    )
  ends = delims.reshape(lines, NUM_FIELDS)
  starts = np.empty_like(ends)
  starts[:, 1:] = ends[:, :-1] + 1
  starts[0:1, 0] = 0
  starts[1:, 0] = ends[:-1, -1] + 1
  return buf, starts, ends - starts


def _labels_and_complete(buf, starts, lengths):
  """Returns (label as bool array, row-has-no-missing-kept-field array); checks the labels."""
  label_char = buf[starts[:, 0]]
  bad = (lengths[:, 0] != 1) | ((label_char != ord('0')) & (label_char != ord('1')))
  if bad.any():
    row = int(np.flatnonzero(bad)[0])
    raise _ChunkError(
      row,
      'the label (first field) must be 0 or 1, found %r'
      % bytes(buf[starts[row, 0] : starts[row, 0] + lengths[row, 0]]),
    )
  complete = (lengths[:, KEPT_FIELDS] > 0).all(axis=1)
  return label_char == ord('1'), complete


def _gather_strings(buf, starts, lengths, width):
  """Copies the fields at (starts, lengths) [rows, cols] into a fixed-width 'S{width}' array [rows, cols]."""
  offsets = np.arange(width)
  index = starts[..., None] + offsets
  valid = offsets < lengths[..., None]
  out = np.where(valid, buf[np.minimum(index, buf.size - 1)], 0).astype(np.uint8)
  return out.view('S%d' % width)[..., 0]


def _scan_chunk(task):
  """Pass 1: counts lines and complete rows per class of one chunk."""
  path, start, end = task
  try:
    buf, starts, lengths = _split_fields(_read_chunk(path, start, end))
    positive, complete = _labels_and_complete(buf, starts, lengths)
  except _ChunkError as e:
    return {'error': (e.local_line, e.message), 'bytes': end - start}
  cat_lengths = lengths[:, CATEGORICAL_FIELDS][complete]
  return {
    'error': None,
    'bytes': end - start,
    'lines': int(starts.shape[0]),
    'positives': int((positive & complete).sum()),
    'negatives': int((~positive & complete).sum()),
    'cat_width': int(cat_lengths.max()) if cat_lengths.size else 1,
  }


def _extract_chunk(task):
  """Pass 2: parses the chosen rows of one chunk into the scratch arrays; returns moment sums of the dense."""
  (path, start, end, first_line, pos_ordinals, pos_targets, neg_ordinals, neg_targets, scratch) = task
  try:
    buf, starts, lengths = _split_fields(_read_chunk(path, start, end))
    positive, complete = _labels_and_complete(buf, starts, lengths)
  except _ChunkError as e:  # the file changed since pass 1
    return {'error': (first_line + e.local_line, e.message), 'bytes': end - start}
  rows = np.concatenate(
    [np.flatnonzero(positive & complete)[pos_ordinals], np.flatnonzero(~positive & complete)[neg_ordinals]]
  )
  targets = np.concatenate([pos_targets, neg_targets])
  result = {
    'error': None,
    'bytes': end - start,
    'count': rows.size,
    'sum': np.zeros(len(DENSE_FIELDS)),
    'sumsq': np.zeros(len(DENSE_FIELDS)),
  }
  if not rows.size:
    return result
  dense_starts = starts[np.ix_(rows, DENSE_FIELDS)]
  dense_lengths = lengths[np.ix_(rows, DENSE_FIELDS)]
  dense_text = _gather_strings(buf, dense_starts, dense_lengths, int(dense_lengths.max()))
  try:
    dense = dense_text.astype(np.float64)
  except ValueError:
    for r in range(rows.size):  # find the culprit for the message
      for c in range(len(DENSE_FIELDS)):
        try:
          float(dense_text[r, c])
        except ValueError:
          return {
            'error': (
              first_line + int(rows[r]),
              'integer feature I%d must be a number, found %r' % (DENSE_FIELDS[c], bytes(dense_text[r, c])),
            ),  # numpy 2 reprs np.bytes_(...)
            'bytes': end - start,
          }
    raise
  cat = _gather_strings(
    buf, starts[np.ix_(rows, CATEGORICAL_FIELDS)], lengths[np.ix_(rows, CATEGORICAL_FIELDS)], scratch['cat_width']
  )
  arrays = _open_scratch(scratch, 'r+')
  arrays['dense'][targets] = dense
  arrays['label'][targets] = positive[rows]
  arrays['cat'][targets] = cat
  for array in arrays.values():
    array.flush()
  # Sums around a per-chunk shift keep the variance accurate for large counts (Chan et al. combine below).
  result['shift'] = dense.mean(axis=0)
  centered = dense - result['shift']
  result['sum'] = centered.sum(axis=0)
  result['sumsq'] = (centered * centered).sum(axis=0)
  return result


def _open_scratch(scratch, mode):
  rows = scratch['rows']
  directory = scratch['dir']
  return {
    'dense': np.memmap(os.path.join(directory, 'dense.f64'), np.float64, mode, shape=(rows, len(DENSE_FIELDS))),
    'label': np.memmap(os.path.join(directory, 'label.u8'), np.uint8, mode, shape=(rows,)),
    'cat': np.memmap(
      os.path.join(directory, 'cat.bin'), 'S%d' % scratch['cat_width'], mode, shape=(rows, len(CATEGORICAL_FIELDS))
    ),
  }


def _write_file(task):
  """Pass 3: writes one leader file and the follower file of the same name; returns the number of records."""
  out_dir, split, index, first, count, split_start, mean, std, scratch = task
  arrays = _open_scratch(scratch, 'r')
  rows = slice(first, first + count)
  name = 'data_%d.tfrd' % index
  ids = record_encoding.int64_field(b'sample_id', np.arange(first - split_start, first - split_start + count))
  record_encoding.write_examples(
    os.path.join(out_dir, 'leader_' + split, name),
    [
      ids,
      record_encoding.float_field(b'dense', (arrays['dense'][rows] - mean) / std),
      record_encoding.int64_field(b'label', arrays['label'][rows]),
    ],
  )
  # Each value ends before its NUL padding: the TSV text never holds a NUL.
  cat = arrays['cat'][rows]
  record_encoding.write_examples(
    os.path.join(out_dir, 'follower_' + split, name),
    [ids] + [record_encoding.bytes_field(b'feature%d' % j, cat[:, j]) for j in range(len(CATEGORICAL_FIELDS))],
  )
  return count


# --------------------------------------------------------------------------------------------------------------
# Driver.


class _Progress(object):
  """A plain progress line on stderr: redrawn in place on a terminal, one line per 10% otherwise."""

  def __init__(self, title, total, enabled):
    self._title = title
    self._total = max(total, 1)
    self._enabled = enabled
    self._tty = enabled and sys.stderr.isatty()
    self._start = time.time()
    self._last_draw = 0.0
    self._last_decile = -1

  def update(self, done, extra=''):
    if not self._enabled:
      return
    fraction = min(done / self._total, 1.0)
    now = time.time()
    text = '%s: %5.1f%% %s(%.1f s)' % (self._title, 100.0 * fraction, extra + ' ' if extra else '', now - self._start)
    if self._tty:
      if now - self._last_draw >= 0.2 or fraction >= 1.0:
        sys.stderr.write('\r' + text.ljust(79))
        sys.stderr.flush()
        self._last_draw = now
    elif int(fraction * 10) > self._last_decile:
      self._last_decile = int(fraction * 10)
      sys.stderr.write(text + '\n')
      sys.stderr.flush()

  def close(self):
    if self._tty:
      sys.stderr.write('\n')
      sys.stderr.flush()


def _chunk_bounds(path, chunk_bytes):
  """Splits the file into byte ranges of about `chunk_bytes` that end right after a newline."""
  size = os.path.getsize(path)
  bounds = []
  with open(path, 'rb') as f:
    start = 0
    while start < size:
      end = min(start + chunk_bytes, size)
      if end < size:
        f.seek(end)
        end += len(f.readline())
      bounds.append((start, end))
      start = end
  return bounds


def _split_by_chunk(ordinals, counts):
  """Splits sorted global ordinals among chunks holding `counts` candidates each; returns local ordinals."""
  chunk_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  cuts = np.searchsorted(ordinals, chunk_starts[1:])
  return [part - base for part, base in zip(np.split(ordinals, cuts), chunk_starts)]


def _remove_tree(path):
  if path and os.path.isdir(path):
    shutil.rmtree(path, ignore_errors=True)


def generate(
  input_path,
  output_dir,
  rows_per_file=DEFAULT_ROWS_PER_FILE,
  sample_size=None,
  seed=0,
  test_fraction=DEFAULT_TEST_FRACTION,
  workers=None,
  chunk_bytes=DEFAULT_CHUNK_BYTES,
  progress=True,
):
  """Converts a Criteo train.txt into the example's TFRecords (see the module docstring).

  Args:
    input_path: the Kaggle train.txt (or a file in the same format).
    output_dir: where `{leader,follower}_{train,test}/` are written; existing ones are replaced.
    rows_per_file: records per TFRecord file.
    sample_size: rows kept per class; None keeps as many as the rarer class has. A larger value is capped
      to that number (with a note on stderr).
    seed: seed of the sampling and the shuffle.
    test_fraction: fraction of the kept rows that go to the test split, in (0, 1).
    workers: processes for parsing and writing; None uses every core. More than one forks this process:
      call it from a process that runs no TensorFlow session (the command line does).
    chunk_bytes: bytes of input handed to a worker at a time.
    progress: print progress to stderr.

  Returns:
    A dict of figures: `input_rows`, `complete_positives`, `complete_negatives`, `per_class`, `train_rows`,
    `test_rows`, `train_files`, `test_files`, `dense_mean`, `dense_std`.

  Raises:
    IOError: the input file does not exist.
    CriteoFormatError: a line is not in the Criteo format (the message gives the line number).
    ValueError: a bad argument, or too few complete rows.
  """
  if not os.path.isfile(input_path):
    raise IOError('Criteo input not found: %s. %s' % (input_path, _DOWNLOAD_HINT))
  if rows_per_file <= 0:
    raise ValueError('rows_per_file must be positive. Found %r.' % (rows_per_file,))
  if sample_size is not None and sample_size <= 0:
    raise ValueError('sample_size must be positive. Found %r.' % (sample_size,))
  if not 0.0 < test_fraction < 1.0:
    raise ValueError('test_fraction must be in (0, 1). Found %r.' % (test_fraction,))
  if chunk_bytes <= 0:
    raise ValueError('chunk_bytes must be positive. Found %r.' % (chunk_bytes,))
  workers = workers or os.cpu_count() or 1
  if workers <= 0:
    raise ValueError('workers must be positive. Found %r.' % (workers,))

  bounds = _chunk_bounds(input_path, chunk_bytes)
  total_bytes = bounds[-1][1] if bounds else 0
  workers = min(workers, max(len(bounds), 1))
  os.makedirs(output_dir, exist_ok=True)
  scratch_dir = out_dir = None
  pool = multiprocessing.Pool(workers) if workers > 1 else None
  imap = pool.imap if pool else map
  try:
    # Pass 1: count complete rows per class, per chunk.
    bar = _Progress('pass 1/3 scanning %s' % os.path.basename(input_path), total_bytes, progress)
    scans, lines, done = [], 0, 0
    for scan in imap(_scan_chunk, [(input_path, s, e) for s, e in bounds]):
      if scan['error']:
        raise CriteoFormatError('%s, line %d: %s.' % (input_path, lines + scan['error'][0] + 1, scan['error'][1]))
      scan['first_line'] = lines
      scans.append(scan)
      lines += scan['lines']
      done += scan['bytes']
      bar.update(done, '%d rows' % lines)
    bar.close()
    positives = sum(s['positives'] for s in scans)
    negatives = sum(s['negatives'] for s in scans)
    available = min(positives, negatives)
    if available == 0:
      raise ValueError(
        '%s has %d rows; after dropping rows with missing values %d positive and %d negative '
        'rows remain: both classes need at least one.' % (input_path, lines, positives, negatives)
      )
    per_class = available if sample_size is None else min(sample_size, available)
    if sample_size is not None and sample_size > available:
      sys.stderr.write(
        'note: asked for %d rows per class but only %d positive and %d negative complete '
        'rows exist; keeping %d per class.\n' % (sample_size, positives, negatives, available)
      )
    total = 2 * per_class
    test_rows = int(round(total * test_fraction))
    train_rows = total - test_rows
    if test_rows == 0 or train_rows == 0:
      raise ValueError(
        'test_fraction=%r of %d kept rows leaves %d train and %d test rows: both must be '
        'non-empty; change test_fraction or use more data.' % (test_fraction, total, train_rows, test_rows)
      )

    # Choose the rows and their shuffled output position.
    rng = np.random.RandomState(seed)
    chosen_pos = np.sort(rng.choice(positives, per_class, replace=False))
    chosen_neg = np.sort(rng.choice(negatives, per_class, replace=False))
    target = rng.permutation(total)
    pos_local = _split_by_chunk(chosen_pos, [s['positives'] for s in scans])
    neg_local = _split_by_chunk(chosen_neg, [s['negatives'] for s in scans])
    pos_target = np.split(target[:per_class], np.cumsum([p.size for p in pos_local])[:-1])
    neg_target = np.split(target[per_class:], np.cumsum([n.size for n in neg_local])[:-1])

    # Pass 2: parse the chosen rows into scratch arrays indexed by output position.
    scratch_dir = tempfile.mkdtemp(prefix='.criteo_scratch_', dir=output_dir)
    scratch = {'dir': scratch_dir, 'rows': total, 'cat_width': max(s['cat_width'] for s in scans)}
    for array in _open_scratch(scratch, 'w+').values():
      array.flush()
    tasks = [
      (input_path, s, e, scan['first_line'], pos_local[i], pos_target[i], neg_local[i], neg_target[i], scratch)
      for i, ((s, e), scan) in enumerate(zip(bounds, scans))
    ]
    bar = _Progress('pass 2/3 parsing chosen rows', total_bytes, progress)
    count, shifted = 0, []
    done = 0
    for part in imap(_extract_chunk, tasks):
      if part['error']:
        raise CriteoFormatError('%s, line %d: %s.' % (input_path, part['error'][0] + 1, part['error'][1]))
      if part['count']:
        shifted.append(part)
      count += part['count']
      done += part['bytes']
      bar.update(done)
    bar.close()
    if count != total:
      raise RuntimeError(
        '%s changed while being read: parsed %d chosen rows, expected %d.' % (input_path, count, total)
      )
    # Combine per-chunk moments (shifted sums) into the population mean and std over the kept rows.
    mean = sum(p['count'] * p['shift'] + p['sum'] for p in shifted) / total
    m2 = sum(
      p['sumsq'] + p['count'] * np.square(p['shift'] - mean) + 2.0 * (p['shift'] - mean) * p['sum'] for p in shifted
    )
    std = np.sqrt(np.maximum(m2 / total, 0.0))
    # A constant column would divide by zero; it stays centred at 0 instead.
    safe_std = np.where(std > 0, std, 1.0)

    # Pass 3: write the TFRecord files.
    out_dir = tempfile.mkdtemp(prefix='.criteo_output_', dir=output_dir)
    file_tasks = []
    for split, split_start, split_rows in (('train', 0, train_rows), ('test', train_rows, test_rows)):
      for side in ('leader', 'follower'):
        os.makedirs(os.path.join(out_dir, '%s_%s' % (side, split)))
      for f, first in enumerate(range(split_start, split_start + split_rows, rows_per_file)):
        n = min(rows_per_file, split_start + split_rows - first)
        file_tasks.append((out_dir, split, f, first, n, split_start, mean, safe_std, scratch))
    bar = _Progress('pass 3/3 writing TFRecords', len(file_tasks), progress)
    unordered = pool.imap_unordered if pool else map
    for done, _ in enumerate(unordered(_write_file, file_tasks), 1):
      bar.update(done, '%d/%d files' % (done, len(file_tasks)))
    bar.close()

    # Replace the old output: first remove every old split, then move the new ones in, so that an
    # interrupted run leaves missing directories (a loud failure), never a mix of two generations.
    for name in SPLITS:
      _remove_tree(os.path.join(output_dir, name))
    for name in SPLITS:
      os.rename(os.path.join(out_dir, name), os.path.join(output_dir, name))
  finally:
    if pool:
      pool.terminate()
      pool.join()
    _remove_tree(scratch_dir)
    _remove_tree(out_dir)

  return {
    'input_rows': lines,
    'complete_positives': positives,
    'complete_negatives': negatives,
    'per_class': per_class,
    'train_rows': train_rows,
    'test_rows': test_rows,
    'train_files': sum(1 for t in file_tasks if t[1] == 'train'),
    'test_files': sum(1 for t in file_tasks if t[1] == 'test'),
    'dense_mean': mean,
    'dense_std': std,
  }


def main(argv=None):
  parser = argparse.ArgumentParser(
    description='Turn the Kaggle Criteo train.txt into the TFRecords of the federated Criteo example.'
  )
  parser.add_argument(
    '--input', default='train.txt', help='Kaggle Criteo train.txt (default: train.txt in the current directory)'
  )
  parser.add_argument(
    '--output_dir',
    default='.',
    help='where {leader,follower}_{train,test}/ are written (default: the current directory)',
  )
  parser.add_argument('--rows_per_file', type=int, default=DEFAULT_ROWS_PER_FILE)
  parser.add_argument(
    '--sample_size', type=int, default=None, help='rows kept per class (default: all rows of the rarer class)'
  )
  parser.add_argument('--test_fraction', type=float, default=DEFAULT_TEST_FRACTION)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workers', type=int, default=None, help='processes (default: every core)')
  parser.add_argument(
    '--chunk_mb', type=float, default=DEFAULT_CHUNK_BYTES / float(1 << 20), help='MiB of input per work item'
  )
  parser.add_argument('--quiet', action='store_true', help='no progress output')
  args = parser.parse_args(argv)
  start = time.time()
  try:
    summary = generate(
      args.input,
      args.output_dir,
      rows_per_file=args.rows_per_file,
      sample_size=args.sample_size,
      seed=args.seed,
      test_fraction=args.test_fraction,
      workers=args.workers,
      chunk_bytes=max(int(args.chunk_mb * (1 << 20)), 1),
      progress=not args.quiet,
    )
  except (IOError, ValueError) as e:
    sys.stderr.write('error: %s\n' % e)
    return 2
  print(
    'read %d rows (%d positive / %d negative without missing values); kept %d per class; '
    'train %d rows in %d files, test %d rows in %d files, in %s (%.1f s)'
    % (
      summary['input_rows'],
      summary['complete_positives'],
      summary['complete_negatives'],
      summary['per_class'],
      summary['train_rows'],
      summary['train_files'],
      summary['test_rows'],
      summary['test_files'],
      os.path.abspath(args.output_dir),
      time.time() - start,
    )
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
