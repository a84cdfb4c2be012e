"""`msp data-stats`: counts that match the data README, in tables and as JSON."""

from __future__ import annotations

import json

from msp_jax import cli


def _stats(capsys, *argv) -> dict:
  assert cli.main(["data-stats", *argv, "--json"]) == 0
  return json.loads(capsys.readouterr().out)


def test_nlupp_hotels_counts(capsys, data_dir):
  s = _stats(capsys, "nlupp_hotels", "--data-dir", str(data_dir))
  assert s["splits"] == {"train": 914, "validation": 95, "test": 95}
  assert len(s["attributes"]) == 54 and s["attribute_kinds"] == {"intent": 40, "slot": 14}
  assert s["few_shot"]["rule"] == "intent_cover" and s["few_shot"]["examples"] > 0


def test_crossner_politics_counts(capsys, data_dir):
  s = _stats(capsys, "crossner_politics", "--data-dir", str(data_dir))
  assert s["splits"] == {"train": 200, "validation": 541, "test": 651}
  assert len(s["attributes"]) == 9
  assert s["few_shot"]["rule"] == "mention_pass"


def test_topv2_weather_counts_and_few_shot_size(capsys, data_dir):
  s = _stats(capsys, "topv2_weather", "--data-dir", str(data_dir))
  assert s["splits"] == {"train": 23054, "validation": 2667, "test": 5682, "fewshot_train": 176,
                         "fewshot_validation": 147}
  assert s["attribute_kinds"] == {"intent": 7, "slot": 11}
  assert s["few_shot"] == {"rule": "shipped", "k": 25, "examples": 176}
  assert s["attributes"]["IN:GET_WEATHER"] > 20000


def test_attribute_counts_are_train_examples_carrying_each(capsys, data_dir):
  s = _stats(capsys, "nlupp_banking", "--data-dir", str(data_dir))
  folds = [json.loads((data_dir / f"nlupp/data/banking/fold{i}.json").read_text()) for i in range(2, 20)]
  expected = sum("standing_order" in r.get("intents", []) for fold in folds for r in fold)
  assert s["attributes"]["standing_order"] == expected > 0


def test_data_dir_defaults_to_environment(capsys, data_dir, monkeypatch):
  monkeypatch.setenv("MSP_DATA_DIR", str(data_dir))
  assert _stats(capsys, "crossner_ai")["splits"]["train"] == 100


def test_table_output_lists_splits_and_few_shot(capsys, data_dir):
  assert cli.main(["data-stats", "crossner_ai", "--data-dir", str(data_dir)]) == 0
  out = capsys.readouterr().out
  assert "train" in out and "100" in out and "few-shot: 100 examples" in out


def test_unknown_task_exits_2_with_known_names(capsys):
  assert cli.main(["data-stats", "nlupp_pizza", "--data-dir", "."]) == 2
  assert "nlupp_hotels" in capsys.readouterr().err


def test_shipped_example_domain_by_name(capsys, monkeypatch):
  monkeypatch.delenv("MSP_DATA_DIR", raising=False)  # not a benchmark: needs no data folder
  s = _stats(capsys, "front_desk")
  assert s["task_kind"] == "multi_intent" and s["splits"] == {"train": 102, "validation": 25, "test": 25}
  assert s["attribute_kinds"] == {"intent": 12, "slot": 6}
