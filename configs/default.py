r"""The embedded default: AGM on a synthetic two-modality task that needs no download.

audio is learned first and overfits, visual is more informative but slow (see
data_pipelines/synthetic.py). Runs in a few minutes on a laptop CPU:

  python launch.py --config=configs/default.py --workdir=/tmp/agm_default
  python launch.py --config=configs/default.py --workdir=/tmp/joint_default --config.method=joint

--config.method is one of joint, agm, unimodal, agm_1, agm_ge, ogm_ge, ogm_ge_ra, ogm, opm,
mslr, mses, gblending, greedy (their hyper-parameters: the sections of the same name below).
The competition probe (mono-modal concepts + d^m per epoch) is on; the concepts are trained
once and cached in ~/.cache/agm_jax/concepts (competition.cache_dir).
"""

import ml_collections

from data_pipelines.sources import synthetic


def data_config(name: str, modalities: str, **options) -> ml_collections.ConfigDict:
  """A ``data`` section: the fields every dataset reads (``data_dir``, ``manual_dir``, ``dir``,
  ``synthetic``, ``num_workers``, ``data_seed``) with their defaults, plus ``options``."""
  return ml_collections.ConfigDict(dict(
      dict(name=name, modalities=modalities, data_dir="", manual_dir="", dir="",
           synthetic=False, num_workers=0, data_seed=0), **options))


def get_config():
  c = ml_collections.ConfigDict()
  c.method = "agm"
  c.seed = 0
  c.num_epochs = 20
  c.batch_size = 64
  c.eval_batch_size = 256
  c.checkpoint_every_steps = 500
  c.log_every_steps = 50

  c.data = data_config("synthetic", "audio,visual",
                       synthetic_options=dict(synthetic.DEFAULTS))

  c.model = ml_collections.ConfigDict(dict(
      fusion="concat",
      encoders={},
      encoder_default=dict(type="mlp", hidden=(64,), features=64),
      fusion_options=dict(maxout_hidden=64, maxout_pieces=4, film_condition=""),
      dtype="float32"))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=1e-2, momentum=0.9, weight_decay=1e-4,
      schedule="step", decay_epochs=(15,), decay_rate=0.1, grad_clip=0.0,
      # The released AGM code's clip: when an entry of the fusion output layer's weight
      # gradient leaves [-threshold, threshold], clip the global norm to max_norm; for the
      # methods listed (comma-separated; "*": every multimodal method; threshold 0: off).
      conditional_clip=dict(threshold=0.0, max_norm=1.0, methods="*")))

  # How every method runs the 2**k masked passes: BatchNorm in the masked passes ("eval":
  # running statistics, the released AGM code; "batch"), what replaces an absent modality
  # ("zeros"; "normal": N(0,1) noise, the supplement's rand-pad), and the path ("auto": encoders
  # once and the fusion head per subset when the model has per-modality encoders; "fast";
  # "generic": the whole model per subset).
  c.subsets = ml_collections.ConfigDict(dict(bn="eval", pad="zeros", path="auto"))

  # One section per method (agm_jax/methods/<name>.py), each read only by its method.
  # start_epoch … end_epoch: the method's modulation window (epochs from 0, inclusive);
  # outside it the coefficients are 1 and the running statistics still update.
  always = dict(start_epoch=0, end_epoch=1_000_000)
  c.joint = ml_collections.ConfigDict()
  # AGM (ICCV 2023): alpha 1.0 (released default), clip 10 (its CREMA-D main; inf = no
  # bound); reference "running_mean" (Algorithm 1) or "one" (the AGM(1) ablation, Table 8);
  # outside: kappa outside the window, "one" or "hold" (the last kappa: the released code).
  c.agm = ml_collections.ConfigDict(dict(alpha=1.0, clip=10.0, reference="running_mean",
                                         outside="one", **always))
  c.agm_1 = ml_collections.ConfigDict(dict(alpha=1.0, clip=10.0, outside="one", **always))
  c.agm_ge = ml_collections.ConfigDict(dict(alpha=1.0, clip=10.0, reference="running_mean",
                                            outside="one", **always))
  # The mono-modal concept (competition probe) trains method=unimodal on one modality.
  c.unimodal = ml_collections.ConfigDict(dict(modality="audio"))
  # OGM-GE and OGM-GE-RA (CVPR 2022 README: alpha 0.1); noise=False gives plain OGM.
  c.ogm_ge = ml_collections.ConfigDict(dict(alpha=0.1, noise=True, **always))
  c.ogm_ge_ra = ml_collections.ConfigDict(dict(alpha=0.1, noise=True, **always))
  # OGM (T-PAMI 2024, train_ogm.sh: alpha 0.8), with GE noise.
  c.ogm = ml_collections.ConfigDict(dict(alpha=0.8, noise=True, **always))
  # OPM (T-PAMI 2024, train_opm.sh): drop probability q_base*(1+lam*tanh(rho-1)); a batch
  # drops with probability p_exe.
  c.opm = ml_collections.ConfigDict(dict(q_base=0.5, lam=0.5, p_exe=0.7, **always))
  # MSLR: one initial coefficient per modality in modality order (released AGM code: audio
  # 0.9, visual 1.1; empty = all 1), ratio from a window of validation mono-modal accuracies.
  c.mslr = ml_collections.ConfigDict(dict(init=(0.9, 1.1), window=5))
  # MSES: stop a branch after `patience` epochs without a better smoothed validation
  # mono-modal loss (released AGM code: 80 of 100+ epochs; 5 suits this 20-epoch run);
  # smoothed = (1-weight)*previous + weight*current.
  c.mses = ml_collections.ConfigDict(dict(patience=5, weight=0.4))
  # G-Blending: loss weights re-estimated every super_epoch epochs from train/dep losses.
  c.gblending = ml_collections.ConfigDict(dict(super_epoch=5))
  # Greedy: re-balance the least-utilised modality for `window` steps when the moving
  # average (ema) of the utilisation rates spreads by more than `threshold` (released code:
  # window 5).
  c.greedy = ml_collections.ConfigDict(dict(threshold=0.1, window=5, ema=0.9, **always))

  c.competition = ml_collections.ConfigDict(dict(enabled=True, whitened=False, l2=120.0,
                                                 cache_dir=""))
  c.parallel = ml_collections.ConfigDict(dict(mode="sharding"))
  return c
