r"""AGM on Kinetics-Sounds (OGM-GE layout: precomputed filterbanks + 1-fps frames): ResNet-18
audio and visual (3 frames pooled over time), concat late fusion (AGM Table 7).

  python launch.py --config=configs/ks_agm.py --workdir=runs/ks_agm \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS

Sources: the optimiser and schedule as the released code's tasks (SGD 0.9, wd 1e-4,
StepLR(70, 0.1)); batch 16, lr 1e-3 and alpha 1.5 as its published run command for the
audio-visual datasets; clip 10.
"""

from configs import cremad_agm


def get_config():
  c = cremad_agm.get_config()
  c.batch_size = 16
  c.eval_batch_size = 32
  c.data.name = "kinetics_sounds"
  c.data.num_frames = 3
  c.agm.alpha = 1.5
  c.agm.end_epoch = 1_000_000
  return c
