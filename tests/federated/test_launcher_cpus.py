"""The launcher splits one machine's CPUs between the two parties it runs."""

import os
import subprocess
import sys

import pytest

from efl import launcher


def test_party_cpus_split_the_set_in_halves():
  assert launcher.party_cpus('leader', {0, 1}) == {0}
  assert launcher.party_cpus('follower', {0, 1}) == {1}
  assert launcher.party_cpus('leader', {4, 2, 7, 9, 11}) == {2, 4}
  assert launcher.party_cpus('follower', {4, 2, 7, 9, 11}) == {7, 9, 11}
  assert launcher.party_cpus('leader', {3}) is None  # nothing to split


def _child():
  return subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])


@pytest.mark.skipif(
  not hasattr(os, 'sched_setaffinity') or len(os.sched_getaffinity(0)) < 2,
  reason='needs CPU affinity control and two CPUs',
)
@pytest.mark.parametrize('role', ['leader', 'follower'])
def test_pin_party_keeps_a_real_process_on_its_half(role):
  p = _child()
  try:
    launcher.pin_party(p.pid, role)
    assert os.sched_getaffinity(p.pid) == launcher.party_cpus(role)
  finally:
    p.kill()
    p.wait()


@pytest.mark.skipif(
  not hasattr(os, 'sched_setaffinity') or len(os.sched_getaffinity(0)) < 2,
  reason='needs CPU affinity control and two CPUs',
)
def test_pinning_can_be_turned_off(monkeypatch):
  monkeypatch.setenv('EFL_PIN_CPUS', '0')
  p = _child()
  try:
    launcher.pin_party(p.pid, 'follower')
    assert os.sched_getaffinity(p.pid) == os.sched_getaffinity(0)
  finally:
    p.kill()
    p.wait()


def test_pinning_a_finished_process_is_harmless():
  p = subprocess.Popen([sys.executable, '-c', 'pass'])
  p.wait()
  launcher.pin_party(p.pid, 'leader')  # no error: the party just runs unpinned
