r"""The embedded default: AGM on a synthetic two-modality task that needs no download.

audio is learned first and overfits, visual is more informative but slow (see
data_pipelines/synthetic.py). Runs in a few minutes on a laptop CPU:

  python launch.py --config=configs/default.py --workdir=/tmp/agm_default
  python launch.py --config=configs/default.py --workdir=/tmp/joint_default --config.method=joint

--config.method is one of joint, agm, unimodal, agm_1, agm_ge, ogm_ge, ogm_ge_ra, ogm, opm,
opm_ogm, moddrop, feature_dropout, mslr, mses, gblending, greedy (on the mmtm fusion), greedy_util,
pmr, mmcosine, cml, amco, mmpareto, lfm, mbsd, inforeg, umt, reconboost, mla, relearning, sample
(their hyper-parameters: the sections of the same name below).
The competition probe (mono-modal concepts + d^m per epoch) is on; the concepts are trained
once and cached in ~/.cache/agm_jax/concepts (competition.cache_dir).
"""

import ml_collections

import data_pipelines
from data_pipelines.sources import synthetic
from data_pipelines.sources.loader import LOADER_DEFAULTS


def data_config(name: str, modalities: str, **options) -> ml_collections.ConfigDict:
  """A ``data`` section: the fields every section has (``data_dir``, ``manual_dir``, ``dir``,
  ``synthetic``, ``num_workers``, ``data_seed``), the optional fields dataset ``name`` reads
  with its readers' defaults (``data_pipelines.config_fields``: the loader's settings,
  ``split_roles``, ``synthetic_examples``, the dataset's own such as ``num_frames``), then
  ``options``."""
  fields = dict(name=name, modalities=modalities, data_dir="", manual_dir="", dir="",
                synthetic=False, num_workers=LOADER_DEFAULTS["num_workers"], data_seed=0)
  return ml_collections.ConfigDict({**fields, **data_pipelines.config_fields(name), **options})


def get_config():
  c = ml_collections.ConfigDict()
  c.method = "agm"
  c.seed = 0
  # Seeds seed … seed+num_seeds-1 trained together as one jitted program, one shared data
  # order (agm_jax/train/seeds.py); each seed's lines and summary in <workdir>/seed_<s>/.
  c.num_seeds = 1
  # How the seeds share the program: "vmap" (batched ops), "unroll" (the step once per seed in
  # one jitted program) or "auto" (unroll on the CPU when the step convolves: XLA:CPU's
  # vmapped convolutions are slow; vmap otherwise). The values agree up to float rounding.
  c.seed_program = "auto"
  # The statistic a paper reports, logged beside the final and best-on-val numbers: "" (none),
  # "max_test_acc" / "max_val_acc" (the highest accuracy over epochs on that split, as
  # paper_max_<split>_acc on its lines and "paper" in summary.json); configs/paper.py sets it
  # per dataset as the released AGM code reports it.
  c.paper_statistic = ""
  c.num_epochs = 20
  c.batch_size = 64
  c.eval_batch_size = 256
  c.checkpoint_every_steps = 500
  # False keeps each epoch's last partial training batch (PyTorch's DataLoader default, which
  # the released AGM code uses; configs/paper.py sets it); True drops it (one batch shape).
  c.drop_last = True
  c.log_every_steps = 50

  c.data = data_config("synthetic", "audio,visual",
                       synthetic_options=dict(synthetic.DEFAULTS))

  c.model = ml_collections.ConfigDict(dict(
      fusion="concat",
      encoders={},
      encoder_default=dict(type="mlp", hidden=(64,), features=64),
      # maxout_hidden: an int (each of 2 layers) or a tuple of widths (one layer each); the
      # AGM paper's early-fusion head (released AV_Early_Classifier): maxout_hidden=(2048,
      # 1024), maxout_pieces=2, maxout_input_bn=True, maxout_bn=True, maxout_dropout=0.3.
      fusion_options=dict(
          maxout_hidden=ml_collections.FieldReference(64, field_type=object), maxout_pieces=4,
          maxout_input_bn=False, maxout_bn=False, maxout_dropout=0.0, film_condition="",
          mmtm_stages=(1, 2, 3), mmtm_ratio=4.0, mmtm_gate_scale=1.0, mlp_hidden=(256,),
          bias_split="equal"),
      dtype="float32", init="flax",  # init: "flax", "pytorch", "released" (models/init.py)
      # fusion "psp" / "tbje" (the AGM paper's Table 4 models, models/psp.py, models/tbje.py):
      # their options; the defaults are the released AGM code's AVE and MOSEI settings.
      psp=dict(threshold=0.099, avps_weight=100.0, hidden=128, dropout=0.1,
               attention_hidden=512),
      tbje=dict(embed_dim=300, width=512, num_layers=6, num_heads=4, ff=1024, dropout=0.1)))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=1e-2, momentum=0.9, weight_decay=1e-4,
      schedule="step", decay_epochs=(15,), decay_rate=0.1, grad_clip=0.0,
      adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8,   # name "adam" only (optax/PyTorch defaults)
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
  # p_floor: the floor on each example's label probability in ce^m, which kappa sees (0: eq. 4
  # as written; the released CREMA-D/AVE/AV-MNIST/MOSEI mains floor p at 1e-8).
  agm = dict(alpha=1.0, clip=10.0, outside="one", p_floor=0.0, **always)
  c.agm = ml_collections.ConfigDict(dict(agm, reference="running_mean"))
  c.agm_1 = ml_collections.ConfigDict(agm)
  c.agm_ge = ml_collections.ConfigDict(dict(agm, reference="running_mean"))
  # The mono-modal concept (competition probe) trains method=unimodal on one modality; pad:
  # what replaces the other modalities' inputs for non-late fusions ("zeros"; "normal": N(0,1)
  # noise; the probe sets it from competition.concept_pad).
  c.unimodal = ml_collections.ConfigDict(dict(modality="audio", pad="zeros"))
  # OGM-GE and OGM-GE-RA (CVPR 2022 README: alpha 0.1); noise=False gives plain OGM. scope:
  # what is scaled and noised: "conv" (encoders' 4-D kernels: OGM-GE repo, released AGM
  # AV-MNIST), "branch" (encoder + sum head's classifier block: released AGM CREMA-D),
  # "encoder", "mixed" (all encoder params scaled, kernels noised: agm-jax's earlier reading).
  c.ogm_ge = ml_collections.ConfigDict(dict(alpha=0.1, noise=True, scope="mixed", **always))
  c.ogm_ge_ra = ml_collections.ConfigDict(dict(alpha=0.1, noise=True, scope="mixed",
                                               **always))
  # OGM (T-PAMI 2024), with GE noise. form: "paper" (eq. 11; kept as agm-jax's default),
  # "code" (released main.py: 1 - tanh(alpha*relu(rho)) for the dominant modality), "plus"
  # (OGM*: the others' gradient times plus_gain, released 4). alpha 0.8 is train_ogm.sh's,
  # tuned for form "code" (configs/tpami_ks.py runs it as released); scope as ogm_ge's.
  c.ogm = ml_collections.ConfigDict(dict(alpha=0.8, form="paper", plus_gain=4.0, noise=True,
                                         scope="mixed", **always))
  # OPM (T-PAMI 2024, train_opm.sh): drop probability q_base*(1+lam*tanh(rho-1)); a batch
  # drops with probability p_exe; rho: "current" (this step's, released code) or "previous"
  # (the last step's, the paper's Fig. 2).
  c.opm = ml_collections.ConfigDict(dict(q_base=0.5, lam=0.5, p_exe=0.7, rho="current",
                                         **always))
  # OPM+OGM (T-PAMI 2024 Table 12; main.py with both flags): opm's and ogm's settings.
  c.opm_ogm = ml_collections.ConfigDict(dict(q_base=0.5, lam=0.5, p_exe=0.7, rho="current",
                                             alpha=0.8, form="paper", plus_gain=4.0,
                                             noise=True, scope="mixed", **always))
  # ModDrop (Neverova et al.; T-PAMI 2024 Table 6): each modality's features zeroed per example
  # with probability p (no example loses all; the paper gives no p: 0.5 is ours).
  c.moddrop = ml_collections.ConfigDict(dict(p=0.5, **always))
  # Neuron dropout on the fused features (T-PAMI 2024 Table 6): schedule "constant" (Dropout),
  # "annealed" (p -> 0 over anneal_steps updates), "curriculum" (rate p*(1-exp(-gamma*step))),
  # "evolutional" (mini-batch second-order sampling). No values in the paper: ours.
  c.feature_dropout = ml_collections.ConfigDict(dict(schedule="constant", p=0.5,
                                                     anneal_steps=2000, gamma=1e-3))
  # MSLR: one initial coefficient per modality in modality order (released AGM code: CREMA-D
  # 0.9, 1.1; AV-MNIST 1.3, 0.7; UR-Funny audio, visual, text 0.9, 1.4, 0.7; empty = all 1),
  # ratio from a window of validation mono-modal accuracies. scope "encoder" | "branch" (and
  # the sum head's classifier block: released); mono: the accuracy read, "shapley" |
  # "unimodal" (the late head's W_m z_m + b_m: released); split: the split read after each
  # epoch, "val" | "test" (the released CREMA-D and AV-MNIST mains: the split they report).
  c.mslr = ml_collections.ConfigDict(dict(init=(0.9, 1.1), window=5, scope="encoder",
                                          mono="shapley", split="val", **always))
  # MSES: stop a branch once epoch - best_epoch > patience (released AGM code: CREMA-D 80,
  # AV-MNIST 10, UR-Funny 30; 5 suits this 20-epoch run); smoothed = (1-weight)*previous raw
  # + weight*current. restore "model" (released: params + optimiser state of the best epoch)
  # | "modality"; freeze "update" | "gradient" (released); scope, mono, split: as mslr's.
  c.mses = ml_collections.ConfigDict(dict(patience=5, weight=0.4, restore="model",
                                          freeze="update", scope="encoder", mono="shapley",
                                          split="val", **always))
  # G-Blending (Wang et al., CVPR 2020): loss weights w ∝ G/dO^2 re-estimated every
  # super_epoch epochs (paper: online G-Blend's super-epoch; 5 suits this 20-epoch run).
  # estimate "unimodal_copies" (the paper's Algorithm 2: a copy per head trained
  # super_epoch epochs, (k+1)x the epochs) | "shapley_heads" (stand-in: phi^m heads of the
  # joint model, no extra training); gain "clip" (max(dG, 0)) | "abs" (|dG|, BalanceBenchmark's
  # trainer); copy_optimizer "continue" (the run's optimiser state) | "fresh" (BalanceBenchmark).
  c.gblending = ml_collections.ConfigDict(dict(super_epoch=5, estimate="unimodal_copies",
                                               gain="clip", copy_optimizer="continue"))
  # Greedy (model.fusion "mmtm"): re-balance for `window` steps when the conditional
  # learning speeds differ by more than `threshold`, from start_epoch on (released
  # nyukat/greedy_multimodal_learning configs/training_guided.gin:16-18:
  # Bias_Mitigation_Strong.epsilon=0.01, curation_windowsize=5, starting_epoch=2; its loop
  # counts epochs from 1 (src/framework.py), so 2 is the second epoch: start_epoch=1 here).
  c.greedy = ml_collections.ConfigDict(dict(threshold=0.01, window=5, start_epoch=1,
                                            end_epoch=always["end_epoch"]))
  # Greedy-util (any fusion): re-balance the least-utilised modality for `window` steps when
  # the moving average (ema) of the utilisation rates spreads by more than `threshold`
  # (released code: window 5).
  c.greedy_util = ml_collections.ConfigDict(dict(threshold=0.1, window=5, ema=0.9, **always))
  # PMR (Fan et al., CVPR 2023): alpha the PCE weight of the slower modalities (1.0: the
  # authors' main_Prototype_grad.py default; BalanceBenchmark 0.6), momentum the prototypes'
  # (0.2: the authors' momentum_coef default; BalanceBenchmark 0.5); entropy_weight > 0 adds
  # the paper's early-training entropy regulariser on the dominant modality for the first
  # entropy_epochs epochs (not in either code: 0 = off); window epochs 0-100 (the authors'
  # --modulation_starts 0 --modulation_ends 100 defaults, main_Prototype_grad.py:47-48, epochs
  # from 0 with the end inclusive, :156; BalanceBenchmark ends at 80).
  c.pmr = ml_collections.ConfigDict(dict(alpha=1.0, momentum=0.2, entropy_weight=0.0,
                                         entropy_epochs=5, start_epoch=0, end_epoch=100))
  # MMCosine (Xu et al., ICASSP 2023): the cosine logits' scale (10: the authors' --scaling
  # default and README command; BalanceBenchmark 15). Needs a late-fusion head.
  c.mmcosine = ml_collections.ConfigDict(dict(scaling=10.0))
  # CML (Ma et al., ICML 2023): lam the weight of the confidence penalty (0.1: BalanceBenchmark;
  # the authors' repository gives none for these datasets), eps its margin (0.0: the authors'
  # cpm/CPM_Nets.py); pairs "chain" (the removal chain: its inputs' CE averaged, as the authors'
  # and BalanceBenchmark's trainers) | "all"; form "authors" (cpm's regulariser, an order per
  # example each step: miwae/train.py) | "authors_miwae" (miwae/train.py's tricks) |
  # "balancebenchmark" (one order per epoch, CML_trainer.py) (methods/cml.py).
  c.cml = ml_collections.ConfigDict(dict(lam=0.1, eps=0.0, pairs="chain", form="authors",
                                         **always))
  # AMCo (Zhou et al., ICASSP 2023; BalanceBenchmark's reading, methods/amco.py): a modality is
  # dependent when its softmax share exceeds sigma (0.5); mask rate sin(pi/2 min(eps, l_t)/eps)
  # (eps 0.3); target "features" | "logits" (BalanceBenchmark's: its own-loss term reads the masked
  # logits). Needs a late-fusion head.
  c.amco = ml_collections.ConfigDict(dict(sigma=0.5, eps=0.3, target="features", **always))
  # MMPareto (Wei & Hu, ICML 2024): gamma scales the integrated encoder gradients (1.5: the
  # authors' code/MMPareto.py; BalanceBenchmark's alpha). Needs a late-fusion head.
  c.mmpareto = ml_collections.ConfigDict(dict(gamma=1.5, **always))
  # LFM (Yang et al., NeurIPS 2024): weights "fitted" (the authors' Crema_epoch.py: polynomial
  # of the epoch) | "learned" (Crema_epoch_learnable.py: a hypergradient step per epoch of
  # size lr_alpha, 1e-4 in both codes); alignment "released" (the code's Alignment,
  # Crema_epoch.py:38-45: F.kl_div(p.log(), m) = KL(m||p)) | "js" (Jensen-Shannon).
  # Needs a late-fusion head.
  c.lfm = ml_collections.ConfigDict(dict(weights="fitted", alignment="released", lr_alpha=1e-4,
                                         **always))
  # MBSD (BalanceBenchmark's MBSD_trainer.py; methods/mbsd.py): form "toolkit" (as written:
  # k = 3 RS on probabilities, mean over pairs, :197-222) | "logits" (the k = 2 form, any k).
  c.mbsd = ml_collections.ConfigDict(dict(form="toolkit", **always))
  # InfoReg (Huang et al., CVPR 2025): strength the regulation constant of each modality when
  # it leads (0.95 audio, 0.1 visual: the authors' main.py); window_trace the encoder whose
  # Fisher trace opens and closes the prime learning window ("auto": audio if present, as the
  # code; "sum"; or a modality name). Needs a late-fusion head.
  c.inforeg = ml_collections.ConfigDict(dict(strength=(0.95, 0.1), window_trace="auto"))

  # UMT (Du et al., ICML 2023): CE + scaling * sum_m MSE(encoder m, its uni-modal teacher's);
  # scaling 10 (BalanceBenchmark trainer_config.yaml); teachers trained teacher_epochs epochs
  # first (-1: the run's num_epochs, as a uni-modal run of the same settings).
  # teachers "train" (copies trained in prepare) | "concepts" (the cached mono-modal concepts,
  # shared with the competition probe; teacher_epochs must be -1).
  c.umt = ml_collections.ConfigDict(dict(scaling=10.0, teacher_epochs=-1, teachers="train",
                                         **always))
  # ReconBoost (Hua et al., ICML 2024): one modality's learner per stage with
  # ce_weight*CE - recon_weight*KL-reconcilement (5, 1: authors' train.py and BalanceBenchmark),
  # consolidation 0.5 (authors' alpha; its released gradient is zero: consolidation_grad
  # False), then global rectification; reset_optimizer: momentum zeroed per phase (the
  # authors' fresh SGD per phase); boost_epochs / rectify_epochs per stage 1, 1
  # (BalanceBenchmark's T_epochs; the authors' train.py 4, 4 over hundreds of stages).
  c.reconboost = ml_collections.ConfigDict(dict(ce_weight=5.0, recon_weight=1.0,
                                                consolidation=0.5, consolidation_grad=False,
                                                reset_optimizer=True, boost_epochs=1,
                                                rectify_epochs=1, **always))
  # MLA (Zhang et al., CVPR 2024): one modality per optimiser step through the late head tied
  # into one shared head (model.fusion "concat" or "sum", equal feature sizes); alternation
  # "batch" (authors' main.py and BalanceBenchmark: k optimiser steps per batch, one per
  # modality) | "step" (one modality per batch); untrained "skip" (the other encoders
  # untouched) | "zero" (zero gradient: momentum and weight decay act; the authors' torch 1.8.1
  # code does "zero" to modalities already trained in the batch, "skip" to the others);
  # projection "replace" (paper: g P) | "add" (BalanceBenchmark: g + g P); normalize:
  # P / ||P||_F (both codes); fusion "entropy" (paper: per example) | "entropy_batch"
  # (authors' code) | "equal" (1/k; the authors' README fixed fusion is 0.55 audio + 0.45
  # visual).
  c.mla = ml_collections.ConfigDict(dict(alternation="batch", untrained="skip",
                                         projection="replace", normalize=True,
                                         fusion="entropy"))
  # Diagnosing & Re-learning (Wei et al., ECCV 2024): after every reinit_epoch-th epoch, at
  # most reinit_num times, encoder m becomes w init + (1-w) theta with w = tanh(move_lambda
  # |purity_train - purity_val|) (the authors' code/script/ours.sh for CREMA-D: 3, 20, 3;
  # 5 here so this 20-epoch run re-learns at epochs 5, 10, 15).
  c.relearning = ml_collections.ConfigDict(dict(move_lambda=3.0, reinit_epoch=5, reinit_num=3))
  # Sample-level modality valuation (Wei et al., CVPR 2024): level "sample" | "modality"
  # ("modality": BalanceBenchmark's configured method), variant "authors" (benefit |S|·correct,
  # the authors' code) | "toolkit" (BalanceBenchmark's correct), alpha 1 (the authors'
  # modality_level.py default), part_ratio 0.2 (both codes) and start_epoch 1 (BalanceBenchmark's
  # modulation_starts; the authors' --warmup 5 first re-samples epoch 5: start_epoch=5); the
  # re-sampled copies trained in-step (methods/sample.py).
  c.sample = ml_collections.ConfigDict(dict(level="modality", variant="authors", alpha=1.0,
                                            part_ratio=0.2, start_epoch=1,
                                            end_epoch=always["end_epoch"]))

  # Competition strength d^m (agm_jax/train/competition.py): whitened False = eq. 13, True = the
  # released code's trace((R pinv(B)).T R)/K with B = cov(C)*N; l2 the ridge penalty (paper
  # 120). The concepts: concept_seed (-1 = the run's seed; another seed as in supplement
  # Table 5), concept_pad ("zeros"; "normal": N(0,1) noise for the absent modalities, Table 6;
  # must be "zeros" for late fusion, whose concept is the encoder alone), concept_checkpoint
  # ("final": the last epoch; "best": the epoch of best validation accuracy). Non-default values
  # enter the concept cache key (cache_dir; "" = $AGM_JAX_CACHE or ~/.cache/agm_jax/concepts).
  c.competition = ml_collections.ConfigDict(dict(
      enabled=True, whitened=False, l2=120.0, cache_dir="", concept_seed=-1,
      concept_pad="zeros", concept_checkpoint="final"))
  c.parallel = ml_collections.ConfigDict(dict(mode="sharding"))
  # Overrides per method, applied when that method runs (agm_jax/train/per_method.py): e.g.
  # {"agm": {"model": {"fusion": "concat"}}}. Paper configs use it where the released code built a
  # different model per method.
  c.per_method = ml_collections.ConfigDict()
  return c
