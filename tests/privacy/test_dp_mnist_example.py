"""Tests of the single-machine DP MNIST example (efl/example/dp_mnist/dp_cnn.py)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from efl.example.dp_mnist import _mnist_offline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def keep_keras_loader():
  original = tf.keras.datasets.mnist.load_data
  yield
  tf.keras.datasets.mnist.load_data = original


def test_use_local_mnist_reads_the_named_file(tmp_path, keep_keras_loader, monkeypatch):
  path = str(tmp_path / 'mnist.npz')
  x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape([2, 28, 28])
  np.savez(path, x_train=x, y_train=np.array([3, 4], np.uint8), x_test=x[:1], y_test=np.array([5], np.uint8))
  monkeypatch.setenv(_mnist_offline.ENV_VAR, path)
  assert _mnist_offline.use_local_mnist() == path
  (x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()
  assert np.array_equal(x_train, x) and list(y_train) == [3, 4]
  assert x_test.shape == (1, 28, 28) and list(y_test) == [5]


def test_use_local_mnist_errors(tmp_path, keep_keras_loader, monkeypatch):
  monkeypatch.delenv(_mnist_offline.ENV_VAR, raising=False)
  assert _mnist_offline.use_local_mnist() is None
  with pytest.raises(FileNotFoundError, match='not a file'):
    _mnist_offline.use_local_mnist(str(tmp_path / 'absent.npz'))
  bad = str(tmp_path / 'bad.npz')
  np.savez(bad, x_train=np.zeros([1]))
  _mnist_offline.use_local_mnist(bad)
  with pytest.raises(ValueError, match='lacks y_train, x_test, y_test'):
    tf.keras.datasets.mnist.load_data()


_RUN_FEW_STEPS = textwrap.dedent("""
    import efl
    from efl.example.dp_mnist import dp_cnn
    model = efl.Model()
    model.input_fn(dp_cnn.input_fn)
    model.loss_fn(dp_cnn.loss_fn)
    model.eval_fn(dp_cnn.eval_fn)
    opt = efl.DPGradientDescentGaussianOptimizer(
        l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.25)
    model.optimizer_fn(efl.optimizer_fn.optimizer_setter(opt))
    model.compile()
    model.fit(efl.procedure_fn.train_and_evaluate(train_step=30, eval_step=5,
                                                  max_iter=1),
              log_step=10, project_name='dp_mnist_test')
    print('DONE')
""")


@pytest.mark.skipif(not os.environ.get(_mnist_offline.ENV_VAR), reason='EFL_MNIST_NPZ is not set')
def test_dp_cnn_trains_a_few_steps(tmp_path):
  # The example's own functions, in a fresh process, with a short procedure.
  proc = subprocess.run(
    [sys.executable, '-c', _RUN_FEW_STEPS],
    cwd=str(tmp_path),
    timeout=240,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2'),
  )
  out = proc.stdout.decode('utf-8', 'replace')
  assert proc.returncode == 0, out[-3000:]
  assert 'DONE' in out
  assert 'accuracy=' in out
