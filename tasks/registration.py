"""Turning a domain (a `DomainData` loader) into SeqIO tasks, once per vocabulary.

Task names (`task_name`):
  <domain task>                 e.g. 'nlupp_hotels'   T5 SentencePiece vocabulary
  <domain task>_smollm2         e.g. 'nlupp_hotels_smollm2'   the SmolLM2 GGUF byte-level BPE
  <domain task>_fewshot[_...]   benchmark few-shot variant: split 'train' holds the few-shot seeds
                                (`msp_jax.data.fewshot.few_shot`, default k and seed); 'validation' is
                                unchanged except for TOPv2 reminder/weather (their 25-SPIS file); 'test'
                                is unchanged
Other tokenizers: `add_vocabulary('mytok', vocabulary)` registers '<task>_mytok' for every known domain.

Every task has splits 'train', 'validation', 'test' (those the domain has) and yields
  inputs      tf.string -> tokenised   the example text
  targets     tf.string -> tokenised   `serialization.serialize(example, task)`: the text with its labels
  attributes  [n] tf.string            the attribute values MSP conditions on (not tokenised)
  uid         tf.string                the example id
Inputs and targets get EOS appended after trimming. Data comes from the core readers through
`seqio.FunctionDataSource`; benchmark files are found in `$MSP_DATA_DIR` (read when the dataset is built,
not at registration).
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from msp_jax.data.schema import DomainData, Example, TaskKind
from tasks import vocabularies

DEFAULT_SPLITS = ("train", "validation", "test")
FEWSHOT_SUFFIX = "_fewshot"

# suffix ('' for the default) -> zero-argument factory of the vocabulary.
_VOCABULARY_FACTORIES: dict[str, Callable[[], seqio.Vocabulary]] = {
    "": vocabularies.t5_vocabulary,
    "_smollm2": vocabularies.smollm2_vocabulary,
}
# Vocabularies are made once per process (a SentencePiece/BPE model is loaded once, and seqio compares
# the vocabularies of tasks in a mixture).
_VOCABULARY_CACHE: dict[str, seqio.Vocabulary] = {}
# Everything registered so far, to replay onto a vocabulary added later: base name -> registration kwargs.
_DOMAINS: dict[str, dict] = {}
_LOCK = threading.Lock()


def task_name(domain_task: str, vocabulary: str = "t5", fewshot: bool = False) -> str:
  """'nlupp_hotels', vocabulary 'smollm2', fewshot -> 'nlupp_hotels_fewshot_smollm2'."""
  suffix = "" if vocabulary == "t5" else f"_{vocabulary}"
  return f"{domain_task}{FEWSHOT_SUFFIX if fewshot else ''}{suffix}"


def vocabulary_suffixes() -> list[str]:
  """The task-name suffixes of every registered vocabulary ('' for T5, '_smollm2', ...)."""
  with _LOCK:
    return list(_VOCABULARY_FACTORIES)


def vocabulary_for(suffix: str) -> seqio.Vocabulary:
  with _LOCK:
    if suffix not in _VOCABULARY_CACHE:
      _VOCABULARY_CACHE[suffix] = _VOCABULARY_FACTORIES[suffix]()
    return _VOCABULARY_CACHE[suffix]


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {
      "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32),
  }


def examples_to_dataset(examples: Sequence[Example], task: TaskKind) -> tf.data.Dataset:
  """Examples -> a dataset of {'inputs', 'targets', 'attributes' [n], 'uid'} strings."""
  from msp_jax.data import serialization  # pylint: disable=g-import-not-at-top
  columns = {
      "inputs": [e.text for e in examples],
      "targets": [serialization.serialize(e, task) for e in examples],
      "uid": [e.uid for e in examples],
  }
  # Ragged: examples carry different numbers of attributes (possibly none).
  attributes = tf.RaggedTensor.from_row_lengths(
      tf.constant([a for e in examples for a in e.attributes], dtype=tf.string),
      tf.constant([len(e.attributes) for e in examples], dtype=tf.int64))
  return tf.data.Dataset.from_tensor_slices({
      **{k: tf.constant(v, dtype=tf.string) for k, v in columns.items()},
      "attributes": attributes,
  })


def _data_source(load: Callable[[], DomainData], splits: Sequence[str]) -> seqio.FunctionDataSource:
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # One in-memory "file" per split; seqio shuffles examples itself.
    domain_data = load()
    if split not in domain_data.splits:
      raise ValueError(f"task {domain_data.name!r} has no split {split!r} "
                       f"(it has {sorted(domain_data.splits)})")
    return examples_to_dataset(domain_data.splits[split], domain_data.ontology.task)
  return seqio.FunctionDataSource(dataset_fn, splits=tuple(splits))


def _metric_fn(load: Callable[[], DomainData], task: TaskKind) -> Callable:
  """`msp_jax.evaluation.metrics.text_metrics` for the domain; its ontology is read at the first evaluation."""
  def metric_fn(targets: list[str], predictions: list[str]) -> dict[str, float]:
    from msp_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
    return metrics.text_metrics(task, load().ontology)(targets, predictions)
  metric_fn.__name__ = f"{task}_text_metrics"
  return metric_fn


def register_domain_tasks(domain_task: str, load: Callable[[], DomainData], task: TaskKind, *,
                          splits: Sequence[str] = DEFAULT_SPLITS,
                          load_fewshot: Callable[[], DomainData] | None = None,
                          overwrite: bool = False) -> list[str]:
  """Registers `domain_task` (and its few-shot variant when `load_fewshot` is given) for every vocabulary.

  Args:
    domain_task: the catalog name of the domain, e.g. 'nlupp_hotels' or a custom 'front_desk'.
    load: returns the domain's data; called when a dataset is built (cache inside it if it is costly).
    task: the task kind (picks the metrics and the target serialisation).
    splits: the split names the domain has.
    load_fewshot: returns the few-shot view of the domain (train = seeds).
    overwrite: replace tasks of the same names instead of raising seqio's duplicate-name error.

  Returns:
    The task names registered.
  """
  spec = dict(load=load, task=task, splits=tuple(splits), load_fewshot=load_fewshot)
  with _LOCK:
    _DOMAINS[domain_task] = spec
    suffixes = list(_VOCABULARY_FACTORIES)
  names = []
  for suffix in suffixes:
    names += _register_for_vocabulary(domain_task, spec, suffix, overwrite=overwrite)
  return names


def _register_for_vocabulary(domain_task: str, spec: Mapping, suffix: str, overwrite: bool) -> list[str]:
  variants = [("", spec["load"])]
  if spec["load_fewshot"] is not None:
    variants.append((FEWSHOT_SUFFIX, spec["load_fewshot"]))
  vocabulary = vocabulary_for(suffix)  # Cheap: both vocabularies read their model on first use.
  names = []
  for variant, load in variants:
    splits = spec["splits"] if not variant else DEFAULT_SPLITS
    name = f"{domain_task}{variant}{suffix}"
    if overwrite:
      seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=_data_source(load, splits),
        preprocessors=[
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=output_features(vocabulary),
        metric_fns=[_metric_fn(load, spec["task"])],
    )
    names.append(name)
  return names


def add_vocabulary(name: str, vocabulary: seqio.Vocabulary, overwrite: bool = False) -> list[str]:
  """Registers '<task>_<name>' for every domain registered so far and every one registered later.

  `vocabulary` is any `seqio.Vocabulary`, e.g. `TokenizerVocabulary(my_tokenizer)`.
  """
  suffix = f"_{name}"
  with _LOCK:
    _VOCABULARY_FACTORIES[suffix] = lambda: vocabulary
    _VOCABULARY_CACHE[suffix] = vocabulary
    domains = dict(_DOMAINS)
  names = []
  for domain_task, spec in domains.items():
    names += _register_for_vocabulary(domain_task, spec, suffix, overwrite=overwrite)
  return names


def benchmark_loader(domain_task: str, fewshot: bool = False) -> Callable[[], DomainData]:
  """A loader reading `domain_task` from `$MSP_DATA_DIR` through the catalog (memoised per data folder)."""
  def load() -> DomainData:
    return _load_benchmark(domain_task, os.environ.get("MSP_DATA_DIR"), fewshot)
  load.__name__ = f"load_{domain_task}{FEWSHOT_SUFFIX if fewshot else ''}"
  return load


@functools.lru_cache(maxsize=None)
def _load_benchmark(domain_task: str, data_dir: str | None, fewshot: bool) -> DomainData:
  from msp_jax.data import catalog  # pylint: disable=g-import-not-at-top
  domain_data = catalog.load_task_data(domain_task, data_dir=data_dir)
  return fewshot_view(domain_data) if fewshot else domain_data


def fewshot_view(domain_data: DomainData) -> DomainData:
  """The domain with `train` = its few-shot seeds (`msp_jax.data.fewshot.few_shot`, default k and seed).

  Validation is the shipped few-shot validation file where one exists (TOPv2 reminder/weather, as the
  MSP authors use it), else the full validation split; test is unchanged.
  """
  from msp_jax.data import fewshot  # pylint: disable=g-import-not-at-top
  splits = dict(domain_data.splits)
  splits["train"] = fewshot.few_shot(domain_data)
  if "fewshot_validation" in splits:
    splits["validation"] = splits["fewshot_validation"]
  return DomainData(name=f"{domain_data.name}{FEWSHOT_SUFFIX}", ontology=domain_data.ontology,
                    splits={s: splits[s] for s in DEFAULT_SPLITS if s in splits})


def register_benchmark(family: str, domains: Sequence[str], task: TaskKind, *,
                       extra_splits: Mapping[str, Sequence[str]] | None = None,
                       fewshot_domains: Sequence[str] | None = None,
                       overwrite: bool = False) -> list[str]:
  """Registers '<family>_<domain>' for each domain and '<family>_<domain>_fewshot' for those in
  `fewshot_domains` (default: all), for every vocabulary."""
  names = []
  for domain in domains:
    domain_task = f"{family}_{domain}"
    splits = DEFAULT_SPLITS + tuple((extra_splits or {}).get(domain, ()))
    names += register_domain_tasks(domain_task, benchmark_loader(domain_task), task, splits=splits,
                                   load_fewshot=(benchmark_loader(domain_task, fewshot=True)
                                                 if fewshot_domains is None or domain in fewshot_domains
                                                 else None),
                                   overwrite=overwrite)
  return names
