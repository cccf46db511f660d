r"""Your own data: a folder with train.npz, dep.npz, test.npz (optional val.npz), one array per
modality plus `label`. An MLP encoder per modality, concat late fusion, any k >= 2.

  python launch.py --config=configs/npz_mlp.py --workdir=runs/mine \
      --config.data.dir=/path/to/folder --config.data.modalities=a,b,c
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data = default.data_config("npz", "", num_classes=0)
  c.model.fusion = "concat"
  c.model.encoder_default = dict(type="mlp", hidden=(128,), features=64)
  c.num_epochs = 30
  return c
