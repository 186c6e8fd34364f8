"""Tests of the DP-SGD privacy accounting."""

import math

import pytest

from efl.privacy import analysis


def test_mnist_reference_points():
  # tf-privacy's MNIST setting: N=60000, batch 256, sigma 1.1, 60 epochs.
  # The RDP bound of dp_accounting gives 2.60 (3.01 with the classic
  # rdp - log(delta)/(order-1) conversion).
  eps = analysis.compute_dp_sgd_privacy(60000, 256, 1.1, 60, 1e-5)
  assert eps == pytest.approx(2.597, abs=0.01)
  # EFLS's documented row: sigma 1.3, C 1.5, 20 epochs -> epsilon 1.11.
  assert analysis.compute_dp_sgd_privacy(60000, 256, 1.3, 20) == (pytest.approx(1.11, abs=0.01))


def test_efls_keyword_names_and_steps_helper_agree():
  by_efls_names = analysis.compute_dp_sgd_privacy(
    mini_batch_size=60000, micro_batch_size=256, noise_multiplier=1.0, epochs=2, delta=1e-5
  )
  steps = int(math.ceil(2 * 60000 / 256))
  assert by_efls_names == analysis.epsilon_after_steps(60000, 256, 1.0, steps)
  assert analysis.compute_dp_sgd_privacy(n=60000, batch_size=256, noise_multiplier=1.0, epochs=2) == by_efls_names


def test_epsilon_grows_with_steps_and_edge_values():
  eps = [analysis.epsilon_after_steps(1000, 10, 1.0, s) for s in (1, 10, 100)]
  assert eps[0] < eps[1] < eps[2]
  assert analysis.epsilon_after_steps(1000, 10, 1.0, 0) == 0.0
  assert analysis.epsilon_after_steps(1000, 10, 0.0, 5) == float('inf')


@pytest.mark.parametrize(
  'kwargs, message',
  [
    (dict(n=0, batch_size=1, noise_multiplier=1.0, epochs=1), 'n must be an integer > 0. Found 0'),
    (dict(n=10, batch_size=20, noise_multiplier=1.0, epochs=1), 'batch_size must be <= n'),
    (dict(n=10, batch_size=2, noise_multiplier=-1.0, epochs=1), 'noise_multiplier must be'),
    (dict(n=10, batch_size=2, noise_multiplier=1.0, epochs=0), 'epochs must be a finite number > 0. Found 0'),
    (dict(n=10, batch_size=2, noise_multiplier=1.0, epochs=1, delta=1.0), 'delta must be < 1'),
  ],
)
def test_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    analysis.compute_dp_sgd_privacy(**kwargs)


def test_rejects_unknown_or_duplicated_keywords():
  with pytest.raises(TypeError, match='unexpected keyword'):
    analysis.compute_dp_sgd_privacy(10, 2, 1.0, 1, batch=3)
  with pytest.raises(TypeError, match='both'):
    analysis.compute_dp_sgd_privacy(10, 2, 1.0, 1, micro_batch_size=3)
