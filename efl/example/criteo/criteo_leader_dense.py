"""Federated Criteo, leader side without differential privacy: `criteo_dp_leader_dense.py` with plain Adam.

Same model, data and flags as the DP leader; the follower script is the same
(`criteo_dp_follower_dense.py`). Useful as the accuracy baseline of the DP run.

Run from the directory holding `leader_train/` and `leader_test/` (see generate_data.py)::

  python criteo_leader_dense.py --federal_role=leader
"""

import tensorflow.compat.v1 as tf

import efl
from efl.example import modes

import criteo_dp_leader_dense as dp_leader  # next to this script, which Python puts on sys.path


def main(argv=None):
  args = dp_leader.parse_flags(argv)
  CTR = dp_leader.build_model(tf.train.AdamOptimizer(0.01))
  modes.run(
    CTR,
    efl.procedure_fn.train_and_evaluate(train_step=args.train_step, eval_step=args.eval_step, max_iter=args.max_iter),
    log_step=args.log_step,
    project_name='criteo',
  )


if __name__ == '__main__':
  main()
