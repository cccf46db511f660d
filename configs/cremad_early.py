r"""CREMA-D, early fusion, as the AGM paper ran it (Table 3 early; Table 8 early): the two
ResNet-18 feature vectors concatenated into the released MaxOut head (BatchNorm, 1024 -> 2048
-> 1024 with 2-piece maxouts, BatchNorm and dropout 0.3 after each; then a linear layer).
``--config.method=`` picks the row: agm (default), joint, agm_1, agm_ge, unimodal.

  python launch.py --config=configs/cremad_early.py --workdir=runs/cremad_early \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS

Sources: everything as configs/cremad_agm.py, plus the head — released
``model/CREMAD_net.py`` ``AV_Early_Classifier`` (``MaxOut_MLP(6, 2048, 1024, 1024)``,
``model/utils/module_base.py``) — and the conditional clip for every method (released
``run/CREMAD_main.py``: ``if methods == "AGM" or fusion_type == "early_fusion"``).
"""

from configs import cremad_agm, paper


def get_config():
  c = cremad_agm.get_config()
  paper.released_early_head(c, hidden=(2048, 1024))
  paper.released_rules(c, early=True)
  return c
