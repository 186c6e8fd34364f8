"""TLS with certificates made by the openssl CLI: mutual TLS works, a certificate of another CA is refused."""

import os
import socket

import grpc
import numpy as np
import pytest

import efl.communicator as ec
from efl.communicator import Communicator
from efl.communicator.proto import communicator_pb2 as pb
from efl.communicator.proto import communicator_pb2_grpc as pb_grpc
from cert_helpers import HAVE_OPENSSL, make_ca, make_leaf
from comm_helpers import close_all, connect_both
from ports import listening_pair

pytestmark = pytest.mark.skipif(
  not HAVE_OPENSSL, reason='the openssl command-line tool is needed to make test certificates'
)


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('certs'))
  ca_key, ca_cert = make_ca(directory, 'ca')
  other_key, other_cert = make_ca(directory, 'other_ca')
  return {
    'ca': ca_cert,
    'other_ca': other_cert,
    'leader': make_leaf(directory, 'leader', ca_key, ca_cert),
    'follower': make_leaf(directory, 'follower', ca_key, ca_cert),
    'stranger': make_leaf(directory, 'stranger', other_key, other_cert),
  }


def _party(monkeypatch, role, ca, key_cert):
  """Makes a (peer_addr, local_addr) -> Communicator of `role` with TLS from `ca` and `key_cert`."""

  def make(peer_addr, local_addr):
    monkeypatch.setenv('EFL_PEER_CERTS_FILENAME', ca)
    monkeypatch.setenv('EFL_MY_KEY_FILENAME', key_cert[0])
    monkeypatch.setenv('EFL_MY_CERTS_FILENAME', key_cert[1])
    monkeypatch.setenv('EFL_SSL_TARGET_NAME_OVERRIDE', 'localhost')
    # The settings are read by the constructor, so each party keeps its own.
    return Communicator(role, peer_addr, local_addr)

  return make


def test_mutual_tls_exchange(certs, monkeypatch, transport):
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '3')
  leader, follower = listening_pair(
    _party(monkeypatch, 'leader', certs['ca'], certs['leader']),
    _party(monkeypatch, 'follower', certs['ca'], certs['follower']),
  )
  assert (leader.native is not None) == (transport == 'native')
  leader.register_send('x')
  follower.register_recv('x')
  fp = follower.local_port
  try:
    assert connect_both(leader, follower) == [{}, {}]
    # Plaintext to the TLS port, from a stranger: raw bytes and a gRPC Hello. Refused; the pair goes on.
    for _ in range(3):
      with socket.create_connection(('127.0.0.1', fp), timeout=2) as s:
        s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + os.urandom(256))
      with grpc.insecure_channel('127.0.0.1:%d' % fp) as channel:
        with pytest.raises(grpc.RpcError):
          pb_grpc.PeerServiceStub(channel).Hello(pb.Greeting(role='leader', protocol_version=1), timeout=2)
    data = np.arange(12, dtype=np.float64).reshape(3, 4)
    leader.send('x', 0, data)
    np.testing.assert_array_equal(follower.recv('x', 0, timeout_s=10), data)
  finally:
    close_all(follower, leader)


def test_certificate_of_another_ca_is_refused_with_a_tls_error(certs, monkeypatch):
  leader, stranger = listening_pair(
    _party(monkeypatch, 'leader', certs['ca'], certs['leader']),
    _party(monkeypatch, 'follower', certs['other_ca'], certs['stranger']),
  )
  try:
    results = connect_both(leader, stranger, timeout_s=20)
    for r in results:
      assert isinstance(r, ec.TLSHandshakeError), r
      assert 'TLS handshake' in str(r) and 'EFL_PEER_CERTS_FILENAME' in str(r)
  finally:
    close_all(stranger, leader)


def test_plain_client_against_tls_server_times_out_with_a_tls_hint(certs, monkeypatch):
  def make_plain(peer_addr, local_addr):
    for var in ('EFL_PEER_CERTS_FILENAME', 'EFL_MY_KEY_FILENAME', 'EFL_MY_CERTS_FILENAME'):
      monkeypatch.delenv(var)
    return Communicator('follower', peer_addr, local_addr)

  leader, plain = listening_pair(_party(monkeypatch, 'leader', certs['ca'], certs['leader']), make_plain)
  try:
    results = connect_both(leader, plain, timeout_s=3)
    assert isinstance(results[1], ec.PeerUnreachableError), results[1]
    assert 'EFL_PEER_CERTS_FILENAME' in str(results[1])
    assert isinstance(results[0], (ec.TLSHandshakeError, ec.PeerUnreachableError)), results[0]
  finally:
    close_all(plain, leader)


def test_client_certificate_of_another_ca_is_refused_on_both_sides(certs, monkeypatch):
  # The stranger trusts the leader's CA, but presents a certificate the leader cannot verify.
  leader, stranger = listening_pair(
    _party(monkeypatch, 'leader', certs['ca'], certs['leader']),
    _party(monkeypatch, 'follower', certs['ca'], certs['stranger']),
  )
  try:
    results = connect_both(leader, stranger, timeout_s=8)
    assert isinstance(results[0], ec.TLSHandshakeError), results[0]
    # The stranger sees its connection closed; if the leader gave up first it may only see a refusal.
    assert isinstance(results[1], (ec.TLSHandshakeError, ec.PeerUnreachableError)), results[1]
    assert 'TLS' in str(results[1])
  finally:
    close_all(stranger, leader)
