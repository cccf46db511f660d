r"""AVE with PSP, as the AGM paper ran it (Table 4, "AVE"): Positive Sample Propagation over
PSP's VGGish / VGG-19 segment features, trained and scored per 1-s segment (28 events +
background). ``--config.method=`` picks the row: agm (default), joint, unimodal (the
mono-modal concepts: the whole PSP with the other modality zeroed), agm_1, agm_ge.

  python launch.py --config=configs/ave_psp.py --workdir=runs/ave_psp \
      --config.data.manual_dir=/path/to/ave_psp_features --config.data.data_dir=/path/to/tfds
  # no download: random inputs of AVE's shapes
  python launch.py --config=configs/ave_psp.py --workdir=/tmp/ave_psp \
      --config.data.synthetic=True --config.num_epochs=1

Every number and its source ("released": lihong2303/AGM_ICCV2023; "PSP": the PSP authors'
jasongief/PSP_CVPR_2021, whose settings supplement A.2 adopts for AVE — "we adopt the same
experimental settings in [11]"):
* the rules all paper configs share (seed 999, the modulation window of epochs 0-19 with the
  last κ held after it, masked passes in eval mode, the whitened competition strength):
  configs/paper.py;
* the model — released ``model/AVE_net.py`` ``psp_net(128, 512, 128, 29)``: threshold 0.099
  and AVPS weight λ = 100 (released ``utils/config.py`` ``AVE_Config``; PSP's README and
  ``fully_supervised_main.py`` defaults), dropout 0.1 (``PSP``); agm_jax/models/psp.py;
* the task — segment-level labels and accuracy over all segments (released ``compute_acc``),
  the AVPS target from the segment labels (``data.task="segment"``), the unpooled 7x7 VGG-19
  map (``data.visual_pool="none"``);
* Adam, learning rate 1e-3, no weight decay, x0.8 after epochs 60 and 120, batch 128, 300
  epochs — PSP ``fully_supervised_main.py`` (``optim.Adam(lr=1e-3)``, ``update_lr`` when
  ``(epoch+1) % 60 == 0 and epoch < 170``, ``--batch_size 128``, ``--nb_epoch 300``); Adam's
  betas 0.9, 0.999 and eps 1e-8 — PyTorch's defaults, which that call keeps;
* alpha 1.0 — released ``utils/config.py`` default; no exponent clip and no conditional gradient
  clip — ``run/AVE_main.py`` computes ``exp(alpha * (optimal_ratio - ratio))`` and never clips.

Not reproduced: the released loader keeps one AVPS target buffer across batches without zeroing
it (stale 1/n entries from earlier videos); here each video's target is its own. The paper
reports the best validation accuracy over the epochs (``run/AVE_main.py``); agm-jax's summary
gives the final epoch and the best-validation epoch.
"""

import ml_collections

from configs import default, paper


def get_config():
  c = default.get_config()
  c.method = "agm"
  c.num_epochs = 300
  c.batch_size = 128
  c.eval_batch_size = 128
  c.checkpoint_every_steps = 500
  c.log_every_steps = 10
  # synthetic_examples: per split with data.synthetic=True (random inputs) only.
  c.data = default.data_config("ave", "audio,visual", task="segment", visual_pool="none",
                               synthetic_examples=256)
  c.model.fusion = "psp"
  c.model.psp = dict(threshold=0.099, avps_weight=100.0, hidden=128, dropout=0.1,
                     attention_hidden=512)
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, momentum=0.0, weight_decay=0.0, schedule="step",
      decay_epochs=(60, 120), decay_rate=0.8, grad_clip=0.0, adam_b1=0.9, adam_b2=0.999,
      adam_eps=1e-8, conditional_clip=dict(c.optimizer.conditional_clip)))
  for name in paper.AGM_METHODS:
    c[name].alpha = 1.0
    c[name].clip = float("inf")
  paper.released_rules(c, early=True)
  c.optimizer.conditional_clip.threshold = 0.0   # run/AVE_main.py: no clip
  c.per_method = {}
  return c
