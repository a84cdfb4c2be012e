"""`predictions.jsonl` rows and the scores recomputed from them (`evaluation.predictions`)."""

from __future__ import annotations

import pytest

from msp_jax.data.schema import Example, Span
from msp_jax.errors import DataError
from msp_jax.evaluation import predictions


def row(text, gold_spans, pred_spans, gold_intents=(), pred_intents=(), gold_parse=None, pred_parse=None):
  example = Example("u", "toy", text, intents=tuple(gold_intents),
                    spans=tuple(Span(s, e, l, text[s:e]) for s, e, l in gold_spans), parse=gold_parse)
  predicted = predictions.labels(pred_intents, [Span(s, e, l, text[s:e]) for s, e, l in pred_spans], pred_parse)
  return predictions.row(example, predicted)


def test_rows_hold_the_text_and_both_label_sets_as_offsets():
  r = row("fly to Paris", [(7, 12, "city")], [(7, 12, "city")], ["book"], ["book", "ask"])
  assert r == {"uid": "u", "text": "fly to Paris",
               "gold": {"intents": ["book"], "spans": [[7, 12, "city"]], "parse": None},
               "predicted": {"intents": ["book", "ask"], "spans": [[7, 12, "city"]], "parse": None}}


def test_multi_intent_scores_intents_and_exact_character_slots():
  rows = [row("at 6 pm today", [(3, 7, "time"), (8, 13, "date")], [(3, 7, "time"), (8, 12, "date")],
              ["a", "b"], ["a"]),
          row("hi", [], [(0, 2, "time")], ["c"], ["c", "d"])]
  scores = predictions.score_rows(rows, "multi_intent")
  # intents: tp 2 (a, c), fp 1 (d), fn 1 (b); slots: tp 1, fp 2 (partial date, hi), fn 1 (date).
  assert scores["intent_f1"] == pytest.approx(200 / 3)
  assert (scores["slot_precision"], scores["slot_recall"]) == pytest.approx((100 / 3, 50.0))


def test_semantic_parse_scores_exact_match_root_intent_accuracy_and_slots():
  gold = "[IN:GET_WEATHER rain [SL:DATE_TIME today ] ]"
  rows = [row("rain today", [(5, 10, "SL:DATE_TIME")], [(5, 10, "SL:DATE_TIME")], ["IN:GET_WEATHER"],
              ["IN:GET_WEATHER"], gold, "[IN:GET_WEATHER  rain [SL:DATE_TIME today ] ]"),
          row("rain today", [(5, 10, "SL:DATE_TIME")], [], ["IN:GET_WEATHER"], ["IN:GET_WEATHER"], gold,
              "[IN:GET_WEATHER rain today ]")]
  scores = predictions.score_rows(rows, "semantic_parse")
  assert (scores["exact_match"], scores["intent_accuracy"]) == (50.0, 100.0)
  assert scores["slot_recall"] == 50.0 and scores["slot_precision"] == 100.0


def test_files_round_trip_and_a_bad_line_is_named(tmp_path):
  rows = [row("fly to Paris", [(7, 12, "city")], [])]
  predictions.write(tmp_path / "p.jsonl", rows)
  assert predictions.read(tmp_path / "p.jsonl") == rows
  assert predictions.score_rows(predictions.read(tmp_path / "p.jsonl"), "ner")["entity_recall"] == 0.0
  (tmp_path / "bad.jsonl").write_text('{"uid": "u", "text": "x", "gold": {"intents": []}}\n')
  with pytest.raises(DataError, match=r"bad.jsonl:1: expected 'gold' with 'intents', 'spans' and 'parse'"):
    predictions.read(tmp_path / "bad.jsonl")
