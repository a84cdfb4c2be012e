"""`msp run`: the pipeline's stages in one workdir, each cached.

  setup.py      what every stage shares (domain, seed set, frozen backbone, prompt model) and prompt training
  cache.py      finished-stage records and fingerprints: what makes a re-run skip a stage
  checks.py     the settings no stage could run with, refused before the first stage (`Run.check`)
  summaries.py  what each stage records (typed, read back from its JSON)
  workflow.py   `Run`: one method per stage
"""
