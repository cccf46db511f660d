r"""CREMA-D with the released T-PAMI 2024 OGM and OPM settings (GeWu-Lab/BML_TPAMI2024).
``--config.method=`` picks the run: ogm (default), opm, opm_ogm or joint (Concatenation).

  python launch.py --config=configs/tpami_cremad.py --workdir=runs/tpami_cremad_ogm \
      --config.data.manual_dir=/path/to/CREMA-D --config.data.data_dir=/path/to/tfds
  python launch.py --config=configs/tpami_cremad.py --workdir=runs/tpami_cremad_opm \
      --config.method=opm …

The released code has no CREMA-D run (its ``main.py`` reads Kinetics-Sounds only), so
everything but the data is configs/tpami_ks.py's ``released_rules``, each number with its
file and line there: seed 0, 100 epochs, batch 32 with the last partial batch kept, the best
test accuracy over epochs as the reported statistic, AdamW 5e-5 / weight decay 0.01, StepLR 40
/ 0.1, a concat head on two ResNet-18s, OGM's code form with alpha 0.8 on the conv kernels
with GE noise in epochs 6 … 60, OPM with q_base 0.5, lam 0.5, p_exe 0.7 and the current
step's rho from epoch 6. The paper's Sec. 4.1 trains CREMA-D with SGD (momentum 0.9),
learning rate 1e-3 and batch 32: ``--config.optimizer.name=sgd
--config.optimizer.learning_rate=1e-3 --config.optimizer.weight_decay=0``.

Data: one frame per clip (paper Sec. 4.1: "One visual frame is randomly extracted from each
clip"), as agm-jax's CREMA-D pipeline; the paper's spectrogram is 257 x 299, the pipeline's
that of configs/cremad_agm.py.
"""

from configs import default, tpami_ks


def get_config():
  c = default.get_config()
  c.method = "ogm"
  c.checkpoint_every_steps = 1000
  c.log_every_steps = 20
  c.data = default.data_config("cremad", "audio,visual", num_workers=1, num_frames=1)
  return tpami_ks.released_rules(c)
