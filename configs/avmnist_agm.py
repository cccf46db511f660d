r"""AGM on AV-MNIST (MultiBench layout): audio spectrogram 112x112 and a 28x28 digit image,
small ResNet encoders, concat late fusion (AGM Table 1). Early fusion: --config.model.fusion=maxout.

  python launch.py --config=configs/avmnist_agm.py --workdir=runs/avmnist_agm \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS

Sources: batch 64, 100 epochs, learning rate 1e-4, alpha 2.5 — the released AGM README's
AV-MNIST command; SGD momentum 0.9, weight decay 1e-4, StepLR(70, 0.1) — its task files.
"""


import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.num_epochs = 100
  c.batch_size = 64
  c.eval_batch_size = 128
  c.data = default.data_config("avmnist", "audio,image")
  c.model.fusion = "concat"
  c.model.encoders = dict(audio=dict(type="resnet18", width=16),
                          image=dict(type="resnet18", width=16))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=1e-4, momentum=0.9, weight_decay=1e-4, schedule="step",
      decay_epochs=70, decay_rate=0.1, grad_clip=0.0,
      conditional_clip=dict(c.optimizer.conditional_clip)))
  c.agm.alpha = 2.5
  c.agm.end_epoch = 1_000_000
  return c
