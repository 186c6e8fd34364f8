"""EFLS's module path of `redirect_log` (INFO to stdout, warnings and errors to stderr)."""

from efl.log import redirect_log  # noqa: F401
