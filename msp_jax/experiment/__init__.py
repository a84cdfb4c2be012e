"""`msp experiment`: the paper's experiment matrix (domains x methods x generation seeds x downstream repeats) as
cached cells, its statistics and its report. Plain arguments; gin binds `config.MatrixConfig` in
`msp_jax/commands/experiment.py`."""
