"""The transport's shared tables (efl/transport/wire.py, the protocol's Frame) reach both languages."""

import os

import pytest
import tensorflow.compat.v1 as tf
from tensorflow.python.framework import op_def_registry

from efl import native
from efl.transport import errors
from efl.communicator import ops
from efl.transport import wire
from efl.communicator.proto import communicator_pb2
from efl.native import build


def test_every_result_code_names_a_communicator_error():
  codes = [entry.code for entry in wire.RESULT_CODES]
  assert len(set(codes)) == len(codes) and 0 not in codes
  for entry in wire.RESULT_CODES:
    cls = getattr(errors, entry.error_class)
    assert issubclass(cls, errors.CommunicatorError), entry
    assert native._ERRORS[entry.code] is cls  # pylint: disable=protected-access
  assert wire.code('TIMEOUT') == 5
  with pytest.raises(KeyError, match='no result code .NOPE.'):
    wire.code('NOPE')


def test_header_holds_the_protocol_field_numbers_and_the_tables():
  text = build.wire_header_text()
  for field in communicator_pb2.Frame.DESCRIPTOR.fields:
    assert 'k%s = %d' % (field.name.capitalize(), field.number) in text, field.name
  for entry in wire.RESULT_CODES:
    assert '"%s"' % entry.error_class in text
  # Renumbering a field in the protocol would reach the C++ through the header, not be missed.
  frame = communicator_pb2.Frame(name='x', step=3, raw=b'ab')
  assert frame.SerializeToString()[0] >> 3 == communicator_pb2.Frame.DESCRIPTOR.fields_by_name['name'].number


def _native_or_skip():
  ok, why = native.available()
  if not ok:
    pytest.skip('native transport not built: %s' % why)
  return native.load()[0]


def test_built_library_was_compiled_from_the_current_tables():
  _native_or_skip()
  with open(build.WIRE_HEADER) as f:
    assert f.read() == build.wire_header_text(), 'rebuild: python -m efl.native.build'
  # Compiled after the header it includes.
  assert os.path.getmtime(native.OPS_LIBRARY) >= os.path.getmtime(build.WIRE_HEADER)


def test_kernel_dtypes_are_the_python_tables():
  _native_or_skip()
  for op_name in ('EflNativeSend', 'EflNativeRecv'):
    op_def = (
      op_def_registry.get(op_name)
      if hasattr(op_def_registry, 'get')  # TF 2
      else op_def_registry.get_registered_ops()[op_name]
    )
    attr = [a for a in op_def.attr if a.name == 'T'][0]
    allowed = {tf.as_dtype(t) for t in attr.allowed_values.list.type}
    assert allowed == set(ops.SUPPORTED_DTYPES) - {tf.string}, op_name
