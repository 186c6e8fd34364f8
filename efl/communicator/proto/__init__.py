"""Generated gRPC code of `protos/efl/communicator.proto`: `communicator_pb2`, `communicator_pb2_grpc`.

The modules are generated, never kept in git: by setup.py's build step for `pip install .` and the wheel, and by
`make setup` (`python -m efl.communicator.build_proto`) in a source checkout. Importing never writes them. They
lie in `protobuf<major>/`, the directory of the protobuf they run on (see `_codegen`).
"""

import importlib
import os
import warnings

from efl.communicator.proto import _codegen

try:
  _PACKAGE = _codegen.generated_package()
  communicator_pb2 = importlib.import_module(_PACKAGE + '.communicator_pb2')
  communicator_pb2_grpc = importlib.import_module(_PACKAGE + '.communicator_pb2_grpc')
except ImportError as _e:
  raise ImportError(_codegen.import_error_message(_e)) from _e

if _codegen.is_stale():
  # Only in a source checkout: the .proto changed after the code was generated.
  warnings.warn(
    'efl.communicator.proto: the generated modules in %s are older than %s; regenerate them with '
    '`make proto` or `python -m efl.communicator.build_proto`'
    % (os.path.join(_codegen.OUT_DIR, _codegen.subdir()), ', '.join(_codegen.proto_sources())),
    stacklevel=2,
  )
