r"""Joint training on CREMA-D (Table 3's baseline): cremad_agm.py with method=joint.

  python launch.py --config=configs/cremad_joint.py --workdir=runs/cremad_joint \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS
"""

from configs import cremad_agm


def get_config():
  c = cremad_agm.get_config()
  c.method = "joint"
  # Joint training's masked passes only feed the train line's mono-modal metrics: batch
  # statistics spare the ResNets an extra eval-mode pass per step.
  c.subsets.bn = "batch"
  return c
