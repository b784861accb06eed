"""The bundled verifiable instruction suite: seeded task families with checkers, and the seed-data builder.

- :mod:`srscale.suite.families` — ``Task``, ``FAMILIES`` (``LEARNABLE_FAMILIES``: a job's suite by
  default; ``DEFAULT_FAMILIES``: with ``data.families=null``, and the tiny models' pretraining corpus), ``read_prompt``, ``grade`` (0-5), ``is_correct``,
  ``corrupt`` (a response of a chosen grade), ``reference_answer``.
- :mod:`srscale.suite.build` — ``build_suite`` (all seven :class:`~srscale.seed_data.SeedData` splits) and
  ``pretrain_corpus`` (plain question/answer text for the base model, no judge format).
"""

from srscale.suite.build import build_suite, fill_template, judgment, pretrain_corpus
from srscale.suite.families import (
           DEFAULT_FAMILIES,
           FAMILIES,
           Family,
           Task,
           corrupt,
           grade,
           is_correct,
           read_prompt,
           reference_answer,
)

__all__ = ["DEFAULT_FAMILIES", "FAMILIES", "Family", "Task", "build_suite", "corrupt", "fill_template", "grade", "is_correct",
           "judgment", "pretrain_corpus", "read_prompt", "reference_answer"]
