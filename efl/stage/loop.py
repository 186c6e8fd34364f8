"""EFLS's module path of `LoopStage`."""

from efl.framework.stage import LoopStage  # noqa: F401
