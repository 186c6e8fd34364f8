"""Conversion between numpy arrays and `efl.Frame` messages, the only place that knows the wire format.

Numeric and bool arrays travel as their little-endian bytes in C order. Arrays of byte strings (TF strings,
numpy object arrays of `bytes`) travel as the int64 lengths of the elements followed by the concatenated
elements; `str` elements are encoded as UTF-8 and come back as `bytes`. Nothing is pickled.
"""

import collections

import numpy as np
from google.protobuf.message import DecodeError

from efl import protowire
from efl.transport.errors import CommunicatorError
from efl.communicator.proto import communicator_pb2 as pb
from efl.protowire import varint

STRING = 'string'
_NUMERIC = frozenset(
  np.dtype(t).name
  for t in (
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
  )
)
_LENGTH = np.dtype('<i8')

# Field 1 (`Frames.frames`), wire type 2 (length-delimited).
_FRAMES_TAG = bytes([(1 << 3) | 2])
_RAW_FIELD = pb.Frame.DESCRIPTOR.fields_by_name['raw'].number
_RAW_TAG = bytes([(_RAW_FIELD << 3) | 2])
_EMPTY = memoryview(b'')
_SMALL_FRAME = 1 << 16  # bytes
# Little-endian and native dtypes of the numeric wire dtypes.
_WIRE_DTYPES = {name: (np.dtype(name).newbyteorder('<'), np.dtype(name)) for name in _NUMERIC}
_WIRE_NAMES = {}  # np.dtype -> its wire name
_STEP_TAG = bytes([(pb.Frame.DESCRIPTOR.fields_by_name['step'].number << 3) | 0])
# Serialized DATA frame fields but `step` and `raw`, by (name, dtype, shape, sync, phase): a channel sends the
# same layout at every step, and building a protobuf message costs more than the rest of the encoding.
_HEADERS = {}
_MAX_HEADERS = 4096
DATA = pb.Frame.DATA
BYE = pb.Frame.BYE
ERROR = pb.Frame.ERROR


def wire_dtype(dtype):
  """Returns the wire name of a numpy dtype ('float32', ..., 'string').

  Raises:
    TypeError: for dtypes that cannot be sent (structured, datetime, ...).
  """
  # numpy computes `dtype.name` in Python; once per dtype is enough (every send asks).
  name = _WIRE_NAMES.get(dtype) if isinstance(dtype, np.dtype) else None
  if name is not None:
    return name
  dtype = np.dtype(dtype)
  if dtype.kind in 'OSU':
    name = STRING
  elif dtype.name in _NUMERIC:
    name = dtype.name
  else:
    raise TypeError(
      'cannot send arrays of dtype %s; supported: bool, (u)int8-64, float16/32/64, '
      'complex64/128 and byte strings' % dtype
    )
  _WIRE_NAMES[dtype] = name
  return name


def _encode_strings(array):
  items = []
  for i, item in enumerate(array.ravel(order='C')):
    if isinstance(item, bytes):
      items.append(item)
    elif isinstance(item, str):
      items.append(item.encode('utf-8'))
    else:
      raise TypeError('a string array may only hold bytes or str; element %d is a %s' % (i, type(item).__name__))
  lengths = np.fromiter((len(b) for b in items), dtype=_LENGTH, count=len(items))
  return lengths.tobytes() + b''.join(items)


def _decode_strings(raw, shape, name):
  count = int(np.prod(shape, dtype=np.int64))
  head = count * _LENGTH.itemsize
  if len(raw) < head:
    raise CommunicatorError('corrupt string frame %r: %d bytes cannot hold %d lengths' % (name, len(raw), count))
  lengths = np.frombuffer(raw, dtype=_LENGTH, count=count)
  ends = head + np.cumsum(lengths)
  if count and int(ends[-1]) != len(raw):
    raise CommunicatorError(
      'corrupt string frame %r: lengths sum to %d bytes, frame has %d' % (name, int(ends[-1]) - head, len(raw) - head)
    )
  view = memoryview(raw)
  out = np.empty(count, dtype=object)
  start = head
  for i, end in enumerate(ends.tolist()):
    out[i] = bytes(view[start:end])
    start = end
  return out.reshape(shape)


class Message(collections.namedtuple('Message', ['header', 'payload'])):
  """A received frame: `header`, its `efl.Frame` (whose `raw` is not read), and `payload`, the raw bytes.

  For a large frame the payload is a memoryview into the received message, so that the tensor is copied only
  once, by `decode`.
  """

  __slots__ = ()


def encode_record(name, step, array, sync=True, phase=''):
  """Returns the DATA frame of `array` serialized as one entry of `Frames.frames` (see `to_record`).

  The array's bytes are copied once, into the record. The frame's other fields but `step` are serialized by
  protobuf once per layout and cached; `step` and `raw` are appended by hand (protobuf accepts fields in any
  order).

  Args:
    name: channel name.
    step: run counter (sync) or sequence number.
    array: anything `np.asarray` accepts; numeric, bool, or byte/str strings.
    sync: whether `step` is the run counter.
    phase: for sync frames, what the sender's run of `step` does (see `Communicator.set_phase`).

  Raises:
    TypeError: for an unsupported dtype or a non-string element in a string array.
  """
  array = np.asarray(array)
  dtype = wire_dtype(array.dtype)
  if dtype == STRING:
    payload = _encode_strings(array)
  else:
    if array.dtype.byteorder == '>':
      array = array.astype(array.dtype.newbyteorder('<'))
    payload = _bytes_view(array)
  phase = phase if sync else ''
  key = (name, dtype, array.shape, bool(sync), phase)
  head = _HEADERS.get(key)
  if head is None:
    head = pb.Frame(
      name=name, sync=bool(sync), kind=DATA, dtype=dtype, shape=array.shape, phase=phase
    ).SerializeToString()
    if len(_HEADERS) >= _MAX_HEADERS:  # Shapes that change every step must not grow the cache forever.
      _HEADERS.clear()
    _HEADERS[key] = head
  # Fields may come in any order: the step follows the cached fields, `raw` comes last.
  header = head + _STEP_TAG + varint(int(step))
  raw_head = _RAW_TAG + varint(len(payload))
  size = len(header) + len(raw_head) + len(payload)
  return b''.join((_FRAMES_TAG, varint(size), header, raw_head, payload))


def _bytes_view(array):
  """The bytes of a numeric array in C order, without a copy when it is C-contiguous."""
  try:
    return memoryview(array).cast('B')  # The cheapest view; refused for empty or non-contiguous arrays.
  except (TypeError, ValueError):
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def parse_frames(data):
  """Returns the `Message`s of a serialized `Frames` message, in order.

  Raises:
    CommunicatorError: the bytes are not a well-formed `Frames` message.
  """
  view = memoryview(data)
  try:
    return [
      _frame_at(data, view, start, stop)
      for number, wire, _, start, stop in protowire.fields(data, 0, len(data))
      if number == 1 and wire == 2
    ]  # Other fields would be of a newer protocol version.
  except (ValueError, DecodeError) as e:
    raise CommunicatorError('corrupt message from the peer (%d bytes): %s' % (len(data), e))


def parse_frame(data):
  """Returns the `Message` of one serialized `efl.Frame` (bytes, or a byte-format memoryview).

  Raises:
    CommunicatorError: the bytes are not a well-formed frame.
  """
  try:
    return _frame_at(data, memoryview(data), 0, len(data))
  except (ValueError, DecodeError) as e:
    raise CommunicatorError('corrupt frame from the peer (%d bytes): %s' % (len(data), e))


def _frame_at(data, view, start, stop):
  if stop - start <= _SMALL_FRAME:  # protobuf's own parser is faster, and copying a small raw is cheap
    frame = pb.Frame.FromString(view[start:stop])
    return Message(frame, frame.raw)
  header, payload = [], _EMPTY
  for number, wire, key_start, f_start, f_stop in protowire.fields(data, start, stop):
    if number == _RAW_FIELD and wire == 2:
      payload = view[f_start:f_stop]
    else:
      header.append(data[key_start:f_stop])
  return Message(pb.Frame.FromString(b''.join(header)), payload)


def decode(message):
  """Returns the array of a DATA `Message` (writable; strings as an object array of `bytes`).

  Raises:
    CommunicatorError: if the frame is corrupt or has an unknown dtype.
  """
  frame, raw = message
  shape = tuple(frame.shape)
  if frame.dtype == STRING:
    return _decode_strings(raw, shape, frame.name)
  if frame.dtype not in _WIRE_DTYPES:
    raise CommunicatorError('frame %r has unknown dtype %r' % (frame.name, frame.dtype))
  dtype, native = _WIRE_DTYPES[frame.dtype]
  count = 1
  for dim in shape:
    count *= dim
  if len(raw) != count * dtype.itemsize:
    raise CommunicatorError(
      'corrupt frame %r: shape %s of %s needs %d bytes, frame has %d'
      % (frame.name, list(shape), frame.dtype, count * dtype.itemsize, len(raw))
    )
  # One copy: into an aligned, writable array of native byte order that does not hold the message alive.
  return np.frombuffer(raw, dtype=dtype, count=count).astype(native).reshape(shape)


def to_record(frame):
  """Returns `frame` serialized as one entry of `Frames.frames`.

  A repeated message field is its entries' records concatenated, so the writer can join queued records into
  one `Frames` message without parsing them again.
  """
  data = frame.SerializeToString()
  return _FRAMES_TAG + varint(len(data)) + data


def control(kind, text=''):
  """Builds a BYE or ERROR frame."""
  return pb.Frame(kind=kind, text=text)
