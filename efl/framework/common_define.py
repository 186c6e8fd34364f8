"""EFLS's module of shared constants: `from efl.framework.common_define import *` gives `MODE`."""

from efl.mode import MODE  # noqa: F401

STAGE_WAIT_RATIO = 'stage_wait_ratio'  # run_stage keyword: share of workers a stage waits for
STAGE_TIMEOUT = 'stage_timeout'
COMPILE_ARGS = 'compile_args'
DEFAULT_STAGE_TIMEOUT = 600  # seconds
STAGE_CHECK_INTERVAL = 10  # seconds

__all__ = ['MODE', 'STAGE_WAIT_RATIO', 'STAGE_TIMEOUT', 'COMPILE_ARGS', 'DEFAULT_STAGE_TIMEOUT', 'STAGE_CHECK_INTERVAL']
