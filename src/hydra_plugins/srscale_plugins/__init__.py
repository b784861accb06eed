"""srscale's Hydra plugins (Hydra discovers plugins in the ``hydra_plugins`` namespace).

- :mod:`.sweeper`: ``hydra/sweeper=srscale`` (the default in ``conf/config.yaml``), Hydra's basic
  sweeper that records failed jobs and goes on, whatever launcher ran them.
- :mod:`.launchers`: ``hydra/launcher=submitit_slurm|submitit_local`` with per-job resources, and the
  presets in ``conf/hydra/launcher/``.
"""
