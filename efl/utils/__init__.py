"""EFLS's utility modules: `config` (flags and getters), `metrics`, `column_util`, `redirect_logging`."""
