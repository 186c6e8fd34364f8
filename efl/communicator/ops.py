"""TF graph ops over a `Communicator`: `send` and `recv`.

Where the communicator has the native transport (`comm.native`), they are its C++ kernels, which move
tensors without entering Python; strings, and every dtype on the Python transport, use `tf.py_func`s around
`comm.send`/`comm.recv`. Both kinds follow the same rules and raise the same errors.

Both register their name with the communicator when the graph is built, and use `comm.step` when they run,
so they must run inside the session runs that advance the step (see `Communicator.step`). With `sync=False`
each op numbers its own messages 0, 1, 2, ... instead, for ordered side channels.

The native `recv` kernel is asynchronous: while it waits it holds no thread. A waiting `py_func` receive does
hold a thread of the session's inter-op pool; if all threads wait, a `send` of the same run that the peer needs
first can never run, and both parties stall. Sessions that run these ops therefore build their config with
`session_config()`, which gives the pool a thread for each such receive.
"""

import itertools
import threading
import weakref

import numpy as np
import tensorflow.compat.v1 as tf

from efl.transport import wire

# The native kernels' dtypes (one table with the C++ side), and strings, which the Python ops carry.
_NATIVE_DTYPES = tuple(tf.as_dtype(name) for name, _ in wire.NATIVE_DTYPES)
SUPPORTED_DTYPES = _NATIVE_DTYPES + (tf.string,)


# Per communicator, the names its native (asynchronous) recv kernels receive: they need no pool thread.
_ASYNC_RECVS = weakref.WeakKeyDictionary()


def _check_dtype(dtype, what):
  dtype = tf.as_dtype(dtype)
  if dtype not in SUPPORTED_DTYPES:
    raise TypeError('%s supports dtypes %s, got %s' % (what, ', '.join(d.name for d in SUPPORTED_DTYPES), dtype.name))
  return dtype


def session_config(config=None, comm=None, min_threads=None):
  """Returns a `tf.ConfigProto` whose inter-op pool cannot be filled by waiting `recv` ops.

  With `comm`, the pool has one thread for each received name whose receive waits on a thread (a `py_func`:
  strings, the Python transport, side channels that call `comm.recv`) and one more for the rest of the run;
  the native kernels' receives wait without one. More threads cost time: a party pinned to one core switches
  between them at every op (a pool of 16 made the federated MNIST network slower than one of 5: by 12% at
  batch 4096 and 22% at batch 256, medians of three alternating pairs).

  Args:
    config: a `tf.ConfigProto` to extend (copied, not modified), or None.
    comm: the `Communicator` whose names the graph sends and receives.
    min_threads: the least number of inter-op threads (default: 2 with `comm`, else 16, since the number of
        receives is then unknown).

  Returns:
    The config, with its own (per-session) inter-op pool of enough threads.
  """
  out = tf.ConfigProto()
  if config is not None:
    out.CopyFrom(config)
  if comm is None:
    needed = 16 if min_threads is None else min_threads
  else:
    waiting = [n for n in comm.recv_names if n not in _ASYNC_RECVS.get(comm, ())]
    needed = max(2 if min_threads is None else min_threads, len(waiting) + 1)
  out.inter_op_parallelism_threads = max(out.inter_op_parallelism_threads, needed)
  # The global pool keeps the size the process's first session gave it; a session-owned pool gets this one.
  out.use_per_session_threads = True
  return out


class _Sequence(object):
  """Thread-safe counter of an unsynced channel."""

  def __init__(self):
    self._lock = threading.Lock()
    self._next = itertools.count()

  def next(self):
    with self._lock:
      return next(self._next)


def send(comm, name, tensor, sync=True):
  """Returns an op that sends `tensor` to the peer under `name` when run.

  Args:
    comm: the `Communicator`.
    name: message name; the peer must `recv` it.
    tensor: a tensor of a supported dtype.
    sync: tag with `comm.step` (True) or with this op's own sequence number (False).

  Returns:
    The send op (no outputs).
  """
  tensor = tf.convert_to_tensor(tensor)
  _check_dtype(tensor.dtype, 'efl send(%r)' % name)
  comm.register_send(name)
  if _native(comm, tensor.dtype):
    return comm.native.ops.efl_native_send(
      tensor, endpoint=comm.native.name, message_name=name, sync=sync, name=_op_name('send', name)
    )
  sequence = None if sync else _Sequence()

  def _send(value):
    step = comm.step if sync else sequence.next()
    comm.send(name, step, value, sync=sync)

  return tf.py_func(_send, [tensor], [], stateful=True, name=_op_name('send', name))


def recv(comm, name, dtype, shape=None, sync=True):
  """Returns a tensor that receives the peer's message `name` when evaluated.

  Args:
    comm: the `Communicator`.
    name: message name; the peer must `send` it.
    dtype: the dtype the peer sends (checked when the message arrives).
    shape: optional shape to reshape to (one dimension may be -1); without it the shape is unknown.
    sync: expect the `comm.step` tag (True) or this op's own sequence number (False).

  Returns:
    The received tensor.
  """
  dtype = _check_dtype(dtype, 'efl recv(%r)' % name)
  comm.register_recv(name)
  if _native(comm, dtype):
    _ASYNC_RECVS.setdefault(comm, set()).add(name)
    out = comm.native.ops.efl_native_recv(
      T=dtype,
      endpoint=comm.native.name,
      message_name=name,
      sync=sync,
      timeout_s=comm.recv_timeout_s,
      name=_op_name('recv', name),
    )
    return out if shape is None else tf.reshape(out, shape)
  sequence = None if sync else _Sequence()
  expected = np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)

  def _recv():
    step = comm.step if sync else sequence.next()
    value = comm.recv(name, step, sync=sync)
    if value.dtype != expected:
      raise TypeError(
        'recv(%r) at step %d expects %s but the peer sent %s; use the same dtype on both '
        'sides' % (name, step, dtype.name, 'string' if value.dtype == object else value.dtype)
      )
    return value

  out = tf.py_func(_recv, [], dtype, stateful=True, name=_op_name('recv', name))
  if shape is not None:
    out = tf.reshape(out, shape)
  return out


def _native(comm, dtype):
  return comm.native is not None and dtype in _NATIVE_DTYPES


def _op_name(kind, name):
  # Scope names allow [A-Za-z0-9_.\-/]; others become '_'.
  return 'efl_%s_%s' % (kind, ''.join(c if c.isalnum() or c in '_.-' else '_' for c in name))
