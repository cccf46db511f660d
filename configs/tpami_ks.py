r"""Kinetics-Sounds as the released T-PAMI 2024 code runs OGM and OPM (Wei, Peng, Hu et al.,
"On-the-fly Modulation for Balanced Multimodal Learning"; GeWu-Lab/BML_TPAMI2024, whose
``code/main.py`` trains on Kinetics-Sounds only: ``KSDataset``, ``config.py`` l. 10).
``--config.method=`` picks the run: ogm (default, ``scripts/train_ogm.sh``), opm
(``scripts/train_opm.sh``), opm_ogm (both) or joint (the Concatenation baseline).

  python launch.py --config=configs/tpami_ks.py --workdir=runs/tpami_ks_ogm \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS
  python launch.py --config=configs/tpami_ks.py --workdir=runs/tpami_ks_opm \
      --config.method=opm …

Every number and its source (files of the released repository, ``code/``):
* seed 0 — ``config.py`` l. 63; 100 epochs — l. 23; batch 32 — l. 22 (evaluation too:
  ``main.py`` l. 255); 3 frames per clip — l. 14;
* the last partial training batch kept (``drop_last=False``) — ``main.py`` l. 254
  (``DataLoader(train_dataset, batch_size=…, shuffle=True, …)``, no ``drop_last``);
* the reported statistic, the highest test accuracy over all epochs
  (``paper_statistic="max_test_acc"``) — ``main.py`` l. 275–297 (every epoch evaluates
  ``test_loader`` and keeps ``best_acc`` in ``best_model.json``; there is no validation split);
* AdamW, learning rate 5e-5 — ``config.py`` l. 26; weight decay 0.01 — ``main.py`` l. 267;
  StepLR every 40 epochs by 0.1 — ``config.py`` l. 27, 29, ``main.py`` l. 268, 174. (The
  paper's Sec. 4.1 says SGD with momentum 0.9, learning rate 1e-3, batch 32:
  ``--config.optimizer.name=sgd --config.optimizer.learning_rate=1e-3
  --config.optimizer.weight_decay=0``.);
* a concat head on two ResNet-18s of width 64 with 512-d features — ``models/Classifier.py``
  l. 80–87, ``config.py`` l. 18, 41; the uni-modal logits ``W_m z_m + b/2`` — l. 125–143;
* ``model.init="released"``: ``main.py`` l. 63–71, 263 (xavier-normal linear layers, He
  fan-out convs, BatchNorm 1/0; its convs are normal where agm-jax's "released" scheme draws
  uniform of the same variance);
* OGM: ``form="code"`` — ``main.py`` l. 119–148; ``alpha`` 0.8 — ``train_ogm.sh`` l. 5 (a
  value for the code form only: the paper's eq. 11 form at 0.8 modulates far less);
  ``scope="conv"`` (the encoders' 4-D kernels) — ``main.py`` l. 157, 164; GE noise —
  ``--modulation`` defaults to ``OGM_GE`` (l. 36, 158–167); the window: the warm-up
  ``warm_up = 1 if epoch <= 5`` (l. 91) and ``modulation_starts <= epoch <= modulation_ends``
  (l. 154) with 0 and 60 (``train_ogm.sh`` l. 6–7): epochs 6 … 60;
* OPM: ``q_base`` 0.5, ``lam`` 0.5, ``p_exe`` 0.7 — ``train_opm.sh`` l. 5–7; ``rho="current"``
  — ``models/Classifier.py`` l. 142–147 (q from this step's scores, before the drop); the
  window: from epoch 6 (``main.py`` l. 91, 95) to the end; a batch with every modality
  dropped takes no step (l. 95–97);
* OGM* (``--use_OGM_plus``, no released script): ``--config.ogm.form=plus``, gain 4 —
  ``main.py`` l. 128–136;
* OPM+OGM (``--config.method=opm_ogm``; both flags, no released script): OPM's settings and
  window above with OGM's alpha, form, scope and noise. One window serves both, so its
  gradient modulation runs to the end: past ``--modulation_ends``, whose default is 80
  (``main.py`` l. 47, ``config.py`` l. 35; both flags with no other argument would modulate
  gradients in epochs 6 … 80 and drop to the end) and past ``train_ogm.sh``'s 60 (l. 7, OGM
  alone). ``--config.opm_ogm.end_epoch=80`` ends the drop there too.

The released Kinetics-Sounds split has 31 classes (``config.py`` l. 11); agm-jax's pipeline
reads the classes of the raw download (docs/REPRODUCE.md).
"""

import ml_collections

from configs import default

WARM_UP = 6          # main.py l. 91: no modulation while epoch <= 5
OGM_END = 60         # train_ogm.sh l. 7 (--modulation_ends)


def released_rules(c):
  """What the released ``main.py`` does in every run: seed, epochs, batch (the last partial
  one kept), the reported statistic, AdamW and StepLR, the concat head and its
  initialisation, and OGM's and OPM's settings and windows."""
  c.seed = 0
  c.drop_last = False   # main.py l. 254: DataLoader(...) without drop_last
  c.paper_statistic = "max_test_acc"   # main.py l. 277, 284-297: the best test acc over epochs
  c.num_epochs = 100
  c.batch_size = 32
  c.eval_batch_size = 32
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=5e-5, momentum=0.9, weight_decay=0.01, schedule="step",
      decay_epochs=40, decay_rate=0.1, grad_clip=0.0,
      conditional_clip=dict(c.optimizer.conditional_clip, threshold=0.0)))
  c.model.fusion = "concat"
  c.per_method = {}
  c.model.encoders = dict(audio=dict(type="resnet18", width=64),
                          visual=dict(type="resnet18", width=64))
  c.model.init = "released"
  c.ogm.update(dict(alpha=0.8, form="code", noise=True, scope="conv", start_epoch=WARM_UP,
                    end_epoch=OGM_END))
  c.opm.update(dict(q_base=0.5, lam=0.5, p_exe=0.7, rho="current", start_epoch=WARM_UP,
                    end_epoch=1_000_000))
  c.opm_ogm.update(dict(c.opm, alpha=0.8, form="code", noise=True, scope="conv"))
  return c


def get_config():
  c = default.get_config()
  c.method = "ogm"
  c.checkpoint_every_steps = 1000
  c.log_every_steps = 20
  c.data = default.data_config("kinetics_sounds", "audio,visual", num_workers=1, num_frames=3)
  return released_rules(c)
