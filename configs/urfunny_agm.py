r"""AGM on UR-Funny: Transformer encoders for audio, visual and text feature sequences
(4 layers, 8 heads, width 768), concat late fusion — the AGM paper's Table 2 setting.

  python launch.py --config=configs/urfunny_agm.py --workdir=runs/urfunny_agm \
      --config.data.manual_dir=/path/to/urfunny --config.data.data_dir=/path/to/tfds
  # no download: random inputs of UR-Funny's shapes (smoke tests, benchmarks)
  python -m agm_jax.bench --config=configs/urfunny_agm.py --batch_size=16

Sources: the Transformer setting (4 layers, 8 heads, 768) and clip 7 are the AGM paper's
UR-Funny setting; SGD/momentum/weight decay/StepLR as the released code's tasks; the
learning rate, batch size and epochs are this config's choice (the released code takes them
from the command line) — change them with --config.optimizer.learning_rate etc.
"""


import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.method = "agm"
  c.num_epochs = 40
  c.batch_size = 32
  c.eval_batch_size = 64
  c.checkpoint_every_steps = 1000
  c.log_every_steps = 20
  c.data = default.data_config("urfunny", "audio,visual,text", num_workers=1)
  c.model.fusion = "concat"
  tf = dict(type="transformer", num_layers=4, num_heads=8, width=768, max_len=64)
  c.model.encoders = dict(audio=dict(tf), visual=dict(tf), text=dict(tf))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=1e-3, momentum=0.9, weight_decay=1e-4, schedule="step",
      decay_epochs=30, decay_rate=0.1, grad_clip=0.0,
      conditional_clip=dict(c.optimizer.conditional_clip)))
  c.agm.alpha = 1.0
  c.agm.clip = 7.0
  c.agm.end_epoch = 1_000_000
  return c
