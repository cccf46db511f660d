r"""AGM on AVE (PSP's h5 features: 10 segments of VGGish audio and VGG-19 visual features),
classified per video; MLP encoders over the segment features, concat late fusion.

  python launch.py --config=configs/ave_agm.py --workdir=runs/ave_agm \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS

Not a paper protocol: Table 4's AVE row trains PSP per segment (configs/ave_psp.py). This is a
late-fusion setup for comparing methods on AVE with the trainer's generic encoders, and its
numbers are our choice:
* SGD with momentum 0.9 and weight decay 1e-4 (configs/default.py), learning rate 1e-3,
  100 epochs, batch 64 — the AGM paper's CREMA-D schedule (configs/cremad_agm.py);
* the rate x0.1 at epoch 70 — the released AGM code's ``--lr_decay_ratio`` and
  ``--lr_decay_step`` defaults (``utils/config.py``);
* MLP encoders with one hidden layer of 256 units and 128-d features (VGGish's width) over
  the segment-averaged features (``data.visual_pool="mean"``).
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
