r"""UR-Funny, early fusion, as the AGM paper ran it (Table 2 early): the three Transformer
outputs (3 x 768) concatenated into the released MaxOut head (2304 -> 2048 -> 1024,
BatchNorm, dropout 0.3). ``--config.method=`` picks the row: agm (default), joint, unimodal.

  python launch.py --config=configs/urfunny_early.py --workdir=runs/urfunny_early \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS

Sources: as configs/urfunny_agm.py, plus the head — released ``model/URFunny_net.py``
``Early_Fusion_Model`` (``MaxOut_MLP(2, 2048, 2304, 1024)``) — and the conditional clip
(threshold and norm 5) for every method (released ``run/URFunny_main.py``).
"""

from configs import paper, urfunny_agm


def get_config():
  c = urfunny_agm.get_config()
  paper.released_early_head(c, hidden=(2048, 1024))
  paper.released_rules(c, early=True, clip_threshold=5.0, p_floor=0.0)
  return c
