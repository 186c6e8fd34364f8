"""Tests of efl/example/mnist/generate_data.py: the column split, file layout, ids and labels."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from efl.example.mnist import generate_data

SCRIPT = generate_data.__file__
SPLITS = ('leader_train', 'follower_train', 'leader_test', 'follower_test')


def _tiny_npz(path, train=47, test=13, seed=0):
  rng = np.random.RandomState(seed)
  data = {
    'x_train': rng.randint(0, 256, size=(train, 28, 28)).astype(np.uint8),
    'y_train': rng.randint(0, 10, size=train).astype(np.uint8),
    'x_test': rng.randint(0, 256, size=(test, 28, 28)).astype(np.uint8),
    'y_test': rng.randint(0, 10, size=test).astype(np.uint8),
  }
  np.savez(path, **data)
  return data


def _read_dir(directory):
  """Returns ({file name: record count}, ids, features [N, 392], labels [N]) in file-name then record order."""
  counts, ids, features, labels = {}, [], [], []
  files = sorted(
    glob.glob(os.path.join(directory, '*')), key=lambda p: int(os.path.basename(p)[len('data_') : -len('.tfrd')])
  )
  for path in files:
    records = list(tf.io.tf_record_iterator(path))
    counts[os.path.basename(path)] = len(records)
    for record in records:
      example = tf.train.Example.FromString(record)
      feature = example.features.feature
      assert sorted(feature.keys()) == ['feature', 'label', 'sample_id']
      ids.append(feature['sample_id'].int64_list.value[0])
      features.append(np.array(feature['feature'].float_list.value, dtype=np.float32))
      labels.append(feature['label'].float_list.value[0])
  return counts, np.array(ids), np.stack(features), np.array(labels)


def _check_split(out_dir, name, images, labels, files):
  leader = _read_dir(os.path.join(out_dir, 'leader_' + name))
  follower = _read_dir(os.path.join(out_dir, 'follower_' + name))
  rows = images.shape[0]
  expected_counts = np.diff(np.linspace(0, rows, files + 1).astype(int))
  assert leader[0] == {'data_%d.tfrd' % j: int(c) for j, c in enumerate(expected_counts)}
  assert follower[0] == leader[0]
  np.testing.assert_array_equal(leader[1], np.arange(rows))
  np.testing.assert_array_equal(follower[1], np.arange(rows))
  assert leader[2].shape == (rows, 392)
  # The two halves side by side give back the image, raw pixel values as floats.
  image = np.concatenate([leader[2].reshape(rows, 28, 14), follower[2].reshape(rows, 28, 14)], axis=2)
  np.testing.assert_array_equal(image, images.astype(np.float32))
  np.testing.assert_array_equal(leader[3], labels.astype(np.float32))
  np.testing.assert_array_equal(follower[3], labels.astype(np.float32))


def test_split_layout_ids_and_labels(tmp_path):
  data = _tiny_npz(str(tmp_path / 'mnist.npz'))
  out = str(tmp_path / 'out')
  written = generate_data.generate(out, mnist_npz=str(tmp_path / 'mnist.npz'))
  assert (written['train'], written['test']) == (47, 13)
  assert sorted(os.listdir(out)) == sorted(SPLITS)  # no scratch directory left behind
  _check_split(out, 'train', data['x_train'], data['y_train'], 10)
  _check_split(out, 'test', data['x_test'], data['y_test'], 10)


def test_subset_and_file_count(tmp_path):
  data = _tiny_npz(str(tmp_path / 'mnist.npz'))
  out = str(tmp_path / 'out')
  generate_data.generate(out, mnist_npz=str(tmp_path / 'mnist.npz'), train_rows=20, test_rows=3, num_files=4)
  _check_split(out, 'train', data['x_train'][:20], data['y_train'][:20], 4)
  _check_split(out, 'test', data['x_test'][:3], data['y_test'][:3], 3)  # never an empty file


def test_records_parse_with_the_example_feature_spec(tmp_path):
  # The spec the example's input_fn declares: sample_id int64[1], feature float[392], label float[1].
  _tiny_npz(str(tmp_path / 'mnist.npz'), train=12, test=10)
  out = str(tmp_path / 'out')
  generate_data.generate(out, mnist_npz=str(tmp_path / 'mnist.npz'), num_files=2)
  spec = {
    'sample_id': tf.FixedLenFeature([1], tf.int64),
    'feature': tf.FixedLenFeature([392], tf.float32),
    'label': tf.FixedLenFeature([1], tf.float32),
  }
  with tf.Graph().as_default():
    batch = tf.data.TFRecordDataset(os.path.join(out, 'follower_train', 'data_1.tfrd')).batch(100)
    parsed = tf.io.parse_example(tf.data.make_one_shot_iterator(batch).get_next(), spec)
    with tf.Session() as sess:
      values = sess.run(parsed)
  np.testing.assert_array_equal(values['sample_id'].ravel(), np.arange(6, 12))
  assert values['feature'].shape == (6, 392)


def test_regeneration_replaces_old_output(tmp_path):
  _tiny_npz(str(tmp_path / 'mnist.npz'))
  out = str(tmp_path / 'out')
  generate_data.generate(out, mnist_npz=str(tmp_path / 'mnist.npz'))
  stale = os.path.join(out, 'leader_train', 'data_99.tfrd')
  open(stale, 'w').close()
  generate_data.generate(out, mnist_npz=str(tmp_path / 'mnist.npz'), train_rows=5, test_rows=5)
  assert not os.path.exists(stale)
  assert len(os.listdir(os.path.join(out, 'leader_train'))) == 5
  assert sorted(os.listdir(out)) == sorted(SPLITS)


def test_env_var_is_used(tmp_path, monkeypatch):
  data = _tiny_npz(str(tmp_path / 'mnist.npz'), train=10, test=10)
  monkeypatch.setenv('EFL_MNIST_NPZ', str(tmp_path / 'mnist.npz'))
  splits, source = generate_data.load_mnist()
  assert source == str(tmp_path / 'mnist.npz')
  np.testing.assert_array_equal(splits['train'][0], data['x_train'])


def test_missing_file_error_says_how_to_pass_it(tmp_path):
  with pytest.raises(generate_data.MnistNotFoundError, match='does not exist'):
    generate_data.load_mnist(str(tmp_path / 'nope.npz'))
  proc = subprocess.run(
    [sys.executable, SCRIPT, '--mnist_npz', str(tmp_path / 'nope.npz'), '--output_dir', str(tmp_path / 'out')],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    timeout=120,
  )
  assert proc.returncode == 2
  assert b'--mnist_npz points to' in proc.stderr
  assert not os.path.exists(str(tmp_path / 'out'))


def test_wrong_layout_is_rejected(tmp_path):
  np.savez(str(tmp_path / 'bad.npz'), x_train=np.zeros((3, 28, 28), np.uint8), y_train=np.zeros(3))
  with pytest.raises(ValueError, match='lacks x_test, y_test'):
    generate_data.load_mnist(str(tmp_path / 'bad.npz'))
  np.savez(
    str(tmp_path / 'bad2.npz'),
    x_train=np.zeros((3, 28, 27), np.uint8),
    y_train=np.zeros(3),
    x_test=np.zeros((3, 28, 28), np.uint8),
    y_test=np.zeros(3),
  )
  with pytest.raises(ValueError, match=r'x_train must be \[N, 28, 28\]'):
    generate_data.load_mnist(str(tmp_path / 'bad2.npz'))
  _tiny_npz(str(tmp_path / 'mnist.npz'), train=5, test=5)
  with pytest.raises(ValueError, match=r'train_rows must be in \[1, 5\]'):
    generate_data.generate(str(tmp_path / 'out'), mnist_npz=str(tmp_path / 'mnist.npz'), train_rows=6)


def test_real_mnist_subset(tmp_path, mnist_npz):
  out = str(tmp_path / 'out')
  proc = subprocess.run(
    [
      sys.executable,
      SCRIPT,
      '--mnist_npz',
      mnist_npz,
      '--output_dir',
      out,
      '--train_rows',
      '600',
      '--test_rows',
      '100',
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr.decode()
  with np.load(mnist_npz) as real:
    _check_split(out, 'train', real['x_train'][:600], real['y_train'][:600], 10)
    _check_split(out, 'test', real['x_test'][:100], real['y_test'][:100], 10)
