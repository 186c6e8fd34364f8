"""Reads the communicator's environment variables; no other module reads them.

- `EFL_PEER_CERTS_FILENAME` (root CA, PEM): the client uses TLS and verifies the peer's server with it; the
  server requires client certificates signed by it.
- `EFL_MY_CERTS_FILENAME`, `EFL_MY_KEY_FILENAME` (PEM): this party's certificate chain and key; with both set
  the server uses TLS, and the client presents them.
- `EFL_SSL_TARGET_NAME_OVERRIDE`: the host name the client expects in the peer's certificate.
- `EFL_{CLIENT,SERVER}_MAX_{SEND,RECEIVE}_MESSAGE_SIZE` (bytes, default 1<<30): gRPC message size limits.
- `EFL_CONNECT_TIMEOUT_S` (default 120): how long `connect()` waits for the peer.
- `EFL_RECV_TIMEOUT_S` (unset): overrides `default_timeout_milliseconds` of `recv()`.
- `EFL_CLOSE_TIMEOUT_S` (default 10): how long `close()` waits for the peer's last frames.
- `EFL_RECOVERY_TIMEOUT_S` (unset: off): with it, a FederalModel whose peer is lost waits this long for the
  peer's new process, then resumes with it from their common checkpoint.
- `EFL_PEER_TIMEOUT_S` (default 25): a peer whose process answers nothing for this long (stopped, its host
  frozen, the network dropping packets) is lost; a killed one is seen at once from its closed connection.
- `EFL_NATIVE_TRANSPORT` (`auto`, `on`, `off`; default `auto`): whether data frames and the send/recv ops use
  the native transport (see `efl.native`).
"""

import collections
import os

DEFAULT_MAX_MESSAGE_SIZE = 1 << 30
# gRPC counts message sizes in a signed 32-bit int.
_MAX_GRPC_MESSAGE_SIZE = (1 << 31) - 1

TLSConfig = collections.namedtuple('TLSConfig', ['peer_ca', 'my_cert', 'my_key', 'target_name_override'])


def _env_str(name):
  return os.environ.get(name, '').strip()


def _env_number(name, default, cast, minimum=None):
  raw = _env_str(name)
  if not raw:
    return default
  try:
    value = cast(raw)
  except ValueError:
    raise ValueError('environment variable %s must be a number, got %r' % (name, raw))
  if minimum is not None and value < minimum:
    raise ValueError('environment variable %s must be >= %s, got %s' % (name, minimum, raw))
  return value


def message_size(side, direction):
  """Returns the limit of `EFL_{side}_MAX_{direction}_MESSAGE_SIZE` in bytes.

  Args:
    side: 'CLIENT' or 'SERVER'.
    direction: 'SEND' or 'RECEIVE'.
  """
  name = message_size_variable(side, direction)
  value = _env_number(name, DEFAULT_MAX_MESSAGE_SIZE, int, minimum=1)
  if value > _MAX_GRPC_MESSAGE_SIZE:
    raise ValueError(
      "environment variable %s must be at most %d (gRPC's limit), got %d" % (name, _MAX_GRPC_MESSAGE_SIZE, value)
    )
  return value


def message_size_variable(side, direction):
  return 'EFL_%s_MAX_%s_MESSAGE_SIZE' % (side, direction)


def connect_timeout_s():
  return _env_number('EFL_CONNECT_TIMEOUT_S', 120.0, float, minimum=0)


def close_timeout_s():
  return _env_number('EFL_CLOSE_TIMEOUT_S', 10.0, float, minimum=0)


def recovery_timeout_s():
  """`EFL_RECOVERY_TIMEOUT_S` in seconds, or None when recovery is off (the default)."""
  return _env_number('EFL_RECOVERY_TIMEOUT_S', None, float, minimum=1)


Keepalive = collections.namedtuple('Keepalive', ['time_ms', 'timeout_ms', 'timeout_s'])


def keepalive():
  """The gRPC keepalive from `EFL_PEER_TIMEOUT_S`: a ping every 40% of it, and the rest to wait for the answer.

  25 s (10 s + 15 s) leaves a peer whose cores are saturated (e.g. by Paillier workers) time to answer.
  """
  timeout_s = _env_number('EFL_PEER_TIMEOUT_S', 25.0, float, minimum=1)
  time_ms = int(timeout_s * 400)
  return Keepalive(time_ms, int(timeout_s * 1000) - time_ms, timeout_s)


def recv_timeout_s(default_timeout_milliseconds=None):
  """`EFL_RECV_TIMEOUT_S` if set, else `default_timeout_milliseconds` (default 600000) in seconds."""
  env = _env_number('EFL_RECV_TIMEOUT_S', None, float, minimum=0)
  if env is not None:
    return env
  if default_timeout_milliseconds is None:
    return 600.0
  return default_timeout_milliseconds / 1000.0


NATIVE_MODES = ('auto', 'on', 'off')


def native_transport():
  """`EFL_NATIVE_TRANSPORT`: 'auto' (default), 'on' or 'off'."""
  mode = _env_str('EFL_NATIVE_TRANSPORT').lower() or 'auto'
  if mode not in NATIVE_MODES:
    raise ValueError(
      'environment variable EFL_NATIVE_TRANSPORT must be one of %s, got %r' % (', '.join(NATIVE_MODES), mode)
    )
  return mode


def _read(var):
  path = _env_str(var)
  if not path:
    return None
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise ValueError('cannot read the file named by %s=%s: %s' % (var, path, e))


def tls_config():
  """Returns a `TLSConfig` of PEM bytes (None where unset) from the TLS variables.

  Raises:
    ValueError: if only one of EFL_MY_CERTS_FILENAME / EFL_MY_KEY_FILENAME is set, or a file is unreadable.
  """
  if bool(_env_str('EFL_MY_CERTS_FILENAME')) != bool(_env_str('EFL_MY_KEY_FILENAME')):
    raise ValueError(
      'EFL_MY_CERTS_FILENAME and EFL_MY_KEY_FILENAME must be set together (got %r and %r)'
      % (_env_str('EFL_MY_CERTS_FILENAME'), _env_str('EFL_MY_KEY_FILENAME'))
    )
  return TLSConfig(
    peer_ca=_read('EFL_PEER_CERTS_FILENAME'),
    my_cert=_read('EFL_MY_CERTS_FILENAME'),
    my_key=_read('EFL_MY_KEY_FILENAME'),
    target_name_override=_env_str('EFL_SSL_TARGET_NAME_OVERRIDE') or None,
  )


TLS_VARIABLES = 'EFL_PEER_CERTS_FILENAME, EFL_MY_CERTS_FILENAME, EFL_MY_KEY_FILENAME and EFL_SSL_TARGET_NAME_OVERRIDE'
