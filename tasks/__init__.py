"""SeqIO tasks for every domain msp-jax knows; `import tasks` registers them all.

  nlupp_{banking,hotels}                     (msp_jax.data.nlupp)
  crossner_{politics,science,music,literature,ai,conll2003}
  topv2_{alarm,event,messaging,music,navigation,reminder,timer,weather}
  front_desk                                 the example domain shipped in msp_jax/examples/front_desk
  <name> for each domain registered with `msp register` / `tasks.persist_domain` ($MSP_HOME/domains)

Each comes as '<task>' (T5 SentencePiece vocabulary: `$MSP_T5_VOCAB`, read when `tasks` is imported),
'<task>_smollm2' (the SmolLM2 GGUF BPE) and, for the benchmarks, '<task>_fewshot[_smollm2]' whose train
split holds the few-shot seeds. `tasks.task_name(domain_task, vocabulary, fewshot)` spells a name;
`tasks.add_vocabulary(name, vocabulary)` adds '<task>_<name>' for another tokenizer. Fields and splits:
`tasks/registration.py`. Benchmark files are read from `$MSP_DATA_DIR` when a dataset is built; the TFDS
builders in `tasks.tfds_builders` are the download path for users without the files.

Synthetic sets written by `msp run` (`tasks/synthetic.py`): '<name>', '<name>_seeds' and the seqio mixture
'<name>_mixture' (seed + synthetic), persisted under $MSP_HOME/synthetic and registered here too.

Which domains exist is the catalog's business (`msp_jax.data.catalog`); this package turns them into SeqIO
tasks. Other domains, for this process only: `tasks.register_domain(name, train=..., validation=...,
test=..., ontology=...)`.
"""

from __future__ import annotations

from tasks import crossner, nlupp, topv2
from tasks.custom import persist_domain, register_domain, register_example_domains, register_persisted_domains
from tasks.registration import add_vocabulary, task_name
from tasks.synthetic import persist_synthetic, register_persisted_synthetic, register_synthetic
from tasks.vocabularies import TokenizerVocabulary, smollm2_vocabulary, t5_vocabulary

__all__ = [
    "TokenizerVocabulary", "add_vocabulary", "persist_domain", "persist_synthetic", "register_domain",
    "register_example_domains", "register_persisted_domains", "register_persisted_synthetic",
    "register_synthetic", "smollm2_vocabulary", "t5_vocabulary", "task_name",
]

nlupp.register(overwrite=True)
crossner.register(overwrite=True)
topv2.register(overwrite=True)
register_example_domains()
register_persisted_domains()
register_persisted_synthetic()
