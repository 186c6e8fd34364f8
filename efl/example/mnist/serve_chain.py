"""Serves one batch with the two exported SavedModels, chained as two services would chain them.

The follower's model maps its features to what it sends (`fc1`); the leader's maps its features and the
received `fc1` to its predictions. Run in the example's folder after `--mode=export --export_dir=export` on
both parties; prints one JSON line: {"ids": [...], "class": [...], "prob": [[...], ...]}.

    python serve_chain.py --export_dir export --rows 256
"""

import argparse
import glob
import json
import os

import numpy as np
import tensorflow.compat.v1 as tf


def test_rows(side, rows):
  """(sample ids, features) of the first `rows` test examples of one party, in file order."""
  ids, feats = [], []
  for path in sorted(glob.glob(os.path.join(side + '_test', '*'))):
    for record in tf.io.tf_record_iterator(path):
      example = tf.train.Example.FromString(record)
      ids.append(example.features.feature['sample_id'].int64_list.value[0])
      feats.append(list(example.features.feature['feature'].float_list.value))
      if len(ids) == rows:
        return np.array(ids), np.array(feats, np.float32)
  return np.array(ids), np.array(feats, np.float32)


class Served(object):
  """One party's SavedModel (its newest version), called through its serving signature."""

  def __init__(self, export_dir):
    versions = sorted(glob.glob(os.path.join(export_dir, '[0-9]*')), key=lambda p: int(os.path.basename(p)))
    if not versions:
      raise ValueError('no SavedModel version under %s; run the party with --mode=export first' % export_dir)
    self.session = tf.Session(graph=tf.Graph())
    meta = tf.saved_model.loader.load(self.session, [tf.saved_model.tag_constants.SERVING], versions[-1])
    self.signature = meta.signature_def['serving_default']

  def __call__(self, **inputs):
    outputs = {k: v.name for k, v in self.signature.outputs.items()}
    return self.session.run(outputs, {self.signature.inputs[k].name: v for k, v in inputs.items()})


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--export_dir', default='export')
  parser.add_argument('--rows', type=int, default=256)
  args = parser.parse_args()
  follower_ids, follower_x = test_rows('follower', args.rows)
  leader_ids, leader_x = test_rows('leader', args.rows)
  if not np.array_equal(follower_ids, leader_ids):
    raise ValueError("the parties' test files hold different sample ids; chain the same examples")
  # The follower's service: its features -> what it sends (here in-process; across organisations an RPC).
  sent = Served(os.path.join(args.export_dir, 'follower'))(feature=follower_x)
  # The leader's service: its features plus what the follower sent -> the predictions.
  out = Served(os.path.join(args.export_dir, 'leader'))(feature=leader_x, fc1=sent['fc1'])
  print(json.dumps({'ids': leader_ids.tolist(), 'class': out['class'].tolist(), 'prob': out['prob'].tolist()}))


if __name__ == '__main__':
  main()
