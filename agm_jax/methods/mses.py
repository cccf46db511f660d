"""MSES: modality-specific early stopping (Fujimori et al., "Modality-specific learning rate
control for multimodal classification", ACPR 2019), as the released AGM code runs it
(``run/CREMAD_main.py``).

After each epoch, modality m's validation mono-modal cross-entropy ``l^m`` is smoothed
(``s_1 = l_1``, ``s_t = 0.6 l_{t-1} + 0.4 l_t``); a new minimum saves m's branch (its
``encoders_<m>`` parameters, in the optimiser state). When ``s^m`` has not improved for
``patience`` epochs, m's branch stops — zero gradient and zero optimiser update from then on —
and its best weights are restored (the released code restores the whole model; here only
the branch). The fusion head keeps training. Config: ``mses.patience`` (5 for the 20-epoch
default; the released CREMA-D runs use 80 of 100+ epochs), ``mses.weight`` (0.4).
"""

from agm_jax import modulation_epoch
from agm_jax.methods import joint
from agm_jax.methods.base import Method
from agm_jax.methods.branches import find_state, update_state


def make_tx(config, base, k):
  if int(config.mses.patience) < 1:
    raise ValueError(f"mses.patience must be >= 1, got {config.mses.patience}")
  return modulation_epoch.mses(base, num_modalities=k)


def epoch_end(run, state, epoch, evals):
  metrics = evals["val"][0]
  loss = [metrics[f"mono_ce/{m}"] for m in run.modalities]
  cfg = run.config.mses
  mstate = find_state(state.opt_state, modulation_epoch.MSESState)
  new, params, _ = modulation_epoch.mses_epoch_update(
      mstate, loss, epoch, state.params, patience=int(cfg.patience), weight=float(cfg.weight))
  opt_state = update_state(state.opt_state, modulation_epoch.MSESState, lambda _: new)
  return state.replace(params=params, opt_state=opt_state)


METHOD = Method(name="mses", gradients=joint.gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",), epoch_end=epoch_end)
