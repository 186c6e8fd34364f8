"""Synthetic data in the format of the Kaggle Criteo `train.txt`, for tests and benchmarks only.

The real data set (Criteo Display Advertising Challenge, 45,840,617 rows, about 11 GB) is too big for tests.
This module writes rows in exactly its format, so that `generate_data.py` can be exercised end to end:

* 40 tab-separated fields per line: the label (0/1), the 13 integer features I1..I13, then the 26
  categorical features C1..C26, each an 8-character lowercase hex string. An empty field is a missing value.
* Missing values follow the real data's pattern: the columns that `generate_data.py` drops (I1, I10, I12,
  C19, C20, C22, C25, C26) are often empty; the kept ones are empty now and then, in correlated groups.
* Integers are heavy-tailed counts; I2 takes small negative values now and then, as in the real data.
* About a quarter of the rows are positive, and the label depends on kept integer and categorical
  columns, so a model trained on the cleaned data can beat chance.

The numbers are made up: nothing here says anything about the real data's statistics beyond its format.

Command line::

  python -m efl.example.criteo.synthetic --output train.txt --rows 100000 --seed 0
"""

from __future__ import absolute_import, division, print_function

import argparse
import sys

import numpy as np

NUM_INTEGER = 13
NUM_CATEGORICAL = 26

# Per-column probability that the value is missing on its own (index 0 is I1 / C1).
_INT_MISSING = [0.45, 0.0, 0.0, 0.0, 0.02, 0.0, 0.02, 0.001, 0.02, 0.45, 0.02, 0.77, 0.0]
_CAT_MISSING = [
  0.0,
  0.0,
  0.0,
  0.0,
  0.0,
  0.10,
  0.0,
  0.0,
  0.0,
  0.0,
  0.0,
  0.0,
  0.0,
  0.0,
  0.0,
  0.0,
  0.0,
  0.0,
  0.44,
  0.44,
  0.0,
  0.76,
  0.0,
  0.0,
  0.44,
  0.44,
]
# Groups of columns that go missing together (as I3/I4/I6/I13 and C3/C4/C12/C16/C21/C24 do in the real data).
_INT_GROUP = ([2, 3, 5, 12], 0.18)
_CAT_GROUP = ([2, 3, 11, 15, 20, 23], 0.03)

# Vocabulary size per categorical column: a few tiny ones, many mid-sized, a few large.
_VOCAB = [
  1400,
  500,
  20000,
  15000,
  300,
  20,
  10000,
  600,
  3,
  5000,
  4800,
  20000,
  3000,
  20,
  10000,
  15000,
  9,
  4500,
  2000,
  4,
  17000,
  15,
  80,
  12000,
  50,
  9000,
]

# Scale (median-ish) of each integer column; values are roughly log-normal counts.
_INT_SCALE = [3, 100, 20, 7, 18000, 100, 15, 12, 100, 1, 3, 1, 8]

# Columns carrying the signal. Integers: I2, I7, I11 (kept). Categoricals: C1, C9, C14, C17 (kept).
_SIGNAL_INT = {1: 0.6, 6: -0.5, 10: 0.7}
_SIGNAL_CAT = {0: 0.9, 8: 0.8, 13: 0.7, 16: 0.8}
_BIAS = -1.7  # puts the positive rate near 25%


def _make_vocabularies(rng):
  """Returns, per categorical column, (hex strings as an 'S8' array, per-value effect on the logit)."""
  vocabs = []
  for col, size in enumerate(_VOCAB):
    # Rare duplicates just merge two vocabulary entries, which is harmless.
    codes = rng.randint(0, 2**32, size=size, dtype=np.int64)
    strings = np.array(['%08x' % c for c in codes], dtype='S8')
    if col in _SIGNAL_CAT:
      effects = rng.normal(0.0, _SIGNAL_CAT[col], size=size)
    else:
      effects = np.zeros(size)
    vocabs.append((strings, effects))
  return vocabs


def _block(rng, vocabs, rows):
  """Generates `rows` lines as a list of bytes, each ending with a newline."""
  latent = rng.normal(size=(rows, NUM_INTEGER))
  logit = np.full(rows, _BIAS)
  for col, weight in _SIGNAL_INT.items():
    logit += weight * latent[:, col]
  cat_index = np.empty((rows, NUM_CATEGORICAL), dtype=np.int64)
  for col, size in enumerate(_VOCAB):
    # Log-uniform ranks: a few values are frequent, most are rare, like hashed ids.
    idx = np.floor(np.power(float(size), rng.random_sample(rows))).astype(np.int64) - 1
    cat_index[:, col] = np.clip(idx, 0, size - 1)
    logit += vocabs[col][1][cat_index[:, col]]
  label = (rng.random_sample(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

  ints = np.floor(np.array(_INT_SCALE, dtype=np.float64) * np.exp(1.2 * latent)).astype(np.int64)
  # I2 is occasionally -1, -2 or -3 in the real data.
  negative = rng.random_sample(rows) < 0.05
  ints[negative, 1] = -rng.randint(1, 4, size=int(negative.sum()))

  int_missing = rng.random_sample((rows, NUM_INTEGER)) < np.array(_INT_MISSING)
  int_missing[np.ix_(rng.random_sample(rows) < _INT_GROUP[1], _INT_GROUP[0])] = True
  cat_missing = rng.random_sample((rows, NUM_CATEGORICAL)) < np.array(_CAT_MISSING)
  cat_missing[np.ix_(rng.random_sample(rows) < _CAT_GROUP[1], _CAT_GROUP[0])] = True

  int_text = ints.astype('S20')
  int_text[int_missing] = b''
  cat_text = np.empty((rows, NUM_CATEGORICAL), dtype='S8')
  for col in range(NUM_CATEGORICAL):
    cat_text[:, col] = vocabs[col][0][cat_index[:, col]]
  cat_text[cat_missing] = b''
  label_text = label.astype('S1')

  lines = []
  for r in range(rows):
    lines.append(b'\t'.join([label_text[r]] + int_text[r].tolist() + cat_text[r].tolist()) + b'\n')
  return lines


def write_synthetic_criteo(path, rows, seed=0, block_rows=50000):
  """Writes `rows` lines of synthetic Criteo data to `path` (tests and benchmarks only).

  Args:
    path: output file; overwritten.
    rows: number of lines, >= 0.
    seed: seed of the generator; the same (rows, seed) always gives the same file.
    block_rows: lines generated at a time (bounds memory).

  Returns:
    The number of positive labels written.

  Raises:
    ValueError: if `rows` is negative or `block_rows` is not positive.
  """
  if rows < 0:
    raise ValueError('rows must be >= 0. Found %r.' % (rows,))
  if block_rows <= 0:
    raise ValueError('block_rows must be positive. Found %r.' % (block_rows,))
  rng = np.random.RandomState(seed)
  vocabs = _make_vocabularies(rng)
  positives = 0
  with open(path, 'wb') as f:
    done = 0
    while done < rows:
      n = min(block_rows, rows - done)
      lines = _block(rng, vocabs, n)
      positives += sum(1 for line in lines if line[:1] == b'1')
      f.write(b''.join(lines))
      done += n
  return positives


def main(argv=None):
  parser = argparse.ArgumentParser(
    description='Write synthetic rows in the Kaggle Criteo train.txt format (for tests only).'
  )
  parser.add_argument('--output', required=True, help='file to write')
  parser.add_argument('--rows', type=int, default=100000, help='number of lines')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  positives = write_synthetic_criteo(args.output, args.rows, args.seed)
  print('wrote %d rows (%d positive) to %s' % (args.rows, positives, args.output))
  return 0


if __name__ == '__main__':
  sys.exit(main())
