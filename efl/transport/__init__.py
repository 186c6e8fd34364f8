"""What both transports and their users share, below `efl.communicator` and `efl.native`.

`errors`: the error classes of the transport (the peer failed, closed, is unreachable, ...); `wire`: the tables
both languages of the transport use (result codes, kernel dtypes). Neither imports a transport, so the
communicator and the native transport import them without importing each other.
"""
