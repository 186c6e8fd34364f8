"""EFLS's module path of task scopes: `from efl.framework import task_scope; task_scope.task_scope(...)`."""

from efl.mode import TaskScope, current_task_scope, task_scope  # noqa: F401
