"""Two real processes train a split network over gRPC on 127.0.0.1; results match one process."""

import json
import os
import re
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import split_party  # noqa: E402
from efl import native  # noqa: E402
from proc_helpers import run_pair, start_party  # noqa: E402
from ports import free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'split_party.py')


def reference(steps):
  """The same network and data in one process, numpy only: losses per step and final weights."""
  x_l, x_f, y, _ = split_party.make_data()
  w = {k: v.astype(np.float64) for k, v in split_party.init_weights().items()}
  losses, h_f_seen = [], []
  b = split_party.BATCH
  for step in range(steps):
    sl = slice((step * b) % split_party.N, (step * b) % split_party.N + b)
    xl, xf, yy = x_l[sl], x_f[sl], y[sl]
    hl, hf = xl.dot(w['w_l']), xf.dot(w['w_f'])
    h_f_seen.append(hf)
    z = np.concatenate([hl, hf], 1).dot(w['v'])
    p = 1 / (1 + np.exp(-z))
    losses.append(float(np.mean(np.maximum(z, 0) - z * yy + np.log1p(np.exp(-np.abs(z))))))
    dz = (p - yy) / b
    dv = np.concatenate([hl, hf], 1).T.dot(dz)
    dh = dz.dot(w['v'].T)
    w['w_l'] -= split_party.LR * xl.T.dot(dh[:, : split_party.H])
    w['w_f'] -= split_party.LR * xf.T.dot(dh[:, split_party.H :])
    w['v'] -= split_party.LR * dv
  return losses, w, h_f_seen


# Both transports: the native kernels (the default where they are built) and the py_funcs.
TRANSPORTS = [
  pytest.param(
    'on',
    id='native',
    marks=pytest.mark.skipif(
      not native.available()[0], reason='native transport not built: %s' % native.available()[1]
    ),
  ),
  pytest.param('off', id='python'),
]


def _run(tmp_path, leader_args=(), follower_args=(), timeout=180, env=None):
  args = ['--out', str(tmp_path)]
  return run_pair(
    SCRIPT,
    SCRIPT,
    args + list(leader_args),
    args + list(follower_args),
    cwd=HERE,
    timeout=timeout,
    tmp_path=tmp_path,
    env=env,
  )


@pytest.mark.parametrize('transport', TRANSPORTS)
def test_split_training_matches_one_process(tmp_path, transport):
  steps = 6
  res = _run(tmp_path, ['--steps', str(steps)], ['--steps', str(steps)], env={'EFL_NATIVE_TRANSPORT': transport})
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-3000:])
  leader = json.load(open(os.path.join(str(tmp_path), 'leader.json')))
  follower = json.load(open(os.path.join(str(tmp_path), 'follower.json')))
  losses, w, h_f = reference(steps)
  assert len(leader['rows']) == steps
  np.testing.assert_allclose([r['loss'] for r in leader['rows']], losses, rtol=1e-5, atol=1e-6)
  # Forward values arrive bit-exact: what the leader received is what the follower sent.
  for lrow, frow in zip(leader['rows'], follower['rows']):
    assert np.array_equal(np.asarray(lrow['h_recv'], np.float32), np.asarray(frow['h'], np.float32))
  # The follower's weights moved exactly by the gradients of the one-process network.
  np.testing.assert_allclose(follower['vars']['net/w_f'], w['w_f'], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(leader['vars']['net/w_l'], w['w_l'], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(leader['vars']['net/v'], w['v'], rtol=1e-4, atol=1e-6)
  assert '[train] gstep=%d' % steps in res['leader'][1]


def test_parties_started_one_after_the_other_need_only_the_leaders_address(tmp_path):
  """No port chosen in advance: the leader listens on a port it picks and learns the follower's from its Hello;
  the follower is started with the port the leader's log names."""
  logs = {role: os.path.join(str(tmp_path), '%s.log' % role) for role in ('leader', 'follower')}
  args = ['--out', str(tmp_path), '--steps', '3']
  procs = {'leader': start_party(SCRIPT, 'leader', 0, 0, args, cwd=HERE, log_path=logs['leader'])}
  try:
    port = _wait_for_listening(procs['leader'], logs['leader'], 'leader')
    procs['follower'] = start_party(SCRIPT, 'follower', 0, port, args, cwd=HERE, log_path=logs['follower'])
    for role, p in procs.items():
      assert p.wait(120) == 0, '%s failed:\n%s' % (role, open(logs[role]).read()[-3000:])
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
        p.wait()
  follower_port = _wait_for_listening(procs['follower'], logs['follower'], 'follower')
  assert "the follower's Hello says it listens on 127.0.0.1:%d" % follower_port in open(logs['leader']).read()
  assert '[train] gstep=3' in open(logs['leader']).read()


def _wait_for_listening(proc, log, role, timeout_s=120):
  """The port `role`'s log says it listens on, once it says so."""
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    found = re.search(r'%s listening on 127\.0\.0\.1:(\d+)' % role, open(log, 'rb').read().decode('utf-8', 'replace'))
    if found:
      return int(found.group(1))
    assert proc.poll() is None, '%s exited before it listened:\n%s' % (role, open(log).read()[-3000:])
    time.sleep(0.1)
  raise AssertionError('%s did not log its port within %d s' % (role, timeout_s))


def test_eval_sends_keep_train_aligned(tmp_path):
  res = _run(
    tmp_path,
    ['--steps', '4', '--procedure', 'train_eval', '--eval_steps', '3'],
    ['--steps', '4', '--procedure', 'train_eval', '--eval_steps', '3'],
  )
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-3000:])
  leader = json.load(open(os.path.join(str(tmp_path), 'leader.json')))
  # Two iterations of 4 train steps; eval runs in between did not shift the training data or the loss.
  losses, _, _ = reference(8)
  assert len(leader['rows']) == 8
  # The eval stage reads its own iterator, so training batches are the reference's consecutive batches.
  np.testing.assert_allclose([r['loss'] for r in leader['rows']], losses, rtol=1e-5, atol=1e-6)
  assert res['leader'][1].count('[eval] gstep=') >= 2


def test_eval_step_mismatch_is_an_error_not_a_hang(tmp_path):
  start = time.time()
  res = _run(
    tmp_path,
    ['--steps', '2', '--procedure', 'train_eval', '--eval_steps', '2'],
    ['--steps', '2', '--procedure', 'train_eval', '--eval_steps', '3'],
    timeout=120,
  )
  assert time.time() - start < 100
  assert res['leader'][0] != 0 or res['follower'][0] != 0
  text = res['leader'][1] + res['follower'][1]
  assert 'h_eval' in text or 'verify_sample_ids' in text


@pytest.mark.parametrize('transport', TRANSPORTS)
def test_sample_id_mismatch_stops_both(tmp_path, transport):
  res = _run(
    tmp_path,
    ['--steps', '6'],
    ['--steps', '6', '--mismatch_at', '2'],
    timeout=120,
    env={'EFL_NATIVE_TRANSPORT': transport},
  )
  assert res['follower'][0] != 0 and res['leader'][0] != 0
  assert 'sample ids' in res['follower'][1] and 'step 2' in res['follower'][1]
  assert 'sample ids' in res['leader'][1]  # the leader learns why its peer stopped
  assert 'follower id 100065' in res['follower'][1]  # first mismatching id: batch 2, position 1


def test_peer_never_starts_gives_connect_timeout(tmp_path):
  # Nothing listens on port 1 of 127.0.0.1 (a privileged port).
  p = start_party(SCRIPT, 'follower', 0, 1, ['--out', str(tmp_path)], cwd=HERE, env={'EFL_CONNECT_TIMEOUT_S': '5'})
  out, _ = p.communicate(timeout=90)
  text = out.decode('utf-8', 'replace')
  assert p.returncode != 0
  assert 'the leader at peer_addr 127.0.0.1:1 did not answer' in text, text[-3000:]


@pytest.mark.parametrize('transport', TRANSPORTS)
def test_killed_peer_stops_the_other_side_quickly(tmp_path, transport):
  lp, fp = free_port(), free_port()
  log_l = os.path.join(str(tmp_path), 'leader.log')
  env = {'EFL_NATIVE_TRANSPORT': transport}
  leader = start_party(
    SCRIPT, 'leader', lp, fp, ['--out', str(tmp_path), '--steps', '1000'], cwd=HERE, log_path=log_l, env=env
  )
  follower = start_party(
    SCRIPT,
    'follower',
    fp,
    lp,
    ['--out', str(tmp_path), '--steps', '1000', '--stall_at', '3'],
    cwd=HERE,
    log_path=os.path.join(str(tmp_path), 'follower.log'),
    env=env,
  )
  try:
    deadline = time.time() + 90
    while time.time() < deadline and 'gstep=3' not in open(log_l, 'rb').read().decode('utf-8', 'replace'):
      time.sleep(0.2)
    time.sleep(0.5)
    follower.kill()
    killed = time.time()
    leader.wait(60)
    assert time.time() - killed < 30
  finally:
    for p in (leader, follower):
      if p.poll() is None:
        p.kill()
  text = open(log_l, 'rb').read().decode('utf-8', 'replace')
  assert leader.returncode != 0
  assert 'lost' in text.lower() or 'died' in text.lower(), text[-2000:]
