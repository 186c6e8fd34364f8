"""Federated Criteo, follower side (the seed's criteo/criteo_dp_follower_dense.py).

The follower holds the 21 categorical columns. Each is hashed into buckets and embedded (dimension 8, mean
combiner); the [batch, 168] embedding is sent to the leader, which trains the rest of the network and sends
back the gradient of its loss with respect to the embedding. Works with either leader script
(`criteo_dp_leader_dense.py`, DP-Adam, or `criteo_leader_dense.py`, plain Adam).

Run from the directory holding `follower_train/` and `follower_test/` (see generate_data.py)::

  python criteo_dp_follower_dense.py --federal_role=follower
"""

import argparse

import tensorflow.compat.v1 as tf

import efl
from efl.example import modes

# Hash buckets of feature0..feature20: about the number of distinct values of each column in the full data.
id_nums = [
  1400,
  500,
  2000000,
  660000,
  300,
  20,
  10000,
  600,
  3,
  50000,
  4800,
  2000000,
  3000,
  20,
  10000,
  1400000,
  9,
  4500,
  1700000,
  15,
  120000,
]


def input_fn(model, mode):
  if mode == efl.MODE.TRAIN:
    dataio = efl.data.FederalDataIO(
      './follower_train',
      1000,
      model.communicator,
      model.federal_role,
      efl.get_task_index(),
      efl.get_worker_num(),  # this worker's share
      data_mode='local',
      num_epochs=10,
    )
  else:
    # Each evaluation of train_and_evaluate reads on; a prediction reads every example once.
    dataio = efl.data.FederalDataIO(
      './follower_test',
      1000,
      model.communicator,
      model.federal_role,
      efl.get_task_index(),
      efl.get_worker_num(),  # this worker's share
      data_mode='local',
      num_epochs=1 if efl.get_mode() == 'predict' else 10,
    )

  dataio.fixedlen_feature('sample_id', 1, dtype=tf.int64)
  # embedding类型的数据
  for i in range(21):  # 21列离散特征
    dataio.fixedlen_feature('feature' + str(i), 1, dtype=tf.string)
  features = dataio.read()
  model.add_hooks([dataio.get_hook()])
  columns = {
    'embedding': [
      tf.feature_column.embedding_column(
        tf.feature_column.categorical_column_with_hash_bucket('feature' + str(i), id_nums[i]),
        dimension=8,
        combiner='mean',
      )
      for i in range(21)
    ]
  }
  return efl.FederalSample(
    features,
    columns,
    model.federal_role,
    model.communicator,
    sample_id_name='sample_id',
    name='train' if mode == efl.MODE.TRAIN else 'eval',
  )


def model_fn(model, sample, is_training):
  embedding = sample['embedding']
  if is_training:
    # The leader sends back d(loss)/d(embedding), which trains the embeddings.
    model.send('embedding_train', embedding, require_grad=True)
  else:
    model.send('embedding_test', embedding, mode=efl.MODE.EVAL, require_grad=False)
  # The follower has no loss of its own: returning the sent tensor makes its objective the leader's loss.
  return embedding


def loss_fn(model, sample):
  return model_fn(model, sample, True)


def eval_fn(model, sample):
  return model_fn(model, sample, False)


def parse_flags(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--train_step', type=int, default=8000, help='training steps per iteration')
  parser.add_argument('--eval_step', type=int, default=3800, help='evaluation steps per iteration')
  parser.add_argument('--max_iter', type=int, default=10, help='train-then-evaluate iterations')
  parser.add_argument('--log_step', type=int, default=1000, help='log every N steps')
  # The federal flags (--federal_role, --peer_addr, ...) are read by efl itself.
  return parser.parse_known_args(argv)[0]


def main(argv=None):
  args = parse_flags(argv)
  CTR = efl.FederalModel()
  CTR.input_fn(input_fn)
  CTR.loss_fn(loss_fn)
  CTR.eval_fn(eval_fn)
  CTR.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.AdamOptimizer(0.01)))
  CTR.compile()
  # --mode=train (default) | eval | predict --output=FILE | export --export_dir=DIR (efl/example/modes.py)
  modes.run(
    CTR,
    efl.procedure_fn.train_and_evaluate(train_step=args.train_step, eval_step=args.eval_step, max_iter=args.max_iter),
    log_step=args.log_step,
    project_name='criteo',
  )


if __name__ == '__main__':
  main()
