"""Round trips of arrays through frames, bit-exact, without a network."""

import numpy as np
import pytest

from efl.transport import serde
from efl.transport.errors import CommunicatorError
from efl.communicator.proto import communicator_pb2 as pb


def _roundtrip(array):
  messages = serde.parse_frames(serde.encode_record('t', 3, array))
  assert len(messages) == 1 and messages[0].header.name == 't' and messages[0].header.step == 3
  return serde.decode(messages[0])


@pytest.mark.parametrize(
  'dtype',
  [
    'bool',
    'int8',
    'int16',
    'int32',
    'int64',
    'uint8',
    'uint16',
    'uint32',
    'uint64',
    'float16',
    'float32',
    'float64',
    'complex64',
    'complex128',
  ],
)
def test_numeric_roundtrip_is_bit_exact(dtype):
  rng = np.random.RandomState(0)
  raw = rng.bytes(6 * 5 * np.dtype(dtype).itemsize)
  array = np.frombuffer(raw, dtype=dtype).reshape(6, 5)
  if dtype == 'bool':
    array = array.view(np.uint8) % 2 == 1
  out = _roundtrip(array)
  assert out.dtype == array.dtype and out.shape == array.shape
  assert out.tobytes() == array.tobytes()  # Bit-exact, NaN payloads included.
  out[0, 0] = out[0, 1]  # Writable.


def test_shapes_scalar_empty_noncontiguous_and_big_endian():
  assert _roundtrip(np.float32(2.5)).shape == ()
  assert _roundtrip(np.zeros((0, 7), np.int64)).shape == (0, 7)
  base = np.arange(24, dtype=np.int32).reshape(4, 6)
  np.testing.assert_array_equal(_roundtrip(base[:, ::2].T), base[:, ::2].T)
  big = np.arange(5, dtype='>f8')
  out = _roundtrip(big)
  assert out.dtype == np.float64 and out.tolist() == big.tolist()


def test_strings_roundtrip():
  array = np.array([[b'', b'a\x00b'], ['h\u00e9'.encode('utf-8'), b'x' * 1000]], dtype=object)
  out = _roundtrip(array)
  assert out.dtype == object and out.shape == (2, 2)
  assert out.tolist() == array.tolist()
  assert _roundtrip(np.array(['ab', 'c'])).tolist() == [b'ab', b'c']  # numpy unicode -> UTF-8 bytes
  assert _roundtrip(np.array([], dtype=object)).shape == (0,)


def test_refuses_what_it_cannot_send():
  with pytest.raises(TypeError, match='datetime64'):
    serde.encode_record('t', 0, np.array(['2020-01-01'], dtype='datetime64[D]'))
  with pytest.raises(TypeError, match='element 1 is a int'):
    serde.encode_record('t', 0, np.array([b'a', 3], dtype=object))


def test_corrupt_frame_is_reported():
  message = serde.parse_frames(serde.encode_record('t', 0, np.zeros(4, np.float32)))[0]
  message.header.shape[:] = [5]
  with pytest.raises(CommunicatorError, match="corrupt frame 't'"):
    serde.decode(message)
  with pytest.raises(CommunicatorError, match='corrupt message from the peer'):
    serde.parse_frames(serde.encode_record('t', 0, np.zeros(4, np.float32))[:-3])


def test_records_are_protobuf_frames_and_join():
  """Hand-built records parse as `Frames` with protobuf itself, and concatenated records as one message."""
  records = [
    serde.encode_record('a', 7, np.arange(6, dtype=np.float32).reshape(2, 3), phase='train'),
    serde.to_record(serde.control(serde.BYE)),
    serde.encode_record('b', 8, np.array([b'x', b'yz'], dtype=object), sync=False),
  ]
  parsed = pb.Frames.FromString(b''.join(records)).frames
  assert [f.name for f in parsed] == ['a', '', 'b'] and [f.kind for f in parsed] == [serde.DATA, serde.BYE, serde.DATA]
  assert (parsed[0].step, parsed[0].sync, parsed[0].phase, list(parsed[0].shape)) == (7, True, 'train', [2, 3])
  assert parsed[0].raw == np.arange(6, dtype=np.float32).tobytes()
  messages = serde.parse_frames(b''.join(records))
  assert [m.header.kind for m in messages] == [serde.DATA, serde.BYE, serde.DATA]
  np.testing.assert_array_equal(serde.decode(messages[0]), np.arange(6, dtype=np.float32).reshape(2, 3))
  assert serde.decode(messages[2]).tolist() == [b'x', b'yz'] and not messages[2].header.sync


def test_large_frames_are_parsed_without_protobuf_and_roundtrip():
  """Frames above the small-frame size take the zero-copy path: strings, byte order and neighbours survive."""
  strings = np.array([b'x' * 50000, b'', b'yz' * 30000], dtype=object)
  big_endian = np.arange(100000, dtype='>f8').reshape(1000, 100)
  data = b''.join(
    [
      serde.encode_record('s', 1, strings),
      serde.encode_record('b', 2, big_endian),
      serde.encode_record('c', 3, np.float32(1.5)),
    ]
  )
  messages = serde.parse_frames(data)
  assert [m.header.name for m in messages] == ['s', 'b', 'c']
  assert isinstance(messages[0].payload, memoryview) and isinstance(messages[1].payload, memoryview)
  assert serde.decode(messages[0]).tolist() == strings.tolist()
  out = serde.decode(messages[1])
  assert out.dtype == np.float64 and out.flags.writeable and np.array_equal(out, big_endian)
  assert serde.decode(messages[2]) == np.float32(1.5) and messages[2].header.step == 3


def test_cached_layouts_carry_each_records_own_step_shape_and_phase():
  """A channel's frame layout is serialized once; every record still parses with its own fields."""
  cases = [
    (0, (2, 3), 'train', True),
    (127, (2, 3), 'train', True),
    (128, (2, 3), 'eval', True),
    (1 << 40, (4, 3), 'train', True),
    (5, (2, 3), 'train', False),
    (-1, (2, 3), 'train', True),
  ]
  for step, shape, phase, sync in cases:
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + step
    frame = pb.Frames.FromString(serde.encode_record('a', step, array, sync=sync, phase=phase)).frames[0]
    assert (frame.name, frame.step, frame.sync, list(frame.shape)) == ('a', step, sync, list(shape))
    assert frame.phase == (phase if sync else '') and frame.kind == serde.DATA
    assert frame.raw == array.tobytes()
