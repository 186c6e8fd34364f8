"""Regenerates efl's gRPC code: `python -m efl.communicator.build_proto` (`protos/efl/*.proto` ->
`efl/communicator/proto/`)."""
import sys

from efl.communicator.proto import _codegen


def main():
  _codegen.build()
  print('generated: ' + ', '.join(p for s in _codegen.proto_sources() for p in _codegen.generated_paths(s)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
