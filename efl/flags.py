"""Command-line flags shared by every efl script.

Scripts run as `python leader.py --federal_role=leader`; flags the script does not know about are ignored
(`parse_known_args`), so users can add their own. Parsing is lazy so that importing efl never touches argv.
"""
import argparse
import json
import sys

ROLES = ('leader', 'follower')
_DEFAULT_ADDR = {'leader': 'localhost:50051', 'follower': 'localhost:50052'}

_parsed = None


def _parser():
  p = argparse.ArgumentParser(add_help=False)
  p.add_argument('-c', '--config', default=None, help='JSON configuration string')
  p.add_argument('--ckpt_dir', default=None)
  p.add_argument('--app_id', default=None)
  p.add_argument('--worker_num', type=int, default=1)
  p.add_argument('--federal_role', default='leader')
  p.add_argument('--task_name', default='worker')
  p.add_argument('--task_index', type=int, default=0)
  p.add_argument('--peer_addr', default=None)
  p.add_argument('--local_addr', default=None)
  p.add_argument('--zk_addr', default=None)
  return p


def parse(argv=None):
  """Parses (and caches) the efl flags from `argv` (default `sys.argv[1:]`)."""
  global _parsed
  args, _ = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
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
    raise ValueError("federal role must be 'leader' or 'follower', got %r; run the script with "
                     "--federal_role=leader or --federal_role=follower" % (role,))
  return role


def get_federal_role():
  return check_role(_args().federal_role)


def peer_role(role):
  return 'follower' if check_role(role) == 'leader' else 'leader'


def get_local_addr():
  return _args().local_addr or _DEFAULT_ADDR[get_federal_role()]


def get_peer_addr():
  return _args().peer_addr or _DEFAULT_ADDR[peer_role(get_federal_role())]


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


def get_task_index():
  return _args().task_index


def get_worker_num():
  return _args().worker_num
