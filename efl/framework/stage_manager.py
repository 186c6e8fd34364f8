"""EFLS's module path of `StageManager`."""

from efl.framework.stage import StageManager  # noqa: F401
