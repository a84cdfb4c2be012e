"""Synthetic data on disk: JSONL and TFRecord, written atomically, read back to identical examples.

A record (JSONL line, or `tf.train.Example` with the same fields):
  uid, domain, text, intents [str], spans [{start, end, label, text}], parse (str or null), attributes [str],
  score (float), seed_uid, novel (bool), provenance {backbone, prompt_checkpoint, seed}
Every file is written atomically (`msp_jax.files`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from msp_jax.data.schema import Example, Span
from msp_jax.errors import DataError
from msp_jax.files import atomic_path, read_jsonl_rows, write_jsonl_rows


@dataclasses.dataclass(frozen=True)
class SyntheticRecord:
  example: Example
  score: float
  seed_uid: str
  novel: bool
  provenance: dict[str, Any]


def example_to_dict(example: Example) -> dict[str, Any]:
  """An example's JSON fields (attributes included for readers that do not recompute them)."""
  return {"uid": example.uid, "domain": example.domain, "text": example.text, "intents": list(example.intents),
          "spans": [dataclasses.asdict(s) for s in example.spans], "parse": example.parse,
          "attributes": list(example.attributes)}


def example_from_dict(row: dict[str, Any]) -> Example:
  """Inverse of `example_to_dict` (raises KeyError/TypeError/ValueError on a malformed row)."""
  return Example(uid=row["uid"], domain=row["domain"], text=row["text"], intents=tuple(row["intents"]),
                 spans=tuple(Span(**s) for s in row["spans"]), parse=row["parse"])


def record_to_dict(record: SyntheticRecord) -> dict[str, Any]:
  """The JSON form; the score is rounded to float32, as TFRecord keeps it, so both formats agree."""
  return {**example_to_dict(record.example), "score": float(np.float32(record.score)),
          "seed_uid": record.seed_uid, "novel": bool(record.novel), "provenance": dict(record.provenance)}


def record_from_dict(row: dict[str, Any], where: str) -> SyntheticRecord:
  try:
    return SyntheticRecord(example_from_dict(row), float(row["score"]), row["seed_uid"], bool(row["novel"]),
                           dict(row["provenance"]))
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"{where}: not a synthetic-data record ({type(e).__name__}: {e})") from e


def write_jsonl(path: str | os.PathLike, records: Sequence[SyntheticRecord]) -> None:
  write_jsonl_rows(path, (record_to_dict(r) for r in records))


def read_jsonl(path: str | os.PathLike) -> list[SyntheticRecord]:
  return [record_from_dict(row, where) for where, row in read_jsonl_rows(path)]


def read_examples(path: str | os.PathLike) -> list[Example]:
  """Examples written with `example_to_dict` (e.g. a run's seeds.jsonl); errors name the file and line."""
  examples = []
  for where, row in read_jsonl_rows(path):
    try:
      examples.append(example_from_dict(row))
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f"{where}: not an example ({type(e).__name__}: {e})") from e
  return examples


def _tf_example(record: SyntheticRecord):
  import tensorflow as tf

  d = record_to_dict(record)

  def strings(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))

  def ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

  features = {
      "uid": strings([d["uid"]]), "domain": strings([d["domain"]]), "text": strings([d["text"]]),
      "intents": strings(d["intents"]), "attributes": strings(d["attributes"]),
      "span_start": ints([s["start"] for s in d["spans"]]), "span_end": ints([s["end"] for s in d["spans"]]),
      "span_label": strings([s["label"] for s in d["spans"]]),
      "span_text": strings([s["text"] for s in d["spans"]]),
      "parse": strings([] if d["parse"] is None else [d["parse"]]),
      "score": tf.train.Feature(float_list=tf.train.FloatList(value=[d["score"]])),
      "seed_uid": strings([d["seed_uid"]]), "novel": ints([int(d["novel"])]),
      "provenance": strings([json.dumps(d["provenance"], sort_keys=True)]),
  }
  return tf.train.Example(features=tf.train.Features(feature=features))


def write_tfrecord(path: str | os.PathLike, records: Sequence[SyntheticRecord]) -> None:
  import tensorflow as tf

  with atomic_path(path) as tmp:
    with tf.io.TFRecordWriter(str(tmp)) as writer:
      for record in records:
        writer.write(_tf_example(record).SerializeToString())


def tfrecord_feature_spec() -> dict[str, Any]:
  """The `tf.io.parse_single_example` spec of the TFRecord files (what a SeqIO source reads)."""
  import tensorflow as tf

  var_str, var_int = tf.io.VarLenFeature(tf.string), tf.io.VarLenFeature(tf.int64)
  return {"uid": tf.io.FixedLenFeature([], tf.string), "domain": tf.io.FixedLenFeature([], tf.string),
          "text": tf.io.FixedLenFeature([], tf.string), "intents": var_str, "attributes": var_str,
          "span_start": var_int, "span_end": var_int, "span_label": var_str, "span_text": var_str,
          "parse": var_str, "score": tf.io.FixedLenFeature([], tf.float32),
          "seed_uid": tf.io.FixedLenFeature([], tf.string), "novel": tf.io.FixedLenFeature([], tf.int64),
          "provenance": tf.io.FixedLenFeature([], tf.string)}


def read_tfrecord(path: str | os.PathLike) -> list[SyntheticRecord]:
  import tensorflow as tf

  spec = tfrecord_feature_spec()
  records = []
  for number, raw in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator(), start=1):
    f = tf.io.parse_single_example(raw, spec)
    dense = {k: (tf.sparse.to_dense(v).numpy() if isinstance(v, tf.sparse.SparseTensor) else v.numpy())
             for k, v in f.items()}
    text = lambda b: b.decode("utf-8")  # noqa: E731
    row = {"uid": text(dense["uid"]), "domain": text(dense["domain"]), "text": text(dense["text"]),
           "intents": [text(b) for b in dense["intents"]],
           "spans": [{"start": int(s), "end": int(e), "label": text(l), "text": text(t)}
                     for s, e, l, t in zip(dense["span_start"], dense["span_end"], dense["span_label"],
                                           dense["span_text"])],
           "parse": text(dense["parse"][0]) if len(dense["parse"]) else None,
           "score": float(dense["score"]), "seed_uid": text(dense["seed_uid"]), "novel": bool(dense["novel"]),
           "provenance": json.loads(text(dense["provenance"]))}
    records.append(record_from_dict(row, f"{path}: record {number}"))
  return records
