r"""AGM on CREMA-D: ResNet-18 audio (257x188 log-spectrogram) + ResNet-18 visual (one 224x224
frame), concat late fusion — the AGM paper's Table 3 setting.

  python launch.py --config=configs/cremad_agm.py --workdir=runs/cremad_agm \
      --config.data.manual_dir=/path/to/CREMA-D --config.data.data_dir=/path/to/tfds
  python launch.py --config=configs/cremad_agm.py --workdir=runs/cremad_joint \
      --config.method=joint …
  # no download: random inputs of CREMA-D's shapes (smoke tests, benchmarks)
  python launch.py --config=configs/cremad_agm.py --workdir=/tmp/x --config.data.synthetic=True

Sources of the hyper-parameters:
* optimiser: SGD, momentum 0.9, weight decay 1e-4, StepLR(step 70 epochs, x0.1) — the released
  AGM code's CREMA-D task (`tasks/CREMAD_task.py`), the same as OGM-GE's;
* learning rate 1e-3, batch size 64, 100 epochs: OGM-GE's CREMA-D setting, which AGM follows;
* alpha 1.0 (the released code's default), clip 10 (its CREMA-D main), modulation window
  epochs 0..20 (its default `modulation_ends`);
* masked passes with running BatchNorm statistics (`subsets.bn="eval"`), as the released code.
"""


import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.method = "agm"
  c.num_epochs = 100
  c.batch_size = 64
  c.eval_batch_size = 64
  c.checkpoint_every_steps = 1000
  c.log_every_steps = 20
  c.data = default.data_config("cremad", "audio,visual", num_workers=1, num_frames=1)
  c.model.fusion = "concat"
  c.model.encoders = dict(audio=dict(type="resnet18", width=64),
                          visual=dict(type="resnet18", width=64))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=1e-3, momentum=0.9, weight_decay=1e-4, schedule="step",
      decay_epochs=70, decay_rate=0.1, grad_clip=0.0,
      conditional_clip=dict(c.optimizer.conditional_clip)))
  c.agm.alpha = 1.0
  c.agm.clip = 10.0
  c.agm.start_epoch = 0
  c.agm.end_epoch = 20
  c.subsets.bn = "eval"
  return c
