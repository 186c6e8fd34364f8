"""EFLS's module path of the flags' getters (`efl.utils.config.get_task_index()`, ...); see `efl.flags`."""

from efl.flags import (
  dist_mode,
  get_app_id,
  get_ckpt_dir,
  get_cluster,
  get_config,
  get_config_str,
  get_export_dir,
  get_federal_role,
  get_local_addr,
  get_mode,
  get_output,
  get_peer_addr,
  get_ps_num,
  get_server_num,
  get_task_index,
  get_task_name,
  get_worker_num,
  get_zk_addr,
  is_chief,
  local_mode,
)
