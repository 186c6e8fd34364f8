"""Forward-encryption MNIST, follower side (the active party, holding the private key): the right half of each image.

Run `generate_data.py` once, and `generate_paillier_keypair.py` here (the follower keeps both key files),
then copy `public_key.json` to the leader. Then (two terminals)::

  python leader.py --federal_role=leader
  python follower.py --federal_role=follower
"""

import tensorflow.compat.v1 as tf

import efl


def input_fn(model, mode):
  if mode == efl.MODE.TRAIN:
    dataio = efl.data.FederalDataIO(
      './follower_train', 256, model.communicator, model.federal_role, 0, 1, data_mode='local'
    )
    dataio.fixedlen_feature('sample_id', 1, dtype=tf.int64)
    dataio.fixedlen_feature('feature', 14 * 28, dtype=tf.float32)
    dataio.fixedlen_feature('label', 1, dtype=tf.float32)
    features = dataio.read()
    model.add_hooks([dataio.get_hook()])
    columns = {
      'label': [tf.feature_column.numeric_column('label', 1)],
      'emb': [tf.feature_column.numeric_column('feature', 28 * 14)],
    }
    return efl.FederalSample(features, columns, model.federal_role, model.communicator, sample_id_name='sample_id')


# follower侧：在模型中创建并使用EncryptActiveLayer
def model_fn(model, sample):
  input = sample['emb']
  fc1 = tf.layers.dense(input, 128, kernel_initializer=tf.truncated_normal_initializer(stddev=0.001, dtype=tf.float32))
  # 定义前向加密的EncryptActiveLayer，向对方提供128维的embedding，并且不随着训练的迭代变化噪声
  active_layer = efl.privacy.EncryptActiveLayer(
    model.communicator, 128, 'public_key.json', 'private_key.json', update_noise=False
  )
  fc1 = active_layer(fc1)
  y = tf.layers.dense(fc1, 10, kernel_initializer=tf.truncated_normal_initializer(stddev=0.001, dtype=tf.float32))
  pred = tf.argmax(y, axis=-1)
  _, accuracy = tf.metrics.accuracy(sample['label'], pred)
  model.add_metric('accuracy', accuracy)
  label = tf.cast(sample['label'], tf.int32)
  label = tf.reshape(label, [-1])
  label = tf.one_hot(label, 10)
  loss = tf.losses.softmax_cross_entropy(label, y)
  return loss


def main():
  CTR = efl.FederalModel()
  CTR.input_fn(input_fn)
  CTR.loss_fn(model_fn)
  CTR.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.001)))
  CTR.compile()
  CTR.fit(efl.procedure_fn.train(), log_step=1, project_name='train')


if __name__ == '__main__':
  main()
