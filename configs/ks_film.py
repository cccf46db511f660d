r"""Kinetics-Sounds, FiLM fusion (AGM supplement Table 7, FiLM): configs/ks_agm.py with the
audio features conditioning the visual ones through FiLM (Perez et al., AAAI 2018).
``--config.method=`` picks the row: agm (default), joint, unimodal.

  python launch.py --config=configs/ks_film.py --workdir=runs/ks_film \
      --config.data.manual_dir=RAW --config.data.data_dir=TFDS

Sources: as configs/ks_agm.py ("apart from the implementation of the fusion module for the
FiLM case, the encoder network and training parameters are the same", supplement C). Which
modality conditions is not published: audio here (our choice;
``--config.model.fusion_options.film_condition=visual`` swaps it). FiLM is not late fusion, so
the conditional clip applies to every method, as the released code does for its non-late runs.
"""

from configs import ks_agm, paper


def get_config():
  c = ks_agm.get_config()
  c.model.fusion = "film"
  c.per_method = {}
  c.model.fusion_options.film_condition = "audio"
  paper.released_rules(c, early=True)
  return c
