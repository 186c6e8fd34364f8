"""EFLS's module path of `ModelBank` and its `ConfigItem`."""

from efl.framework.stage import ConfigItem, ModelBank  # noqa: F401
