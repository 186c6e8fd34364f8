"""Hostile input on a party's listening ports in the middle of training, bounded in count and time: garbage
bytes, HTTP/1.1, a TLS ClientHello to the plaintext port, well-formed gRPC calls from strangers (a wrong role, a
wrong protocol version, another job, a second leader), their streams of frames with unknown names, wrong dtypes,
absurd shapes and sizes, and a flood of connections. The parties finish with the same losses and weights as
without it; each kind of refused Hello is logged once."""

import json
import os
import random
import socket
import ssl
import time

import grpc
import numpy as np

from efl.communicator.proto import communicator_pb2 as pb
from efl.communicator.proto import communicator_pb2_grpc as pb_grpc
from proc_helpers import start_party
from ports import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'split_party.py')
STEPS = 120
FUZZ_SECONDS = 6  # the fuzzer stops after this long, or when its counts are done


def _run_pair(out, fuzz=None):
  lp, fp = free_port(), free_port()
  args = ['--out', out, '--steps', str(STEPS), '--pause_s', '0.03']
  logs = {r: os.path.join(out, '%s.log' % r) for r in ('leader', 'follower')}
  procs = {
    'leader': start_party(SCRIPT, 'leader', lp, fp, args, cwd=HERE, log_path=logs['leader']),
    'follower': start_party(SCRIPT, 'follower', fp, lp, args, cwd=HERE, log_path=logs['follower']),
  }
  sent = None
  try:
    if fuzz is not None:
      deadline = time.time() + 60
      while time.time() < deadline and 'gstep=5 ' not in open(logs['leader']).read():
        time.sleep(0.05)
      sent = fuzz(lp, fp)
      assert 'train done' not in open(logs['leader']).read(), 'the fuzz ended after training; nothing was tested'
    codes = {r: p.wait(120) for r, p in procs.items()}
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
        p.wait()
  texts = {r: open(path).read() for r, path in logs.items()}
  for role in procs:
    assert codes[role] == 0, '%s failed:\n%s' % (role, texts[role][-3000:])
  results = {r: json.load(open(os.path.join(out, '%s.json' % r))) for r in procs}
  return results, texts, sent


def _frames(rng):
  """A Frames message of hostile DATA frames: unknown names, wrong dtypes, shapes that do not fit the bytes."""
  frames = pb.Frames()
  for _ in range(rng.randint(1, 4)):
    frames.frames.add(
      name=rng.choice(['h', 'h_grad', 'no_such_name', '\x00' * 3, 'x' * 500]),
      step=rng.choice([0, 3, -1, 2**62]),
      sync=rng.random() < 0.5,
      kind=pb.Frame.DATA,
      dtype=rng.choice(['float32', 'complex128', 'no_dtype', 'string']),
      shape=rng.choice([[3], [2**40, 2**40], [-5], []]),
      raw=bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))),
    )
  return frames.SerializeToString()


def _fuzz(lp, fp):
  """Sends each kind of hostile input to both parties' ports; returns how many of each kind it sent."""
  rng = random.Random(7)
  sent = dict.fromkeys(
    [
      'garbage',
      'http1',
      'tls_to_plaintext',
      'hello_wrong_role',
      'hello_wrong_version',
      'hello_other_job',
      'hello_second_leader',
      'stream_frames',
      'oversized_message',
      'connection_flood',
    ],
    0,
  )
  stop = time.time() + FUZZ_SECONDS
  for port, role in ((lp, 'leader'), (fp, 'follower')):
    with grpc.insecure_channel('127.0.0.1:%d' % port) as channel:
      reply = pb_grpc.PeerServiceStub(channel).Hello(pb.Greeting(role='follower', protocol_version=1), timeout=5)
      assert reply.error, 'a stranger was not refused by the %s' % role  # it is paired already

  def raw(port, data, expect_reply=False):
    with socket.create_connection(('127.0.0.1', port), timeout=2) as s:
      s.sendall(data)
      if expect_reply:
        try:
          s.recv(4096)
        except socket.timeout:
          pass

  for round_ in range(3):
    for port in (lp, fp):
      if time.time() > stop:
        break
      raw(port, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096))))
      sent['garbage'] += 1
      raw(port, b'GET / HTTP/1.1\r\nHost: efl\r\nConnection: close\r\n\r\n', expect_reply=True)
      sent['http1'] += 1
      try:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(('127.0.0.1', port), timeout=2) as s:
          with context.wrap_socket(s, server_hostname='localhost'):
            pass
      except (ssl.SSLError, OSError):
        pass
      sent['tls_to_plaintext'] += 1
      with grpc.insecure_channel('127.0.0.1:%d' % port) as channel:
        stub = pb_grpc.PeerServiceStub(channel)
        for kind, greeting in (
          ('hello_wrong_role', pb.Greeting(role='boss', protocol_version=1)),
          ('hello_wrong_version', pb.Greeting(role='follower', protocol_version=99)),
          ('hello_other_job', pb.Greeting(role='follower', protocol_version=1, app_id='another-job')),
          ('hello_second_leader', pb.Greeting(role='leader', protocol_version=1, instance_id='intruder')),
        ):
          assert stub.Hello(greeting, timeout=5).error  # refused, with a reason
          sent[kind] += 1
        stream = channel.stream_stream(
          '/efl.PeerService/Stream', request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        try:
          stream(iter([_frames(rng) for _ in range(5)]), timeout=2)
        except grpc.RpcError as e:
          assert e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED), e
        sent['stream_frames'] += 1
        try:
          stream(iter([b'\x0a' + b'\xff' * 9 + os.urandom(8 << 20)]), timeout=3)
        except grpc.RpcError as e:
          assert e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED), e
        sent['oversized_message'] += 1
      sockets = []
      for _ in range(100):
        try:
          sockets.append(socket.create_connection(('127.0.0.1', port), timeout=2))
          sent['connection_flood'] += 1
        except OSError:
          break
      for s in sockets:
        s.close()
  return sent


def test_hostile_input_leaves_training_unaffected(tmp_path):
  ref_dir, fuzz_dir = str(tmp_path / 'ref'), str(tmp_path / 'fuzz')
  os.makedirs(ref_dir)
  os.makedirs(fuzz_dir)
  reference, _, _ = _run_pair(ref_dir)
  fuzzed, texts, sent = _run_pair(fuzz_dir, fuzz=_fuzz)
  print('hostile inputs sent: %s' % json.dumps(sent, sort_keys=True))
  assert all(n > 0 for n in sent.values()), sent
  for role in ('leader', 'follower'):
    assert len(fuzzed[role]['rows']) == STEPS
    for name in reference[role]['vars']:
      np.testing.assert_array_equal(np.array(fuzzed[role]['vars'][name]), np.array(reference[role]['vars'][name]))
  losses = [r['loss'] for r in fuzzed['leader']['rows']]
  np.testing.assert_array_equal(losses, [r['loss'] for r in reference['leader']['rows']])
  for role in ('leader', 'follower'):
    refused = [ln for ln in texts[role].splitlines() if '] refused: ' in ln]
    # one line per kind of stranger (role, version, job: the probe and four kinds), however many of them came
    assert 1 <= len(refused) <= 5 and len(set(refused)) == len(refused), refused
