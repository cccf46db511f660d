r"""AGM on AVE (PSP's h5 features: 10 segments of VGGish audio and VGG-19 visual features),
classified per video; MLP encoders over the segment features, concat late fusion.

  python launch.py --config=configs/ave_agm.py --workdir=runs/ave_agm \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS
"""

from configs import default


def get_config():
  c = default.get_config()
  c.num_epochs = 100
  c.batch_size = 64
  c.eval_batch_size = 128
  c.data = default.data_config("ave", "audio,visual", visual_pool="mean", task="video")
  c.model.encoder_default = dict(type="mlp", hidden=(256,), features=128)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.decay_epochs = (70,)
  return c
