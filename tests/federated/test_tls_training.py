"""Both parties train over mutual TLS with certificates made in the test; a stranger's certificate is refused."""

import os

import pytest

from cert_helpers import HAVE_OPENSSL, make_ca, make_leaf
from proc_helpers import run_pair

pytestmark = pytest.mark.skipif(not HAVE_OPENSSL, reason='the openssl command-line tool makes the certificates')
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'split_party.py')


def _env(ca, key_cert):
  return {
    'EFL_PEER_CERTS_FILENAME': ca,
    'EFL_MY_KEY_FILENAME': key_cert[0],
    'EFL_MY_CERTS_FILENAME': key_cert[1],
    'EFL_SSL_TARGET_NAME_OVERRIDE': 'localhost',
    'EFL_CONNECT_TIMEOUT_S': '20',
  }


def test_training_over_tls_and_refusing_another_ca(tmp_path):
  d = str(tmp_path)
  ca_key, ca = make_ca(d, 'ca')
  other_key, other = make_ca(d, 'other')
  leader_cert = make_leaf(d, 'leader', ca_key, ca)
  follower_cert = make_leaf(d, 'follower', ca_key, ca)
  stranger_cert = make_leaf(d, 'stranger', other_key, other)
  args = ['--out', d, '--steps', '3']
  res = run_pair(
    SCRIPT,
    SCRIPT,
    args,
    args,
    cwd=HERE,
    timeout=120,
    tmp_path=tmp_path,
    env_leader=_env(ca, leader_cert),
    env_follower=_env(ca, follower_cert),
  )
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-3000:])
    assert 'TLS client on' in log or 'TLS on' in log or 'TLS client' in log
  assert 'train done: [train] gstep=3' in res['leader'][1]
  # A follower whose certificate comes from another CA is refused, with TLS named in the error.
  bad = run_pair(
    SCRIPT,
    SCRIPT,
    args,
    args,
    cwd=HERE,
    timeout=120,
    tmp_path=tmp_path,
    env_leader=_env(ca, leader_cert),
    env_follower=_env(other, stranger_cert),
  )
  assert bad['leader'][0] != 0 and bad['follower'][0] != 0
  assert 'TLS' in bad['follower'][1] or 'TLS' in bad['leader'][1]
