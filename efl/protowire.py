"""Protobuf wire-format primitives shared by the modules that write or read messages without building protos."""

import operator

_ONE_BYTE = [bytes([v]) for v in range(0x80)]


def varint(value):
  """Encodes one integer as a protobuf varint.

  Args:
    value: an int in [-2**63, 2**64); a negative one is encoded as protobuf encodes int64, in 10 bytes.

  Returns:
    The encoding, `bytes`.

  Raises:
    TypeError: the value is not an integer.
    ValueError: the value does not fit in 64 bits.
  """
  value = operator.index(value)
  if 0 <= value < 0x80:
    return _ONE_BYTE[value]
  if not -(1 << 63) <= value < (1 << 64):
    raise ValueError('A varint holds an int64 or a uint64. Found %r.' % (value,))
  value &= (1 << 64) - 1
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def read_varint(buf, pos, end):
  """Decodes the varint at `buf[pos:end]`; returns (value, position after it).

  Raises:
    ValueError: the varint runs past `end` or over 10 bytes.
  """
  value = shift = 0
  while pos < end and shift < 70:
    byte = buf[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7
  raise ValueError('truncated or overlong varint before byte %d' % end)


def fields(buf, start, end):
  """Yields (field number, wire type, start of the field's key, start of its value, end) of a message's fields.

  For length-delimited fields (wire type 2) the value starts after the length.

  Raises:
    ValueError: the bytes are not a well-formed message.
  """
  pos = start
  while pos < end:
    key_start = pos
    key, pos = read_varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if wire == 0:
      _, stop = read_varint(buf, pos, end)
    elif wire == 2:
      length, pos = read_varint(buf, pos, end)
      stop = pos + length
    elif wire == 1:
      stop = pos + 8
    elif wire == 5:
      stop = pos + 4
    else:
      raise ValueError('unsupported wire type %d of field %d at byte %d' % (wire, number, key_start))
    if stop > end:
      raise ValueError('field %d at byte %d runs past the end of its message (byte %d)' % (number, key_start, end))
    yield number, wire, key_start, pos, stop
    pos = stop
