r"""The embedded default: AGM on a synthetic two-modality task that needs no download.

audio is learned first and overfits, visual is more informative but slow (see
data_pipelines/synthetic.py). Runs in a few minutes on a laptop CPU:

  python launch.py --config=configs/default.py --workdir=/tmp/agm_default
  python launch.py --config=configs/default.py --workdir=/tmp/joint_default --config.method=joint
"""

import ml_collections

from data_pipelines import synthetic


def get_config():
  c = ml_collections.ConfigDict()
  c.method = "agm"
  c.seed = 0
  c.num_epochs = 20
  c.batch_size = 64
  c.eval_batch_size = 256
  c.checkpoint_every_steps = 500
  c.log_every_steps = 50

  c.data = ml_collections.ConfigDict(dict(
      name="synthetic", data_seed=0, modalities="audio,visual", data_dir="",
      manual_dir="", dir="", synthetic=False, num_workers=0,
      synthetic_options=dict(synthetic.DEFAULTS)))

  c.model = ml_collections.ConfigDict(dict(
      fusion="concat",
      encoders={},
      encoder_default=dict(type="mlp", hidden=(64,), features=64),
      fusion_options=dict(maxout_hidden=64, maxout_pieces=4, film_condition=""),
      dtype="float32"))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=1e-2, momentum=0.9, weight_decay=1e-4,
      schedule="step", decay_epochs=(15,), decay_rate=0.1, grad_clip=0.0))

  c.agm = ml_collections.ConfigDict(dict(
      alpha=1.0, clip=10.0, start_epoch=0, end_epoch=1_000_000, subset_bn="eval",
      pad="zeros", reference="running_mean"))
  c.unimodal = ml_collections.ConfigDict(dict(modality="audio"))
  c.competition = ml_collections.ConfigDict(dict(enabled=True, whitened=False, l2=120.0,
                                                 cache_dir=""))
  c.parallel = ml_collections.ConfigDict(dict(mode="sharding"))
  return c
