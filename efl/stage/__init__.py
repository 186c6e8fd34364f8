"""Stages: `Stage`, `LoopStage`, `ModelBank` (EFLS's `efl.stage` package); the manager runs them once each."""

from efl.framework.stage import ConfigItem, LoopStage, ModelBank, Stage, StageManager  # noqa: F401
