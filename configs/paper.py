r"""The training rules every AGM-paper config shares: what the released AGM code (ICCV 2023,
lihong2303/AGM_ICCV2023) does in all of its runs, in one place. Each dataset config
(``cremad_agm.py``, ``avmnist_agm.py``, …) calls :func:`released_rules` and then sets its own
numbers; docs/REPRODUCE.md lists them per table.

Sources (the released code's files):

* seed 999 — supplement A.2 ("the random seed is set to 999"), ``utils/config.py`` default;
* modulation window: ``--modulation_starts 0 --modulation_ends 20`` (``utils/config.py``
  defaults), tested as ``starts <= epoch <= ends`` with epochs counted from 1, so the first
  20 epochs: ``start_epoch=0, end_epoch=19`` here (epochs from 0). AGM, OGM-GE (and the
  Table 8 variants) modulate only inside it;
* after the window AGM's backward hooks keep the last scale they were given
  (``model.update_scale`` is no longer called): ``outside="hold"``;
* ``ce^m`` floors each example's label probability at 1e-8 (``-log p`` of ``p < 1e-8`` is
  taken as ``-log 1e-8`` in ``run/CREMAD_main.py``, ``AVE_main.py``, ``AVMNIST_main.py``,
  ``MOSEI_main.py``; ``URFunny_main.py`` has no floor): ``agm.p_floor=1e-8``, UR-Funny 0;
* the conditional clip: after the backward pass, if an entry of the fusion output layer's
  weight gradient leaves ``[-t, t]`` the global norm is clipped to ``t`` (``run/*_main.py``:
  t = 1, UR-Funny 5), in every AGM run and in every early-fusion run (joint included);
* competition strength in the released form ``trace(R pinv(cov(C) N)^T R) / K``
  (``test_compute_weight``): ``competition.whitened=True``;
* masked passes in eval mode (``GradMod.forward`` calls ``net.eval()`` for the padded
  passes): ``subsets.bn="eval"``, zero padding;
* late fusion: AGM's model has a concat head (``GradMod`` over ``AVClassifier`` /
  ``Later_Fusion_Model``), every other method's a sum head (``AVClassifier_Sum`` /
  ``Later_Fusion_Model_Sum``; ``tasks/*_task.py`` ``build_model``): :func:`late_heads`;
* the baselines as the released mains run them (:func:`released_baselines`): OGM-GE, MSLR and
  MSES scale each modality's encoder and its ``*_cls`` layer (the sum head's block,
  ``scope="branch"``), MSLR/MSES read the uni-modal heads' accuracies and losses
  (``mono="unimodal"``) on the split the main evaluates after every epoch (``split``: test for
  CREMA-D and AV-MNIST, ``run/CREMAD_main.py`` and ``run/AVMNIST_main.py`` feed them from
  ``test_dataloader``; UR-Funny's valid split), MSES restores the model and optimiser of a
  branch's best epoch and zeroes its gradient (SGD's momentum and weight decay still move it:
  ``freeze="gradient"``), all inside the modulation window.
"""

SEED = 999
WINDOW = (0, 19)
AGM_METHODS = ("agm", "agm_1", "agm_ge")
OGM_METHODS = ("ogm_ge", "ogm_ge_ra")


def late_heads(c):
  """Late fusion as released: a sum head, AGM's methods a concat head; Greedy (not in the
  released code) on its authors' MMTM model (ResNet-18 streams exchanging MMTM gates)."""
  c.model.fusion = "sum"
  c.per_method = {name: {"model": {"fusion": "concat"}} for name in AGM_METHODS}
  c.per_method.greedy = {"model": {"fusion": "mmtm"}}
  return c


def released_baselines(c, *, mslr_init: tuple[float, ...], mses_patience: int,
                       ogm_alpha: float, ogm_scope: str = "branch"):
  """OGM-GE (and OGM-GE-RA), MSLR and MSES as the released mains run them.

  Args:
    mslr_init: MSLR's initial coefficients, in the config's modality order.
    mses_patience: MSES's patience in epochs.
    ogm_alpha: OGM-GE's alpha (the released code shares ``--alpha`` with AGM; the value of
      the paper's baseline runs is not published).
    ogm_scope: "branch" (CREMA-D main) or "conv" (AV-MNIST main).
  """
  for name in OGM_METHODS:
    c[name].alpha = ogm_alpha
    c[name].noise = True
    c[name].scope = ogm_scope
  c.mslr.init = tuple(mslr_init)
  c.mses.patience = mses_patience
  c.mses.restore = "model"
  c.mses.freeze = "gradient"
  for name in ("mslr", "mses"):
    c[name].scope = "branch"
    c[name].mono = "unimodal"
    c[name].split = EVAL_SPLIT.get(c.data.name, "val")   # what the main evaluates each epoch
    c[name].start_epoch, c[name].end_epoch = WINDOW
  return c


def released_early_head(c, *, hidden=(2048, 1024)):
  """The released early-fusion head: ``MaxOut_MLP`` (BatchNorm on the concatenation, two
  2-piece maxouts each followed by BatchNorm and dropout 0.3) and a linear layer
  (``model/utils/module_base.py``, ``model/*_net.py`` ``*Early*``); its widths 2048 and 1024
  are ``MaxOut_MLP``'s ``first_hidden`` and ``seconed_hidden`` in every released early model
  (``model/CREMAD_net.py``, ``AVMNIST_net.py``, ``URFunny_net.py``)."""
  c.model.fusion = "maxout"
  c.per_method = {}
  opts = c.model.fusion_options
  opts.maxout_hidden = tuple(hidden)
  opts.maxout_pieces = 2
  opts.maxout_input_bn = True
  opts.maxout_bn = True
  opts.maxout_dropout = 0.3
  return c


# The split each dataset's released main evaluates after every epoch (EVAL_SPLIT; MSLR and
# MSES read it) and the statistic it reports (config.paper_statistic): the highest
# accuracy over all epochs on that split. CREMA-D and AV-MNIST: the test split
# (the first 90% of the test list; run/CREMAD_main.py, run/AVMNIST_main.py keep the best test
# accuracy); CMU-MOSEI, AVE and UR-Funny: the validation split (run/MOSEI_main.py,
# run/AVE_main.py, run/URFunny_main.py keep the best validate() accuracy); Kinetics-Sounds has
# no released main: the supplement runs it with AV-MNIST's late-fusion settings, so "test".
EVAL_SPLIT = {"cremad": "test", "avmnist": "test", "kinetics_sounds": "test",
              "cmu_mosei": "val", "mosei_tbje": "val", "ave": "val", "urfunny": "val"}
PAPER_STATISTIC = {name: f"max_{split}_acc" for name, split in EVAL_SPLIT.items()}


def released_rules(c, *, early: bool, clip_threshold: float = 1.0, p_floor: float = 1e-8):
  """Applies the shared rules to config ``c`` in place and returns it.

  Args:
    early: an early-fusion config (the conditional clip then applies to every method, joint
      training included; late fusion: only to the AGM methods).
    clip_threshold: the conditional clip's threshold and norm (1; UR-Funny 5).
    p_floor: the AGM methods' floor on the label probability in ``ce^m`` (1e-8; UR-Funny 0).
  """
  c.seed = SEED
  c.paper_statistic = PAPER_STATISTIC.get(c.data.name, "")
  c.drop_last = False   # the released loaders' DataLoader(...) keep the last partial batch
  for name in AGM_METHODS:
    c[name].start_epoch, c[name].end_epoch = WINDOW
    c[name].outside = "hold"
    c[name].p_floor = p_floor
  for name in OGM_METHODS:
    c[name].start_epoch, c[name].end_epoch = WINDOW
  c.optimizer.conditional_clip.threshold = clip_threshold
  c.optimizer.conditional_clip.max_norm = clip_threshold
  c.optimizer.conditional_clip.methods = "*" if early else ",".join(AGM_METHODS)
  c.competition.whitened = True
  c.subsets.bn = "eval"
  c.subsets.pad = "zeros"
  return c
