"""EFLS-compatible aliases: `efl.lib.ops` holds the communicator's TF ops."""
