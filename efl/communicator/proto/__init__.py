"""Generated gRPC code of `protos/efl/communicator.proto` (built by `python -m efl.communicator.build_proto`).

Importing this package regenerates the modules when they are missing or older than the `.proto`.
"""
from efl.communicator.proto import _codegen

if _codegen.is_stale():
  _codegen.build()

try:
  from efl.communicator.proto import communicator_pb2  # pylint: disable=g-import-not-at-top
  from efl.communicator.proto import communicator_pb2_grpc  # pylint: disable=g-import-not-at-top
except ImportError as _e:
  raise ImportError("efl's generated gRPC modules cannot be imported (%s); run `make setup` or "
                    '`python -m efl.communicator.build_proto`' % _e)
