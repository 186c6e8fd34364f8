"""EFLS's module path of `LoggerHook`."""

from efl.framework.hooks import LoggerHook  # noqa: F401
