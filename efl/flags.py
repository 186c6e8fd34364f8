"""Command-line flags shared by every efl script, and EFLS's config getters (`efl.get_task_index()`, ...).

Scripts run as `python leader.py --federal_role=leader`; flags the script does not know about are ignored
(`parse_known_args`), so users can add their own. Parsing is lazy so that importing efl never touches argv.
"""

import argparse
import json
import os
import sys

# The getters a script reaches as `efl.get_task_index()` and, as in EFLS, `efl.utils.config.get_task_index()`.
__all__ = [
  'dist_mode',
  'get_app_id',
  'get_ckpt_dir',
  'get_cluster',
  'get_config',
  'get_config_str',
  'get_export_dir',
  'get_federal_role',
  'get_local_addr',
  'get_mode',
  'get_output',
  'get_peer_addr',
  'get_ps_num',
  'get_server_num',
  'get_task_index',
  'get_task_name',
  'get_worker_num',
  'get_zk_addr',
  'is_chief',
  'local_mode',
]

ROLES = ('leader', 'follower')
_DEFAULT_ADDR = {'leader': 'localhost:50051', 'follower': 'localhost:50052'}

_parsed = None


def _parser():
  p = argparse.ArgumentParser(add_help=False)
  p.add_argument('-c', '--config', default=None, help='JSON configuration string')
  p.add_argument('--ckpt_dir', default=None)
  p.add_argument('--app_id', default=None)
  p.add_argument('--ps_num', type=int, default=0)
  p.add_argument('--worker_num', type=int, default=1)
  p.add_argument('--federal_role', default='leader')
  p.add_argument('--task_name', default='worker')
  p.add_argument('--task_index', type=int, default=0)
  p.add_argument('--peer_addr', default=None)
  p.add_argument('--local_addr', default=None)
  p.add_argument('--zk_addr', default=None)
  # What an example script does (efl's examples read these): train, eval, predict to --output, export to
  # --export_dir.
  p.add_argument('--mode', default='train')
  p.add_argument('--output', default=None)
  p.add_argument('--export_dir', default=None)
  # EFLS's flag is store_false: passing it turns the default port off.
  p.add_argument('--use_default_port', action='store_false', default=True)
  return p


def parse(argv=None):
  """Parses (and caches) the efl flags from `argv` (default `sys.argv[1:]`)."""
  global _parsed
  args, _ = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
  args.config_str = args.config
  if args.config:
    try:
      args.config = json.loads(args.config)
    except ValueError as e:
      raise ValueError('-c/--config must be a JSON object string; could not parse %r: %s' % (args.config, e))
    if not isinstance(args.config, dict):
      raise ValueError('-c/--config must be a JSON object, got %r' % (args.config,))
  else:
    args.config = {}
  _parsed = args
  return args


def _args():
  return _parsed if _parsed is not None else parse()


def check_role(role):
  """Returns `role` if it is 'leader' or 'follower', else raises a ValueError that says how to fix it."""
  if role not in ROLES:
    raise ValueError(
      "federal role must be 'leader' or 'follower', got %r; run the script with "
      '--federal_role=leader or --federal_role=follower' % (role,)
    )
  return role


def get_federal_role():
  return check_role(_args().federal_role)


def peer_role(role):
  return 'follower' if check_role(role) == 'leader' else 'leader'


def _worker_addr(key):
  """Entry `--task_index` of the config's list `key` ("local_addrs" or "peer_addrs").

  In a cluster, worker i of a party talks to worker i of the other on its own addresses. None when the config
  has no such list.
  """
  addrs = get_config(key)
  if addrs is None:
    return None
  index = get_task_index()
  if not isinstance(addrs, list) or not 0 <= index < len(addrs) or not addrs[index]:
    raise ValueError(
      '-c/--config "%s" must list one "host:port" per worker, with one for --task_index=%d; '
      'got %r' % (key, index, addrs)
    )
  return addrs[index]


def get_local_addr(role=None):
  """This party's address.

  `--local_addr`, else this worker's entry of the config's "local_addrs", else the default address of `role`
  (default: `--federal_role`).
  """
  return _args().local_addr or _worker_addr('local_addrs') or _DEFAULT_ADDR[check_role(role or get_federal_role())]


def get_peer_addr(role=None):
  """The peer's address.

  `--peer_addr`, else this worker's entry of the config's "peer_addrs", else the default address of the peer
  of `role` (default: `--federal_role`).
  """
  return _args().peer_addr or _worker_addr('peer_addrs') or _DEFAULT_ADDR[peer_role(role or get_federal_role())]


def get_config(*keys, default=None):
  """Looks up a nested key of the `-c/--config` JSON, e.g. `get_config('checkpoint', 'output_dir')`."""
  node = _args().config
  for k in keys:
    if not isinstance(node, dict) or k not in node:
      return default
    node = node[k]
  return node


def get_ckpt_dir():
  return _args().ckpt_dir or get_config('checkpoint', 'output_dir')


def get_mode():
  """`--mode`: what an example script does ('train' by default; efl's examples take eval, predict, export)."""
  return _args().mode


def get_output():
  """`--output`: where `--mode=predict` writes its rows."""
  return _args().output


def get_export_dir():
  """`--export_dir`: where `--mode=export` writes the SavedModel."""
  return _args().export_dir


def get_app_id():
  """The job's identity (`--app_id`), or None."""
  return _args().app_id


def get_task_name():
  """'worker' or 'ps' (`--task_name`)."""
  return _args().task_name


def get_task_index():
  """This process's index among its party's tasks of the same name (`--task_index`)."""
  return _args().task_index


def get_worker_num():
  """Workers per party (`--worker_num`)."""
  return _args().worker_num


def get_ps_num():
  """Parameter servers per party (`--ps_num`, 0: variables live on the worker)."""
  return _args().ps_num


def get_server_num():
  """EFLS's name for `get_ps_num()`. EFLS answers 1 when it runs without a cluster; efl answers --ps_num."""
  return get_ps_num()


def get_zk_addr():
  return _args().zk_addr


def get_config_str():
  """The raw `-c/--config` JSON string (None if not given)."""
  return _args().config_str


def local_mode():
  """True when each party is one process (no parameter servers, one worker)."""
  return get_ps_num() == 0 and get_worker_num() == 1 and get_task_name() == 'worker'


def dist_mode():
  return not local_mode()


def is_chief():
  """True for worker 0, the task that saves checkpoints and runs chief-only stages."""
  return get_task_name() == 'worker' and get_task_index() == 0


def get_cluster():
  """The party's cluster `{job: [host:port, ...]}`: the "cluster" key of `-c` or of $TF_CONFIG.

  Raises a ValueError naming both places when neither has one.
  """
  cluster = get_config('cluster')
  if cluster is None and os.environ.get('TF_CONFIG'):
    try:
      cluster = json.loads(os.environ['TF_CONFIG']).get('cluster')
    except (ValueError, AttributeError) as e:
      raise ValueError(
        'TF_CONFIG must be a JSON object with a "cluster" key; could not read %r: %s' % (os.environ['TF_CONFIG'], e)
      )
  if not cluster:
    raise ValueError(
      'no cluster is configured: pass -c \'{"cluster": {"worker": ["host:port", ...], '
      '"ps": [...]}}\' or set TF_CONFIG (one process per party needs none)'
    )
  if not isinstance(cluster, dict):
    raise ValueError('the cluster must map job names to lists of addresses, got %r' % (cluster,))
  return cluster
