"""EFLS-compatible location of the communicator's TF ops: `from efl.lib import ops; ops.send(...)`."""

from efl.communicator.ops import recv, send, session_config, SUPPORTED_DTYPES  # pylint: disable=unused-import
