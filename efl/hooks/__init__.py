"""Hooks: `LoggerHook`, `CommunicatorHook`, and the scoped dispatch every run goes through."""

from efl.framework.hooks import (
  ALL_SCOPES,
  CommunicatorHook,
  HookRegistry,
  LoggerHook,  # noqa: F401
  ScopedHookDispatcher,
  with_tmp_hooks,
)
