r"""AGM on CMU-MOSEI (MultiBench pickles; binary sentiment): Transformer encoders for audio,
visual and text, concat late fusion (the AGM paper uses TBJE; this is the late-fusion
stand-in with the same inputs).

  python launch.py --config=configs/mosei_agm.py --workdir=runs/mosei_agm \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS
"""

from configs import urfunny_agm


def get_config():
  c = urfunny_agm.get_config()
  c.data.name = "cmu_mosei"
  c.data.task = "binary"
  tf = dict(type="transformer", num_layers=6, num_heads=4, width=512, max_len=64)
  c.model.encoders = dict(audio=dict(tf), visual=dict(tf), text=dict(tf))
  c.agm.clip = 10.0
  return c
