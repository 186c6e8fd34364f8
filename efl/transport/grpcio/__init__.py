"""The grpcio transport (pure Python, always available): see `transport`."""

from efl.transport.grpcio.transport import GrpcioTransport
