"""grpcio's channel and server for a party, with efl's TLS, keepalive and message size settings.

The grpcio transport uses both; the native transport calls the peer's Hello through a `PeerChannel`.
"""

import threading

import grpc

from efl.communicator.proto import communicator_pb2_grpc as pb_grpc


def keepalive_options(keepalive, server):
  """Options for gRPC that ping every `keepalive.time_ms`; a peer silent for `timeout_ms` more is dead."""
  # The server must accept the client's pings; gRPC also bounds the wait for a ping's ack by ping_timeout.
  options = [
    ('grpc.keepalive_time_ms', keepalive.time_ms),
    ('grpc.keepalive_timeout_ms', keepalive.timeout_ms),
    ('grpc.http2.ping_timeout_ms', keepalive.timeout_ms),
    ('grpc.keepalive_permit_without_calls', 1),
    ('grpc.http2.max_pings_without_data', 0),
  ]
  if server:
    options += [
      ('grpc.http2.min_ping_interval_without_data_ms', min(5000, keepalive.time_ms)),
      ('grpc.http2.max_ping_strikes', 0),
    ]
  return options


def open_channel(config):
  """A channel to `config.peer_addr` (an `efl.transport.base.Config`), with TLS where `config.tls` asks for it."""
  options = [
    ('grpc.max_send_message_length', config.client_send_limit),
    ('grpc.max_receive_message_length', config.client_recv_limit),
    # Retry a refused connection quickly while the peer starts.
    ('grpc.initial_reconnect_backoff_ms', 100),
    ('grpc.min_reconnect_backoff_ms', 100),
    ('grpc.max_reconnect_backoff_ms', 1000),
  ] + keepalive_options(config.keepalive, False)
  tls = config.tls
  if not tls.peer_ca:
    return grpc.insecure_channel(config.peer_addr, options=options)
  if tls.target_name_override:
    options.append(('grpc.ssl_target_name_override', tls.target_name_override))
  creds = grpc.ssl_channel_credentials(
    root_certificates=tls.peer_ca, private_key=tls.my_key, certificate_chain=tls.my_cert
  )
  return grpc.secure_channel(config.peer_addr, creds, options=options)


def add_port(server, local_addr, tls):
  """Makes `server` listen on `local_addr` (TLS where `tls.my_cert` is set); returns the port, 0 if it cannot."""
  if not tls.my_cert:
    return server.add_insecure_port(local_addr)
  creds = grpc.ssl_server_credentials(
    [(tls.my_key, tls.my_cert)], root_certificates=tls.peer_ca, require_client_auth=bool(tls.peer_ca)
  )
  return server.add_secure_port(local_addr, creds)


class PeerChannel(object):
  """The channel to the peer's address: opened at first use, opened anew when the address changes.

  The address changes before connect() only, e.g. once a party whose peer_addr has port 0 learned the port.
  """

  def __init__(self, config):
    self._config = config
    self._lock = threading.Lock()
    self._channel = None

  def set_peer_addr(self, peer_addr):
    with self._lock:
      if peer_addr != self._config.peer_addr:
        self._config = self._config._replace(peer_addr=peer_addr)
        self._close_locked()

  def get(self):
    with self._lock:
      if self._channel is None:
        self._channel = open_channel(self._config)
      return self._channel

  def hello(self, greeting, timeout_s):
    """Calls the peer's Hello with `greeting`; returns its Greeting or raises grpc.RpcError."""
    return pb_grpc.PeerServiceStub(self.get()).Hello(greeting, timeout=timeout_s)

  def close(self):
    with self._lock:
      self._close_locked()

  def _close_locked(self):
    if self._channel is not None:
      self._channel.close()
      self._channel = None
