"""Two real communicators in one process, over gRPC on 127.0.0.1."""

import socket
import threading
import time

import grpc
import numpy as np
import pytest

import efl.communicator as ec
from efl.communicator import Communicator
from efl.communicator.communicator import PROTOCOL_VERSION
from efl.communicator.proto import communicator_pb2 as pb
from efl.communicator.proto import communicator_pb2_grpc as pb_grpc
from efl import native as native_module
from efl.native import available as native_available
from efl.transport import wire
from comm_helpers import close_all, connect_both
from ports import listening_pair
from ports import ANY_PORT

DTYPES = ['bool', 'int8', 'int32', 'int64', 'uint8', 'float16', 'float32', 'float64']


def test_handshake_returns_peer_info(pairs):
  leader, follower = pairs.make(['a'], ['b'])
  results = connect_both(leader, follower, infos=({'role': 'L', 'n': 1}, {'role': 'F'}))
  assert results == [{'role': 'F'}, {'role': 'L', 'n': 1}]
  assert leader.connected and follower.connected


def test_every_dtype_arrives_bit_exact(pairs):
  names = DTYPES + ['string']
  leader, follower = pairs.connected(leader_send=names)
  rng = np.random.RandomState(1)
  sent = {}
  for name in DTYPES:
    array = np.frombuffer(rng.bytes(3 * 4 * np.dtype(name).itemsize), dtype=name).reshape(3, 4)
    if name == 'bool':
      array = array.view(np.uint8) % 2 == 1
    sent[name] = array
  sent['string'] = np.array([b'', b'\x00\xff', b'federated'], dtype=object)
  for name in names:
    leader.send(name, 0, sent[name])
  for name in names:
    got = follower.recv(name, 0, timeout_s=10)
    assert got.dtype == sent[name].dtype and got.shape == sent[name].shape
    if name == 'string':
      assert got.tolist() == sent[name].tolist()
    else:
      assert got.tobytes() == sent[name].tobytes()


def test_messages_of_one_name_are_fifo(pairs):
  leader, follower = pairs.connected(leader_send=['x'])
  for step in range(5):
    leader.send('x', step, np.array([step]))
  assert [follower.recv('x', s, timeout_s=10)[0] for s in range(5)] == list(range(5))


def test_many_queued_messages_keep_their_order(pairs):
  leader, follower = pairs.connected(leader_send=['x', 'y'])
  rng = np.random.RandomState(2)
  sent = []
  for step in range(400):
    array = rng.rand(rng.randint(0, 3000)).astype(np.float32)
    sent.append(array)
    leader.send('x', step, array)
    leader.send('y', step, np.array([step]))
  for step in range(400):
    assert follower.recv('y', step, timeout_s=10)[0] == step
    np.testing.assert_array_equal(follower.recv('x', step, timeout_s=10), sent[step])


# Nothing listens on port 1 of 127.0.0.1 (a privileged port): a peer there never answers.
NOBODY = '127.0.0.1:1'


@pytest.mark.parametrize('peer_addr', [NOBODY, ANY_PORT], ids=['calling', 'waiting_for_hello'])
def test_connect_can_be_interrupted_by_close(peer_addr):
  comm = Communicator('leader', peer_addr, ANY_PORT)
  result = {}

  def connect():
    try:
      comm.connect(timeout_s=30)
    except Exception as e:  # pylint: disable=broad-except
      result['error'] = e

  t = threading.Thread(target=connect)
  t.start()
  time.sleep(0.5)
  comm.close()
  t.join(5)
  assert not t.is_alive() and isinstance(result['error'], ec.ClosedError)


def test_step_mismatch_names_both_steps(pairs):
  leader, follower = pairs.connected(leader_send=['x'])
  leader.send('x', 4, np.zeros(2))
  time.sleep(0.2)
  with pytest.raises(ec.StepMismatchError, match=r"'x' expects step 3 .* has step 4"):
    follower.recv('x', 3, timeout_s=10)


def test_peer_moved_past_step_fails_at_once(pairs):
  leader, follower = pairs.connected(leader_send=['x', 'y'])
  leader.send('y', 7, np.zeros(1))  # Step 7 is over for the leader without an "x".
  leader.send('y', 8, np.zeros(1))
  start = time.time()
  with pytest.raises(ec.StepMismatchError, match=r"finished step 7 without sending 'x'"):
    follower.recv('x', 7, timeout_s=30)
  assert time.time() - start < 5
  # Unsynced messages do not count as progress.
  leader.send('y', 100, np.zeros(1), sync=False)
  assert follower.recv('y', 7, timeout_s=5) is not None


def test_unsynced_channel_uses_its_own_numbers(pairs):
  leader, follower = pairs.connected(leader_send=['blocks'])
  for seq in range(3):
    leader.send('blocks', seq, np.array([b'part-%d' % seq], dtype=object), sync=False)
  assert [follower.recv('blocks', s, sync=False, timeout_s=10)[0] for s in range(3)] == [
    b'part-0',
    b'part-1',
    b'part-2',
  ]


def test_unknown_names_are_refused_at_connect_on_both_sides(pairs):
  leader, follower = pairs.make(leader_send=['ok'])
  leader.register_send('only_leader_sends')
  follower.register_recv('nobody_sends')
  results = connect_both(leader, follower)
  for r in results:
    assert isinstance(r, ec.HandshakeError), r
  assert "'only_leader_sends'" in str(results[0]) and "'nobody_sends'" in str(results[0])
  assert "'only_leader_sends'" in str(results[1]) and "'nobody_sends'" in str(results[1])


def test_parties_of_different_jobs_are_refused_naming_both_ids(pairs):
  leader, follower = listening_pair(
    lambda peer, local: Communicator('leader', peer, local, app_id='job-a'),
    lambda peer, local: Communicator('follower', peer, local, app_id='job-b'),
  )
  pairs.comms += [leader, follower]
  results = connect_both(leader, follower)
  assert isinstance(results[0], ec.HandshakeError) and isinstance(results[1], ec.HandshakeError), results
  assert "this leader runs job 'job-a' but the follower runs job 'job-b' (give both parties the same --app_id)" in str(
    results[0]
  )
  assert "this follower runs job 'job-b' but the leader runs job 'job-a'" in str(results[1])
  same = pairs.make(app_id='job-a')
  assert connect_both(*same) == [{}, {}]


def test_parties_on_different_transports_exchange_frames_and_bye(pairs, monkeypatch, transport):
  """Both transports serve the same PeerService: a native party and a Python party work together."""
  if not native_available()[0]:
    pytest.skip('native transport not built')

  def make_follower(peer, local):
    monkeypatch.setenv('EFL_NATIVE_TRANSPORT', 'off' if transport == 'native' else 'on')
    return Communicator('follower', peer, local)

  leader, follower = listening_pair(lambda peer, local: Communicator('leader', peer, local), make_follower)
  pairs.comms += [leader, follower]
  assert (leader.native is None) != (follower.native is None)
  leader.register_send('x')
  follower.register_recv('x')
  follower.register_send('g')
  leader.register_recv('g')
  assert connect_both(leader, follower) == [{}, {}]
  for step in range(3):
    leader.send('x', step, np.full((2, 3), step, np.float32))
    np.testing.assert_array_equal(follower.recv('x', step, timeout_s=10), np.full((2, 3), step, np.float32))
    follower.send('g', step, np.arange(step + 1))
    np.testing.assert_array_equal(leader.recv('g', step, timeout_s=10), np.arange(step + 1))
  leader.send('x', 3, np.zeros(1, np.float32))
  closer = threading.Thread(target=leader.close)
  closer.start()
  assert follower.recv('x', 3, timeout_s=10) is not None
  with pytest.raises(ec.PeerClosedError, match='leader closed'):
    follower.recv('x', 4, timeout_s=10)
  follower.close()
  closer.join(15)
  assert not closer.is_alive()


def test_unknown_name_is_refused_at_send_and_recv(pairs):
  leader, follower = pairs.connected(leader_send=['x'])
  with pytest.raises(ec.UnknownNameError, match="'nope'.*does not receive it"):
    leader.send('nope', 0, np.zeros(1))
  with pytest.raises(ec.UnknownNameError, match="cannot recv 'nope'"):
    follower.recv('nope', 0)
  with pytest.raises(ec.CommunicatorError, match='after connect'):
    leader.register_send('late')


def test_peer_error_reaches_a_waiting_recv(pairs):
  leader, follower = pairs.connected(leader_send=['x'])
  result = {}

  def wait():
    try:
      follower.recv('x', 0, timeout_s=30)
    except Exception as e:  # pylint: disable=broad-except
      result['error'] = e

  t = threading.Thread(target=wait)
  t.start()
  time.sleep(0.3)
  closer = threading.Thread(target=leader.close, kwargs={'error': ValueError('loss is NaN at step 0')})
  closer.start()
  t.join(10)
  follower.close()
  closer.join(10)
  assert isinstance(result['error'], ec.PeerFailedError)
  assert 'loss is NaN at step 0' in str(result['error']) and 'ValueError' in str(result['error'])


def test_bye_delivers_in_flight_messages_then_reports_closed(pairs):
  leader, follower = pairs.connected(leader_send=['x'])
  for step in range(3):
    leader.send('x', step, np.full(1000, step))
  closer = threading.Thread(target=leader.close)
  closer.start()
  for step in range(3):
    assert follower.recv('x', step, timeout_s=10)[0] == step
  with pytest.raises(ec.PeerClosedError, match='leader closed'):
    follower.recv('x', 3, timeout_s=10)
  follower.close()
  closer.join(10)
  assert not closer.is_alive()
  with pytest.raises(ec.ClosedError):
    leader.send('x', 9, np.zeros(1))
  leader.close()  # Idempotent.


def test_send_after_peer_bye_fails(pairs):
  leader, follower = pairs.connected(leader_send=['x'])
  threading.Thread(target=follower.close).start()
  deadline = time.time() + 10
  with pytest.raises(ec.PeerClosedError):
    while time.time() < deadline:
      leader.send('x', 0, np.zeros(1))
      time.sleep(0.05)


def test_recv_timeout_names_name_step_and_seconds(pairs):
  leader, follower = pairs.connected(leader_send=['x'], default_timeout_milliseconds=400)
  start = time.time()
  with pytest.raises(ec.RecvTimeoutError, match=r"deadline exceeded: recv of 'x' at step 2 waited 0.4 s"):
    follower.recv('x', 2)
  assert time.time() - start < 5


def test_recv_timeout_env_overrides(pairs, monkeypatch):
  monkeypatch.setenv('EFL_RECV_TIMEOUT_S', '0.2')
  leader, follower = pairs.connected(leader_send=['x'])
  with pytest.raises(TimeoutError, match='waited 0.2 s'):
    follower.recv('x', 0)


def test_send_size_limit_names_the_variable(pairs, monkeypatch):
  monkeypatch.setenv('EFL_CLIENT_MAX_SEND_MESSAGE_SIZE', '4096')
  leader, follower = pairs.connected(leader_send=['x'])
  for step in range(40):  # Queued together, yet each write stays within the limit.
    leader.send('x', step, np.zeros(200, np.float32))
  with pytest.raises(
    ec.MessageTooLargeError,
    match=r'over the limit of 4096 bytes; raise '
    r'EFL_CLIENT_MAX_SEND_MESSAGE_SIZE',
  ):
    leader.send('x', 1, np.zeros(2000, np.float32))
  for step in range(40):  # The connection survives.
    assert follower.recv('x', step, timeout_s=10).shape == (200,)


def test_peer_receive_limit_is_checked_by_the_sender(pairs, monkeypatch):
  monkeypatch.setenv('EFL_SERVER_MAX_RECEIVE_MESSAGE_SIZE', '4096')
  leader, _ = pairs.connected(leader_send=['x'])
  with pytest.raises(ec.MessageTooLargeError, match='EFL_SERVER_MAX_RECEIVE_MESSAGE_SIZE \\(on the follower\\)'):
    leader.send('x', 0, np.zeros(2000, np.float32))


def test_two_leaders_are_refused(pairs):
  first, second = pairs.make(roles=('leader', 'leader'))
  for r in connect_both(first, second):
    assert isinstance(r, ec.HandshakeError) and 'both parties are leaders' in str(r), r


def test_bad_role_is_refused():
  with pytest.raises(ValueError, match=r"'leader', 'follower', got 'boss'"):
    Communicator('boss', '127.0.0.1:1', '127.0.0.1:2')


def test_a_hello_before_connect_began_is_answered_unavailable(transport):
  """A party that listens early (listen(), reset()) takes Hellos only once its names and info are final."""
  del transport
  comm = Communicator('leader', NOBODY, ANY_PORT)
  address = '127.0.0.1:%d' % comm.listen()
  try:
    with grpc.insecure_channel(address) as channel:
      greeting = pb.Greeting(role='follower', protocol_version=PROTOCOL_VERSION, instance_id='an-early-follower')
      with pytest.raises(grpc.RpcError) as refused:
        pb_grpc.PeerServiceStub(channel).Hello(greeting, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == wire.TEXT['HELLO_TOO_EARLY'] % 'leader'
  finally:
    comm.close()


def test_a_party_whose_peer_port_is_0_learns_it_from_each_new_peer_process(transport, monkeypatch):
  """The leader starts first on a port it picks; each follower is given the leader's address and listens on
  a port it picks; the leader learns it from the follower's Hello, also after a reset."""
  del transport
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '2')  # the dying follower does not wait long for the leader's end
  leader = Communicator('leader', ANY_PORT, ANY_PORT)
  leader.register_send('x')
  leader.register_recv('y')
  address = '127.0.0.1:%d' % leader.listen()
  followers = []
  try:
    for attempt in range(2):
      follower = Communicator('follower', address, ANY_PORT)
      follower.register_recv('x')
      follower.register_send('y')
      followers.append(follower)
      assert connect_both(leader, follower) == [{}, {}]
      assert leader.peer_addr == '127.0.0.1:%d' % follower.local_port
      leader.send('x', 0, np.full(2, attempt))
      follower.send('y', 0, follower.recv('x', 0, timeout_s=10) + 1)
      np.testing.assert_array_equal(leader.recv('y', 0, timeout_s=10), [attempt + 1, attempt + 1])
      if attempt == 0:
        dying = threading.Thread(target=follower.close, kwargs={'error': 'killed'})
        dying.start()
        leader.reset()  # while the follower closes, as in two processes
        dying.join(30)
        assert leader.peer_addr == ANY_PORT  # to be learned from the new process's Hello
  finally:
    close_all(leader, *followers)


def test_two_parties_that_both_wait_for_a_hello_say_so(transport):
  del transport
  leader, follower = Communicator('leader', ANY_PORT, ANY_PORT), Communicator('follower', ANY_PORT, ANY_PORT)
  try:
    for r in connect_both(leader, follower, timeout_s=1.5):
      assert isinstance(r, ec.PeerUnreachableError), r
      assert 'has port 0, so it waits for the' in str(r) and 'with --peer_addr pointing at' in str(r), r
  finally:
    close_all(leader, follower)


def test_a_waiting_party_refuses_a_hello_that_names_no_port(transport):
  """A peer that does not say where it listens (an older efl) gets a clear error, not a wait."""
  del transport
  leader = Communicator('leader', ANY_PORT, ANY_PORT)
  address = '127.0.0.1:%d' % leader.listen()
  result = []
  waiter = threading.Thread(target=lambda: result.append(_connect_error(leader, 30)))
  waiter.start()
  try:
    greeting = pb.Greeting(role='follower', protocol_version=PROTOCOL_VERSION, instance_id='an-older-follower')
    deadline = time.time() + 15
    with grpc.insecure_channel(address) as channel:
      while waiter.is_alive() and time.time() < deadline:
        try:
          pb_grpc.PeerServiceStub(channel).Hello(greeting, timeout=2)
        except grpc.RpcError:
          pass  # the leader has not begun connect() yet, or it already failed and stopped its server
        waiter.join(0.1)
  finally:
    leader.close()
  assert isinstance(result[0], ec.HandshakeError), result
  assert 'did not say which port it listens on' in str(result[0]), result


def _connect_error(comm, timeout_s):
  try:
    comm.connect(timeout_s=timeout_s)
  except ec.CommunicatorError as e:
    return e
  return None


def test_connect_timeout_names_the_address():
  comm = Communicator('follower', NOBODY, ANY_PORT)
  start = time.time()
  with pytest.raises(
    ec.PeerUnreachableError,
    match=r'leader at peer_addr 127.0.0.1:1 did not answer within 1.5 s.*start the leader',
  ):
    comm.connect(timeout_s=1.5)
  assert time.time() - start < 8
  comm.close()


def test_taken_port_is_reported():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    s.listen(1)
    addr = '127.0.0.1:%d' % s.getsockname()[1]
    comm = Communicator('leader', NOBODY, addr)
    with pytest.raises(ec.AddressInUseError, match='cannot listen on local_addr %s' % addr):
      comm.connect(timeout_s=1)
    comm.close()


def test_close_before_connect_and_twice():
  comm = Communicator('leader', '127.0.0.1:1', '127.0.0.1:2', worker_index=0, worker_num=1)
  comm.register_recv('x')
  comm.close()
  comm.close()
  with pytest.raises(ec.ClosedError, match='closed'):
    comm.recv('x', 0)


def test_efls_positional_order_is_accepted():
  comm = Communicator('follower', 0, 1, '127.0.0.1:5', '127.0.0.1:6')
  assert (comm.peer_addr, comm.local_addr) == ('127.0.0.1:5', '127.0.0.1:6')


def test_step_counter():
  comm = Communicator('leader', '127.0.0.1:1', '127.0.0.1:2')
  assert comm.step == 0
  comm.advance_step()
  assert comm.advance_step(2) == 3 and comm.step == 3


def test_native_transport_that_cannot_load(monkeypatch):
  # A machine without the built library: `on` is an error that says why, `auto` falls back to Python.
  monkeypatch.setattr(native_module, '_loaded', '_transport.so not built: install ...')
  monkeypatch.setenv('EFL_NATIVE_TRANSPORT', 'on')
  with pytest.raises(ec.CommunicatorError, match='EFL_NATIVE_TRANSPORT=on, but _transport.so not built'):
    Communicator('leader', '127.0.0.1:1', '127.0.0.1:2')
  monkeypatch.setenv('EFL_NATIVE_TRANSPORT', 'auto')
  comm = Communicator('leader', '127.0.0.1:1', '127.0.0.1:2')
  assert comm.native is None
  comm.close()
  monkeypatch.setenv('EFL_NATIVE_TRANSPORT', 'fast')
  with pytest.raises(ValueError, match="EFL_NATIVE_TRANSPORT must be one of auto, on, off, got 'fast'"):
    Communicator('leader', '127.0.0.1:1', '127.0.0.1:2')


def test_listen_first_then_learn_the_peer(pairs):
  # The pairs of these tests listen on port 0 before they connect (tests/ports.py): the port is known at once.
  leader, follower = pairs.make(['x'])
  assert leader.local_port and leader.listen() == leader.local_port  # a second listen() changes nothing
  assert follower.peer_addr == '127.0.0.1:%d' % leader.local_port
  assert leader.peer_addr == '127.0.0.1:%d' % follower.local_port
  with pytest.raises(ValueError, match="peer_addr must be a 'host:port' string, got 'nowhere'"):
    leader.set_peer_addr('nowhere')
  assert connect_both(leader, follower) == [{}, {}]
  leader.send('x', 0, np.arange(3))
  np.testing.assert_array_equal(follower.recv('x', 0, timeout_s=10), np.arange(3))
  with pytest.raises(
    ec.CommunicatorError, match=r'set_peer_addr\(\) before connect\(\); this communicator is connected'
  ):
    leader.set_peer_addr('127.0.0.1:1')
  with pytest.raises(ec.CommunicatorError, match=r'listen\(\) before connect\(\); this communicator is connected'):
    follower.listen()


def test_a_restarted_party_asks_again_while_the_survivor_is_still_paired(pairs, caplog):
  # A restarted leader can say Hello before the follower noticed that the first one died: it is refused as
  # busy and asks again until the follower, reset by its recovery, accepts it.
  leader, follower = pairs.connected(['x'])
  address = '127.0.0.1:%d' % leader.local_port
  leader.close(error='killed')
  newcomer = Communicator('leader', '127.0.0.1:%d' % follower.local_port, address)
  newcomer.register_send('x')
  pairs.comms.append(newcomer)
  result = {}
  connecting = threading.Thread(target=lambda: result.update(peer=newcomer.connect(timeout_s=30)))
  with caplog.at_level('INFO', logger='tensorflow.efl.communicator'):
    connecting.start()
    deadline = time.time() + 20
    while 'is still paired with an earlier leader; asking again' not in caplog.text and time.time() < deadline:
      time.sleep(0.05)
    assert 'is still paired with an earlier leader; asking again' in caplog.text
  assert connecting.is_alive()
  follower.reset()
  assert follower.connect(timeout_s=20) == {}
  connecting.join(30)
  assert result == {'peer': {}}
  newcomer.send('x', 0, np.arange(2))
  np.testing.assert_array_equal(follower.recv('x', 0, timeout_s=10), np.arange(2))


def test_a_second_party_of_a_role_is_refused_after_the_peer_timeout(pairs, monkeypatch):
  monkeypatch.setenv('EFL_PEER_TIMEOUT_S', '2')
  leader, follower = pairs.connected(['x'])
  intruder = Communicator('leader', '127.0.0.1:%d' % follower.local_port, '127.0.0.1:0')
  intruder.register_send('x')
  pairs.comms.append(intruder)
  start = time.time()
  with pytest.raises(ec.HandshakeError, match='paired with the leader that connected first'):
    intruder.connect(timeout_s=30)
  assert time.time() - start < 10
  assert leader.connected and follower.connected
