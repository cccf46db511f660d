r"""AV-MNIST, early fusion, as the AGM paper ran it (Table 1 early; supplement Tables 5, 6 and
8 early): the two ResNet-18 feature vectors into the released MaxOut head (1024 -> 2048 ->
1024, BatchNorm, dropout 0.3). ``--config.method=`` picks the row: agm (default), joint,
agm_1, agm_ge, unimodal.

  python launch.py --config=configs/avmnist_early.py --workdir=runs/avmnist_early \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS
  # Table 5: concepts from another seed; Table 6: concepts with N(0, 1) padding
  … --config.method=joint --config.competition.concept_seed=99
  … --config.method=joint --config.competition.concept_pad=normal

Sources: as configs/avmnist_agm.py, plus the head — released ``model/AVMNIST_net.py``
``Early_Fusion`` (``MaxOut_MLP(10, 2048, 1024, 1024)``) — and the conditional clip for every
method (released ``run/AVMNIST_main.py``).
"""

from configs import avmnist_agm, paper


def get_config():
  c = avmnist_agm.get_config()
  paper.released_early_head(c, hidden=(2048, 1024))
  paper.released_rules(c, early=True)
  return c
