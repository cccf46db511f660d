r"""AGM on CREMA-D with the papers' early fusion (MaxOut over the encoders' features; Table 3,
early).

  python launch.py --config=configs/cremad_early.py --workdir=runs/cremad_early \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS
"""

from configs import cremad_agm


def get_config():
  c = cremad_agm.get_config()
  c.method = "agm"
  c.model.fusion = "maxout"
  return c
