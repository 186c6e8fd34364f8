"""When training stops because of the peer, the survivor's last line says what happened, to which party, at
which step, and what to do: once, without a traceback, and it exits non-zero. One test per kind of loss:
killed, stopped (SIGSTOP), refused (nothing listens), TLS failure. And a peer stopped for less than the peer
timeout does not stop training."""

import os
import re
import signal
import time

import pytest

from cert_helpers import HAVE_OPENSSL, make_ca, make_leaf
from proc_helpers import run_pair, start_party
from ports import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'split_party.py')


def _last_line(path):
  with open(path, 'rb') as f:
    lines = [ln for ln in f.read().decode('utf-8', 'replace').splitlines() if ln.strip()]
  return lines[-1], '\n'.join(lines)


def _stall_and(tmp_path, signal_follower, env=None):
  """Leader and follower train; the follower stalls before step 3 and gets `signal_follower`."""
  lp, fp = free_port(), free_port()
  logs = {r: str(tmp_path / ('%s.log' % r)) for r in ('leader', 'follower')}
  common = ['--out', str(tmp_path), '--steps', '50', '--save_steps', '2']
  leader = start_party(
    SCRIPT, 'leader', lp, fp, common + ['--ckpt', str(tmp_path / 'ckpt_l')], cwd=HERE, env=env, log_path=logs['leader']
  )
  follower = start_party(
    SCRIPT,
    'follower',
    fp,
    lp,
    common + ['--ckpt', str(tmp_path / 'ckpt_f'), '--stall_at', '3'],
    cwd=HERE,
    env=env,
    log_path=logs['follower'],
  )
  try:
    deadline = time.time() + 60
    while time.time() < deadline and 'gstep=3 ' not in open(logs['follower']).read():
      time.sleep(0.1)  # the follower logs its step 3 before it stalls in its 4th
    assert leader.poll() is None and follower.poll() is None, open(logs['leader']).read()[-2000:]
    os.kill(follower.pid, signal_follower)
    signalled = time.time()
    rc = leader.wait(60)
    return rc, time.time() - signalled, lp, fp, logs['leader']
  finally:
    for p in (leader, follower):
      if p.poll() is None:
        p.kill()
        p.wait()


def test_killed_follower(tmp_path):
  rc, took, _, fp, log = _stall_and(tmp_path, signal.SIGKILL)
  line, text = _last_line(log)
  assert rc != 0 and took < 5
  assert line == (
    'efl: the follower at 127.0.0.1:%d was lost at step 3 (its connection closed: its process died '
    'or the network failed); restart both parties with the same --ckpt_dir to resume from step 2' % fp
  ), text[-3000:]
  assert 'Traceback' not in text and 'Original stack trace' not in text
  assert text.count('was lost at step 3') == 1


def test_stopped_follower_is_found_within_the_peer_timeout(tmp_path):
  rc, took, _, fp, log = _stall_and(tmp_path, signal.SIGSTOP, env={'EFL_PEER_TIMEOUT_S': '4'})
  line, text = _last_line(log)
  assert rc != 0 and took < 4 + 3, took
  assert line == (
    'efl: the follower at 127.0.0.1:%d was lost at step 3 (it answered nothing for 4 s: its process '
    'is stopped, its host frozen or the network down); restart both parties with the same '
    '--ckpt_dir to resume from step 2' % fp
  ), text[-3000:]
  assert 'Traceback' not in text


def test_follower_stopped_briefly_does_not_stop_training(tmp_path):
  lp, fp = free_port(), free_port()
  env = {'EFL_PEER_TIMEOUT_S': '8'}
  args = ['--out', str(tmp_path), '--steps', '150', '--pause_s', '0.02']
  logs = {r: str(tmp_path / ('%s.log' % r)) for r in ('leader', 'follower')}
  leader = start_party(SCRIPT, 'leader', lp, fp, args, cwd=HERE, env=env, log_path=logs['leader'])
  follower = start_party(SCRIPT, 'follower', fp, lp, args, cwd=HERE, env=env, log_path=logs['follower'])
  try:
    deadline = time.time() + 60
    while time.time() < deadline and 'gstep=20 ' not in open(logs['leader']).read():
      time.sleep(0.05)
    os.kill(follower.pid, signal.SIGSTOP)
    time.sleep(3)
    assert leader.poll() is None and 'train done' not in open(logs['leader']).read()
    os.kill(follower.pid, signal.SIGCONT)
    assert leader.wait(60) == 0 and follower.wait(60) == 0, open(logs['leader']).read()[-3000:]
  finally:
    for p in (leader, follower):
      if p.poll() is None:
        os.kill(p.pid, signal.SIGCONT)
        p.kill()
        p.wait()
  assert 'train done: [train] gstep=150' in open(logs['leader']).read()


def test_refused_connection(tmp_path):
  fp = 1  # nothing listens on port 1 of 127.0.0.1 (a privileged port)
  log = str(tmp_path / 'leader.log')
  leader = start_party(
    SCRIPT, 'leader', 0, fp, ['--out', str(tmp_path)], cwd=HERE, env={'EFL_CONNECT_TIMEOUT_S': '2'}, log_path=log
  )
  assert leader.wait(60) != 0
  line, text = _last_line(log)
  assert re.fullmatch(
    r'efl: could not start training with the follower at 127\.0\.0\.1:%d: the follower at peer_addr '
    r'127\.0\.0\.1:%d did not answer within 2 s \(last error: .+\): start the follower, or check --peer_addr '
    r'on this party and --local_addr on the follower; if the follower uses TLS, set EFL_PEER_CERTS_FILENAME '
    r'here too; raise the timeout with EFL_CONNECT_TIMEOUT_S' % (fp, fp),
    line,
  ), text[-3000:]
  assert 'Traceback' not in text


@pytest.mark.skipif(not HAVE_OPENSSL, reason='the openssl command-line tool makes the certificates')
def test_tls_failure(tmp_path):
  d = str(tmp_path)
  ca_key, ca = make_ca(d, 'ca')
  other_key, other = make_ca(d, 'other')
  leader_cert, stranger_cert = make_leaf(d, 'leader', ca_key, ca), make_leaf(d, 'stranger', other_key, other)

  def env(ca_path, cert):
    return {
      'EFL_PEER_CERTS_FILENAME': ca_path,
      'EFL_MY_KEY_FILENAME': cert[0],
      'EFL_MY_CERTS_FILENAME': cert[1],
      'EFL_SSL_TARGET_NAME_OVERRIDE': 'localhost',
      'EFL_CONNECT_TIMEOUT_S': '10',
    }

  args = ['--out', d, '--steps', '3']
  res = run_pair(
    SCRIPT,
    SCRIPT,
    args,
    args,
    cwd=HERE,
    timeout=120,
    tmp_path=tmp_path,
    env_leader=env(ca, leader_cert),
    env_follower=env(other, stranger_cert),
  )
  for role in ('leader', 'follower'):
    rc, text = res[role]
    line = [ln for ln in text.splitlines() if ln.strip()][-1]
    assert rc != 0 and 'Traceback' not in text, text[-3000:]
    peer = 'follower' if role == 'leader' else 'leader'
    assert re.fullmatch(r'efl: could not start training with the %s at 127\.0\.0\.1:\d+: .*TLS.*' % peer, line), line
  follower_line = [ln for ln in res['follower'][1].splitlines() if ln.strip()][-1]
  assert re.fullmatch(
    r'efl: could not start training with the leader at 127\.0\.0\.1:\d+: TLS handshake with the leader at '
    r'127\.0\.0\.1:\d+ failed \(.+\); check EFL_PEER_CERTS_FILENAME.* on both parties: each party\'s '
    r'certificate must be signed by the CA the other names in EFL_PEER_CERTS_FILENAME, and the certificate\'s '
    r'host name must match peer_addr or EFL_SSL_TARGET_NAME_OVERRIDE'
    r'(; then the leader stopped answering \(.+\))?',
    follower_line,
  ), follower_line  # the leader may quit first
