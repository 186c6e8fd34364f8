"""Tests of efl/example/criteo/generate_data.py on synthetic data in the Kaggle train.txt format."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from efl.example.criteo import generate_data
from efl.example.criteo import synthetic

SCRIPT = generate_data.__file__
SPLITS = ('leader_train', 'follower_train', 'leader_test', 'follower_test')
DROPPED = {1, 10, 12, 32, 33, 35, 38, 39}


def _reference(path):
  """Straightforward re-implementation of the cleaning: {(label, ints, cats): count} of the complete rows."""
  rows = {}
  with open(path, 'rb') as f:
    for line in f:
      fields = line.rstrip(b'\n').split(b'\t')
      kept = [v for i, v in enumerate(fields) if i not in DROPPED]
      if all(kept):
        key = (int(kept[0]), tuple(int(v) for v in kept[1:11]), tuple(kept[11:]))
        rows[key] = rows.get(key, 0) + 1
  return rows


def _files(directory):
  names = os.listdir(directory)
  return sorted(names, key=lambda n: int(n[len('data_') : -len('.tfrd')]))


def _read(out_dir, split):
  """Reads both sides of a split in file-name then record order; returns (file sizes, leader, follower)."""
  leader = {'sample_id': [], 'dense': [], 'label': []}
  follower = {'sample_id': [], 'cats': []}
  sizes = []
  assert _files(os.path.join(out_dir, 'leader_' + split)) == _files(os.path.join(out_dir, 'follower_' + split))
  for name in _files(os.path.join(out_dir, 'leader_' + split)):
    lrecs = list(tf.io.tf_record_iterator(os.path.join(out_dir, 'leader_' + split, name)))
    frecs = list(tf.io.tf_record_iterator(os.path.join(out_dir, 'follower_' + split, name)))
    assert len(lrecs) == len(frecs)
    sizes.append(len(lrecs))
    for record in lrecs:
      feature = tf.train.Example.FromString(record).features.feature
      assert sorted(feature.keys()) == ['dense', 'label', 'sample_id']
      leader['sample_id'].append(feature['sample_id'].int64_list.value[0])
      leader['dense'].append(list(feature['dense'].float_list.value))
      leader['label'].append(feature['label'].int64_list.value[0])
    for record in frecs:
      feature = tf.train.Example.FromString(record).features.feature
      assert sorted(feature.keys()) == sorted(['sample_id'] + ['feature%d' % i for i in range(21)])
      follower['sample_id'].append(feature['sample_id'].int64_list.value[0])
      follower['cats'].append(tuple(feature['feature%d' % i].bytes_list.value[0] for i in range(21)))
  leader = {k: np.array(v) for k, v in leader.items()}
  follower['sample_id'] = np.array(follower['sample_id'])
  return sizes, leader, follower


@pytest.fixture(scope='module')
def criteo_txt(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('criteo') / 'train.txt')
  synthetic.write_synthetic_criteo(path, 5000, seed=3)
  return path


def test_synthetic_format(tmp_path):
  path = str(tmp_path / 'train.txt')
  positives = synthetic.write_synthetic_criteo(path, 3000, seed=1)
  with open(path, 'rb') as f:
    lines = [line.rstrip(b'\n').split(b'\t') for line in f]
  assert len(lines) == 3000 and {len(x) for x in lines} == {40}
  labels = [x[0] for x in lines]
  assert set(labels) == {b'0', b'1'} and labels.count(b'1') == positives
  assert 0.15 < positives / 3000.0 < 0.4
  missing = np.array([[v == b'' for v in x] for x in lines])
  assert missing[:, sorted(DROPPED)].mean(axis=0).min() > 0.3  # the dropped columns are mostly empty
  kept = [i for i in range(1, 40) if i not in DROPPED]
  assert 0 < missing[:, kept].mean(axis=0).max() < 0.3  # the kept ones only now and then
  ints = [int(x[2]) for x in lines if x[2]]
  assert min(ints) < 0  # I2 has negative values, as in the real data
  cats = {v for x in lines for v in x[14:] if v}
  assert all(len(v) == 8 and int(v, 16) >= 0 for v in cats)
  synthetic.write_synthetic_criteo(str(tmp_path / 'again.txt'), 3000, seed=1)
  with open(path, 'rb') as a, open(str(tmp_path / 'again.txt'), 'rb') as b:
    assert a.read() == b.read()


def test_end_to_end(criteo_txt, tmp_path):
  out = str(tmp_path / 'out')
  reference = _reference(criteo_txt)
  summary = generate_data.generate(
    criteo_txt, out, rows_per_file=500, seed=7, test_fraction=0.3, workers=1, chunk_bytes=100000, progress=False
  )
  positives = sum(c for k, c in reference.items() if k[0] == 1)
  negatives = sum(c for k, c in reference.items() if k[0] == 0)
  assert summary['input_rows'] == 5000
  assert (summary['complete_positives'], summary['complete_negatives']) == (positives, negatives)
  per_class = min(positives, negatives)
  assert summary['per_class'] == per_class
  total = 2 * per_class
  assert summary['test_rows'] == int(round(0.3 * total)) and summary['train_rows'] + summary['test_rows'] == total
  assert sorted(os.listdir(out)) == sorted(SPLITS)  # and no scratch directory left behind

  seen = []
  for split, rows in (('train', summary['train_rows']), ('test', summary['test_rows'])):
    sizes, leader, follower = _read(out, split)
    assert sizes == [500] * (rows // 500) + ([rows % 500] if rows % 500 else [])
    # Ids are the row index within the split, and the two sides agree record by record.
    np.testing.assert_array_equal(leader['sample_id'], np.arange(rows))
    np.testing.assert_array_equal(follower['sample_id'], np.arange(rows))
    assert leader['dense'].shape == (rows, 10) and np.isfinite(leader['dense']).all()
    assert set(leader['label'].tolist()) == {0, 1}
    seen.append((leader, follower))
  dense = np.concatenate([ln['dense'] for ln, _ in seen])
  labels = np.concatenate([ln['label'] for ln, _ in seen])
  assert labels.sum() == per_class  # balanced classes
  np.testing.assert_allclose(dense.mean(axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(dense.std(axis=0), 1.0, atol=1e-5)
  # Every output example is a complete input row, used at most as often as it occurs.
  raw = np.rint(dense.astype(np.float64) * summary['dense_std'] + summary['dense_mean']).astype(np.int64)
  cats = [c for _, f in seen for c in f['cats']]
  remaining = dict(reference)
  for label, ints, row_cats in zip(labels.tolist(), raw.tolist(), cats):
    key = (label, tuple(ints), row_cats)
    assert remaining.get(key, 0) > 0, key
    remaining[key] -= 1


def test_tensorflow_reads_the_example_spec(criteo_txt, tmp_path):
  out = str(tmp_path / 'out')
  generate_data.generate(criteo_txt, out, rows_per_file=400, workers=1, progress=False)
  spec = {
    'sample_id': tf.FixedLenFeature([1], tf.int64),
    'dense': tf.FixedLenFeature([10], tf.float32),
    'label': tf.FixedLenFeature([1], tf.int64),
  }
  fspec = dict(
    [('sample_id', tf.FixedLenFeature([1], tf.int64))]
    + [('feature%d' % i, tf.FixedLenFeature([1], tf.string)) for i in range(21)]
  )
  with tf.Graph().as_default():
    tensors = []
    for side, feature_spec in (('leader', spec), ('follower', fspec)):
      files = sorted(glob.glob(os.path.join(out, side + '_train', '*.tfrd')))
      dataset = tf.data.TFRecordDataset(files).batch(10**6)  # reads and checks every CRC
      tensors.append(tf.io.parse_example(tf.data.make_one_shot_iterator(dataset).get_next(), feature_spec))
    with tf.Session() as sess:
      leader, follower = sess.run(tensors)
  np.testing.assert_array_equal(np.sort(leader['sample_id'].ravel()), np.arange(leader['sample_id'].size))
  np.testing.assert_array_equal(leader['sample_id'], follower['sample_id'])
  assert follower['feature20'].dtype == object and len(follower['feature20'][0, 0]) == 8


def test_cli_with_workers_matches_single_process(criteo_txt, tmp_path):
  single = str(tmp_path / 'single')
  generate_data.generate(criteo_txt, single, rows_per_file=700, seed=5, workers=1, progress=False)
  multi = str(tmp_path / 'multi')
  proc = subprocess.run(
    [
      sys.executable,
      SCRIPT,
      '--input',
      criteo_txt,
      '--output_dir',
      multi,
      '--rows_per_file',
      '700',
      '--seed',
      '5',
      '--workers',
      '2',
      '--chunk_mb',
      '0.1',
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr.decode()
  assert b'pass 3/3' in proc.stderr and b'kept' in proc.stdout
  for split in ('train', 'test'):
    _, leader_a, follower_a = _read(single, split)
    _, leader_b, follower_b = _read(multi, split)
    # The sampling depends on the seed only, not on the chunking or the number of workers.
    np.testing.assert_array_equal(follower_a['sample_id'], follower_b['sample_id'])
    assert follower_a['cats'] == follower_b['cats']
    np.testing.assert_array_equal(leader_a['label'], leader_b['label'])
    np.testing.assert_allclose(leader_a['dense'], leader_b['dense'], rtol=1e-5, atol=1e-5)


def test_sample_size_adapts_to_small_input(tmp_path):
  path = str(tmp_path / 'small.txt')
  synthetic.write_synthetic_criteo(path, 120, seed=2)
  reference = _reference(path)
  positives = sum(c for k, c in reference.items() if k[0] == 1)
  negatives = sum(c for k, c in reference.items() if k[0] == 0)
  summary = generate_data.generate(path, str(tmp_path / 'a'), sample_size=10**6, workers=1, progress=False)
  assert summary['per_class'] == min(positives, negatives)
  summary = generate_data.generate(path, str(tmp_path / 'b'), sample_size=5, workers=1, progress=False)
  assert summary['per_class'] == 5 and summary['train_rows'] + summary['test_rows'] == 10
  _, leader, _ = _read(str(tmp_path / 'b'), 'train')
  assert leader['sample_id'].size == summary['train_rows']


def test_missing_input_says_where_to_get_it(tmp_path):
  with pytest.raises(IOError, match='Kaggle'):
    generate_data.generate(str(tmp_path / 'train.txt'), str(tmp_path / 'out'), progress=False)
  proc = subprocess.run(
    [sys.executable, SCRIPT, '--input', str(tmp_path / 'train.txt'), '--output_dir', str(tmp_path / 'out')],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    timeout=60,
  )
  assert proc.returncode == 2 and b'Display Advertising Challenge' in proc.stderr


def test_format_errors_name_the_line(tmp_path):
  path = str(tmp_path / 'train.txt')
  synthetic.write_synthetic_criteo(path, 400, seed=4)
  with open(path, 'rb') as f:
    lines = f.read().split(b'\n')
  bad_fields = list(lines)
  bad_fields[321] = bad_fields[321].rsplit(b'\t', 1)[0]  # 39 fields on line 322
  with open(path, 'wb') as f:
    f.write(b'\n'.join(bad_fields))
  for chunk_bytes in (10**6, 3000):  # one chunk, and many chunks
    with pytest.raises(generate_data.CriteoFormatError, match=r'line 322: found 39 tab-separated field'):
      generate_data.generate(path, str(tmp_path / 'out'), workers=1, chunk_bytes=chunk_bytes, progress=False)
  # The same through worker processes (in a fresh process: forking the test process is not safe).
  proc = subprocess.run(
    [
      sys.executable,
      SCRIPT,
      '--input',
      path,
      '--output_dir',
      str(tmp_path / 'out'),
      '--workers',
      '2',
      '--chunk_mb',
      '0.003',
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    timeout=60,
  )
  assert proc.returncode == 2 and b'line 322: found 39' in proc.stderr, proc.stderr
  bad_label = list(lines)
  bad_label[9] = b'x' + bad_label[9][1:]
  with open(path, 'wb') as f:
    f.write(b'\n'.join(bad_label))
  with pytest.raises(generate_data.CriteoFormatError, match=r"line 10: the label .* found b'x'"):
    generate_data.generate(path, str(tmp_path / 'out'), workers=1, progress=False)
  # A non-number in an integer column of a chosen row (every complete positive is chosen: the rarer class).
  bad_number = list(lines)
  target = next(
    i
    for i, line in enumerate(lines[:-1])
    if line.startswith(b'1') and all(v for j, v in enumerate(line.split(b'\t')) if j not in DROPPED) and i > 200
  )
  fields = bad_number[target].split(b'\t')
  fields[2] = b'12a'
  bad_number[target] = b'\t'.join(fields)
  with open(path, 'wb') as f:
    f.write(b'\n'.join(bad_number))
  with pytest.raises(
    generate_data.CriteoFormatError, match=r"line %d: integer feature I2 must be a number, found b'12a'" % (target + 1)
  ):
    generate_data.generate(path, str(tmp_path / 'out'), workers=1, chunk_bytes=5000, progress=False)
  assert not os.path.exists(str(tmp_path / 'out' / 'leader_train'))
  assert os.listdir(str(tmp_path / 'out')) == []  # no scratch directory left behind


def test_no_trailing_newline_and_bad_arguments(tmp_path):
  path = str(tmp_path / 'train.txt')
  synthetic.write_synthetic_criteo(path, 300, seed=5)
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data.rstrip(b'\n'))
  summary = generate_data.generate(path, str(tmp_path / 'out'), workers=1, progress=False)
  assert summary['input_rows'] == 300
  for kwargs, message in (
    ({'rows_per_file': 0}, 'rows_per_file must be positive'),
    ({'sample_size': 0}, 'sample_size must be positive'),
    ({'test_fraction': 1.0}, r'test_fraction must be in \(0, 1\)'),
  ):
    with pytest.raises(ValueError, match=message):
      generate_data.generate(path, str(tmp_path / 'out'), progress=False, **kwargs)


def test_cli_reads_and_writes_in_the_directory_it_runs_in(criteo_txt, tmp_path):
  # As EFLS's scripts and the example's readers (./leader_train ...): relative to the working directory.
  work = tmp_path / 'data'
  work.mkdir()
  os.symlink(criteo_txt, str(work / 'train.txt'))
  proc = subprocess.run(
    [sys.executable, SCRIPT, '--workers', '1', '--quiet'],
    cwd=str(work),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr.decode()
  assert sorted(n for n in os.listdir(str(work)) if not n.startswith('.')) == sorted(SPLITS + ('train.txt',))
  missing = subprocess.run(
    [sys.executable, SCRIPT, '--quiet'], cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120
  )
  assert missing.returncode == 2 and b'train.txt' in missing.stderr
