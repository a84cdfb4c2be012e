"""`msp experiment` on the tiny matrix (experiments/tiny.gin: random tiny Llama, front_desk, seed only + MSP):
cells run through their cached stages, an interrupted cell resumes and finished cells are skipped, a changed
setting re-runs only what it affects, every figure recomputes from the predictions files, `msp report` re-renders;
and bad input is one line."""

from __future__ import annotations

import argparse
import itertools
import json
import shutil

import pytest

from msp_jax import files
from msp_jax.cli import main
from msp_jax.commands import experiment as experiment_command
from msp_jax.errors import ConfigError
from msp_jax.evaluation import task_models
from msp_jax.experiment import cells, config as cfg, report, results, runner
from msp_jax.experiment.domains import experiment_domain, nlupp_folds
from msp_jax.run import cache
from msp_jax.run.config import RunConfig
from msp_jax.run.setup import prompt_checkpoint_dir
from msp_jax.synthesis import export, generation, label_noise

TINY = ["experiments/tiny.gin"]


@pytest.fixture(autouse=True)
def chatty_outputs(monkeypatch):
  """The tiny random Llama's outputs decode to empty lines; with this each reads as a distinct request, so with
  tiny.gin's inherited labels every output is a candidate and the synthetic sets are not empty."""
  numbers = itertools.count()
  monkeypatch.setattr(generation, "cut_output", lambda text: f"could you help me with request {next(numbers)}")


class Killed(Exception):
  """Stands for the process being killed in the middle of a stage."""


def tiny_runner(workdir, *bindings, hook=None) -> runner.ExperimentRunner:
  args = argparse.Namespace(gin_file=TINY, gin_bindings=list(bindings), workdir=str(workdir))
  matrix, base = experiment_command.matrix_config(args)
  return runner.ExperimentRunner(matrix, base, show_progress=False, stage_hook=hook)


def test_tiny_experiment_resumes_after_an_interrupted_cell_and_its_figures_recompute(tmp_path, capsys):
  workdir = tmp_path / "exp"
  calls, killed = [], []

  def interrupt_once(cell, stage):
    calls.append((cell.name, stage))
    if cell.method == cfg.MSP and stage == "generate" and not killed:
      killed.append(cell)
      raise Killed  # killed while generating

  first = tiny_runner(workdir, hook=interrupt_once)
  assert [(c.name, c.generation_seed) for c in first.cells] == [("seed_only", None), ("msp-attention", 0)]
  with pytest.raises(Killed):
    first.run()
  seed_only = cfg.Cell("front_desk", cfg.SEED_ONLY)
  msp = cfg.Cell("front_desk", cfg.MSP, "attention", 0)
  assert first.is_done(seed_only, cells.TASK_MODELS) and first.is_done(msp, "train")
  assert not first.is_done(msp, "generate")
  done_before = {(c, s): first.is_done(c, s) for c, s in first.plan()}

  calls.clear()
  second = tiny_runner(workdir, hook=interrupt_once)
  second.run()
  ran = [stage for _, stage in calls]
  # the finished ones were skipped; the domain's oracle reference follows its cells
  assert ran == ["generate", "denoise", cells.CORRECTNESS, cells.TASK_MODELS, cells.ORACLE]
  assert sum(done_before.values()) == 2 and all(second.is_done(c, s) for c, s in second.plan())

  collected = results.collect(second, command="test")
  entry = collected["domains"]["front_desk"]
  assert set(entry["rows"]) == {"seed_only", "msp-attention"} and not collected["missing"]
  msp_row = entry["rows"]["msp-attention"]
  assert msp_row["generated"]["funnel"]["kept"] == cells.target_count(second.matrix, second.domain("front_desk"))
  assert msp_row["generated"]["correctness"] is not None
  assert msp_row["prompt_training"]["steps"] == second.base.training.steps
  assert "prompt_training" not in entry["rows"]["seed_only"]
  noise = msp_row["generated"]["label_noise"]
  assert set(noise) == {"template_leak", "degenerate_span", "unlabelled_capitalised"}
  assert noise["template_leak"] == 0.0 and entry["seed_label_noise"]["examples"] == len(second.domain("front_desk").seeds)
  assert [c["baseline"] for c in entry["comparisons"]] == ["seed_only"]
  for row in entry["rows"].values():  # the selection score on validation, per run and as mean ± std
    assert row["validation"]["n"] == len(row["runs"]) and all(0 <= r["validation"] <= 100 for r in row["runs"])
  oracle = entry["oracle"]
  test_size = len(second.test_examples("front_desk"))
  assert oracle["predictions"] == "cells/front_desk/oracle/downstream/predictions.jsonl.gz"
  assert set(oracle["scores"]) >= {"intent_f1", "slot_f1"} and 0 <= oracle["test_reproduced"] <= 100
  record = cache.read_record(second.cell_dir(cells.oracle_cell("front_desk")), cells.ORACLE).summary
  assert record["examples"] == test_size and record["correctness"] == oracle["test_reproduced"]
  seconds = {c["dir"]: c["seconds"] for c in collected["cells"]}
  assert set(seconds["cells/front_desk/msp-attention/gen0"]) == {"train", "generate", "denoise", "correctness",
                                                                 "task_models"}
  path = results.write(workdir, collected)
  assert results.recompute(workdir, json.loads(path.read_text())) == []
  # A tampered predictions file no longer reproduces the figures.
  predictions_file = workdir / msp_row["runs"][0]["predictions"]
  assert predictions_file.name == "predictions.jsonl.gz"
  rows = [row for _, row in files.read_jsonl_rows(predictions_file)]
  rows[0]["predicted"]["intents"] = [] if rows[0]["predicted"]["intents"] != [] else rows[0]["gold"]["intents"]
  tampered = json.loads(path.read_text())
  files.write_jsonl_rows(predictions_file, rows)
  assert results.recompute(workdir, tampered)
  # So does a tampered oracle predictions file (the reference figures recompute too).
  oracle_file = workdir / oracle["predictions"]
  rows = [row for _, row in files.read_jsonl_rows(oracle_file)]
  gold, predicted = rows[0]["gold"], rows[0]["predicted"]
  rows[0]["predicted"] = dict(gold) if predicted != gold else {**gold, "intents": [], "spans": []}
  files.write_jsonl_rows(oracle_file, rows)
  assert any(p.startswith("front_desk/oracle: ") for p in results.recompute(workdir, json.loads(path.read_text())))

  report.render(collected, workdir)
  html = (workdir / "report.html").read_text()
  assert html.count("data:image/png;base64,") == 2 and "seed + MSP (attention)" in html
  assert "Reference, not a method" in html and "on the real test examples it reproduces" in html
  assert "front_desk: label-noise indicators" in html and "validation (selection)" in html
  assert "<h2>wall time (hours)</h2>" in html and "prompt dev loss (first → best)" in html
  (workdir / "report.md").unlink()
  assert main(["report", str(workdir)]) == 0
  assert "## front_desk: paired differences" in (workdir / "report.md").read_text()

  # A sampling setting re-runs only the MSP cell's generation and what follows; seed only is untouched.
  calls.clear()
  tiny_runner(workdir, "msp.SamplingConfig.temperature = 0.7", hook=interrupt_once).run()
  assert calls == [("msp-attention", "generate"), ("msp-attention", "denoise"),
                   ("msp-attention", cells.CORRECTNESS), ("msp-attention", cells.TASK_MODELS)]


def test_consistency_and_in_context_cells_reuse_what_they_share(tmp_path, monkeypatch):
  calls = []
  experiment = tiny_runner(tmp_path / "exp",
                           "msp.experiment_matrix.methods = ['in_context', 'msp_consistency', 'msp_noise_filter', "
                           "'msp_span_completion']",
                           hook=lambda cell, stage: calls.append((cell.name, stage)))
  odd = lambda text: int(text.rsplit(" ", 1)[1]) % 2 == 1  # noqa: E731  (chatty_outputs' numbered requests)
  monkeypatch.setattr(label_noise, "is_noisy", lambda example, names: odd(example.text))
  experiment.run()
  assert calls == [("in_context", "generate"), ("in_context", "denoise"), ("in_context", cells.CORRECTNESS),
                   ("in_context", cells.TASK_MODELS), ("msp-attention", "train"), ("msp-attention", "generate"),
                   ("msp-attention", "denoise"), ("msp-attention", cells.CORRECTNESS),
                   ("msp-attention", cells.TASK_MODELS), ("msp_consistency-attention", cells.CONSISTENCY),
                   ("msp_consistency-attention", cells.CORRECTNESS), ("msp_consistency-attention", cells.TASK_MODELS),
                   ("msp_noise_filter-attention", cells.NOISE_FILTER), ("msp_noise_filter-attention", cells.CORRECTNESS),
                   ("msp_noise_filter-attention", cells.TASK_MODELS),
                   ("msp_span_completion-attention", cells.SPAN_COMPLETION),
                   ("msp_span_completion-attention", cells.CORRECTNESS),
                   ("msp_span_completion-attention", cells.TASK_MODELS), ("oracle", cells.ORACLE)]
  in_context = experiment.run_of(cfg.Cell("front_desk", cfg.IN_CONTEXT, None, 0))
  assert in_context.config.mixture.mixer == "none" and not prompt_checkpoint_dir(in_context.config.workdir).is_dir()
  summary = cache.read_record(experiment.cell_dir(cfg.Cell("front_desk", cfg.MSP_CONSISTENCY, "attention", 0)),
                              cells.CONSISTENCY).summary
  counts = summary["metrics"]["consistency"]
  assert summary["kept"] + counts["short_of_target"] == cells.target_count(experiment.matrix,
                                                                            experiment.domain("front_desk"))
  # The noise filter drops exactly the noisy candidates and fills from the next-best ones.
  target = cells.target_count(experiment.matrix, experiment.domain("front_desk"))
  filtered = cfg.Cell("front_desk", cfg.MSP_NOISE_FILTER, "attention", 0)
  kept = {r.example.text for r in export.read_jsonl(experiment.synthetic_file(filtered))}
  msp_kept = {r.example.text for r in export.read_jsonl(experiment.synthetic_file(cfg.Cell("front_desk", cfg.MSP,
                                                                                           "attention", 0)))}
  counts = cache.read_record(experiment.cell_dir(filtered), cells.NOISE_FILTER).summary["metrics"]["label_noise_filter"]
  noisy = {text for text in kept | msp_kept if odd(text)}
  assert not kept & noisy and counts["kept"] == len(kept) == target - counts["short_of_target"]
  assert counts["noisy_in_kept_set"] == len(msp_kept & noisy) > 0 and msp_kept - noisy <= kept
  assert counts["filled"] == len(kept - msp_kept)
  # Span completion keeps the msp cell's kept set, texts and labels, and may only add spans.
  completed = {r.example.uid: r.example for r in export.read_jsonl(experiment.synthetic_file(
      cfg.Cell("front_desk", cfg.MSP_SPAN_COMPLETION, "attention", 0)))}
  msp_records = export.read_jsonl(experiment.synthetic_file(cfg.Cell("front_desk", cfg.MSP, "attention", 0)))
  assert set(completed) == {r.example.uid for r in msp_records}
  for r in msp_records:
    e = completed[r.example.uid]
    assert e.text == r.example.text and e.intents == r.example.intents and set(r.example.spans) <= set(e.spans)
  collected = results.collect(experiment)
  baselines = {(c["method"], c["baseline"]) for c in collected["domains"]["front_desk"]["comparisons"]}
  assert baselines == {("msp-attention", "in_context"), ("msp_consistency-attention", "in_context"),
                       ("msp_consistency-attention", "msp-attention"), ("msp_noise_filter-attention", "in_context"),
                       ("msp_noise_filter-attention", "msp-attention"), ("msp_span_completion-attention", "in_context"),
                       ("msp_span_completion-attention", "msp-attention")}
  dropped = collected["domains"]["front_desk"]["rows"]["msp_noise_filter-attention"]["generated"]["dropped"]
  assert dropped.get("noisy_in_kept_set", 0) + dropped.get("noisy_in_fill", 0) == sum(
      counts[k] for k in ("noisy_in_kept_set", "noisy_in_fill"))
  # The seed and oracle models are kept on disk: a later process loads them and predicts the same, untrained.
  later = tiny_runner(tmp_path / "exp", "msp.experiment_matrix.methods = ['in_context', 'msp_consistency', "
                      "'msp_noise_filter', 'msp_span_completion']")
  monkeypatch.setattr(task_models, "train", lambda *args, **kwargs: pytest.fail("a kept model was retrained"))
  test = experiment.test_examples("front_desk")
  for kind in ("seed", "oracle"):
    assert later.model_file("front_desk", kind) == experiment.model_file("front_desk", kind)
    assert later.model_file("front_desk", kind).is_file()
    assert task_models.predict(later.model("front_desk", kind), test, later.encoder) == \
        task_models.predict(experiment.model("front_desk", kind), test, experiment.encoder)
  assert experiment.model_file("front_desk", "seed") != tiny_runner(
      tmp_path / "exp", "msp.TaskModelConfig.max_epochs = 2").model_file("front_desk", "seed")


def test_generation_seeds_share_prompts_and_a_committed_experiment_is_not_retrained(tmp_path):
  """Prompts train once per method; each domain gets its own shapes; with the prompt checkpoints and candidates
  deleted (what a committed experiment leaves out) nothing re-runs, and a downstream setting re-runs only the
  task models, which read the kept sets."""
  calls = []
  workdir = tmp_path / "exp"
  bindings = ("msp.experiment_matrix.generation_seeds = [0, 1]",
              "msp.experiment_matrix.domain_shapes = {'front_desk': (40, 16)}")
  hook = lambda cell, stage: calls.append((cell.name, cell.generation_seed, stage))  # noqa: E731
  experiment = tiny_runner(workdir, *bindings, hook=hook)
  experiment.run()
  assert [c for c in calls if c[2] == "train"] == [("msp-attention", 0, "train")]
  assert calls[-1] == ("oracle", None, cells.ORACLE)
  assert [c for c in calls if c[1] == 1] == [("msp-attention", 1, stage) for stage in
                                             ("generate", "denoise", cells.CORRECTNESS, cells.TASK_MODELS)]
  second_seed = experiment.run_of(cfg.Cell("front_desk", cfg.MSP, "attention", 1))
  assert second_seed.config.shapes.max_text_len == 40 and second_seed.config.shapes.max_target_len == 16
  assert second_seed.config.generation.sampling.max_new_tokens == 16
  assert second_seed.prompts[2].parent == workdir / "cells/front_desk/msp-attention/gen0/best"

  for path in [*workdir.glob("cells/**/best"), *workdir.glob("cells/**/checkpoints"),
               *workdir.glob("cells/**/candidates.jsonl")]:
    shutil.rmtree(path) if path.is_dir() else path.unlink()
  calls.clear()
  again = tiny_runner(workdir, *bindings, hook=hook)
  assert again.pending() == []
  again.run()
  assert calls == [] and not results.collect(again)["missing"]
  runner.check_trained_prompts(again.cells, again.root, again.matrix)  # --only-report reads the records
  tiny_runner(workdir, *bindings, "msp.experiment_matrix.repeats = 2", hook=hook).run()
  assert {stage for *_, stage in calls} == {cells.TASK_MODELS} and len(calls) == 3


def test_expand_shares_the_msp_cell_with_the_ablation_and_the_consistency_filter():
  matrix = cfg.MatrixConfig(domains=("a", "b"), methods=("seed_only", "msp_consistency"), generation_seeds=(0,),
                            ablation_domain="a", ablation_mixers=("attention", "cnn"))
  names = [(c.domain, c.name) for c in cfg.expand(matrix, "attention")]
  assert names == [("a", "seed_only"), ("a", "msp-attention"), ("a", "msp_consistency-attention"),
                   ("b", "seed_only"), ("b", "msp-attention"), ("b", "msp_consistency-attention"), ("a", "msp-cnn")]


def test_ablation_methods_run_on_the_ablation_domain_after_the_main_cells_and_before_the_mixers():
  matrix = cfg.MatrixConfig(domains=("a", "b"), methods=("seed_only",), generation_seeds=(0, 1),
                            ablation_domain="b", ablation_mixers=("attention", "cnn"),
                            ablation_methods=("msp_rebalanced", "msp_consistency"))
  names = [(c.domain, c.name, c.generation_seed) for c in cfg.expand(matrix, "attention")]
  assert names == [("a", "seed_only", None), ("b", "seed_only", None),
                   *[("b", "msp_rebalanced-attention", s) for s in (0, 1)],
                   *[("b", "msp-attention", s) for s in (0, 1)],  # what the consistency filter filters
                   *[("b", "msp_consistency-attention", s) for s in (0, 1)],
                   *[("b", "msp-cnn", s) for s in (0, 1)]]
  rebalanced = cfg.Cell("b", cfg.MSP_REBALANCED, "attention", 1)
  assert cells.train_cell(rebalanced, matrix) == cfg.Cell("b", cfg.MSP, "attention", 0)
  assert cells.run_stages(rebalanced, matrix) == ("generate", "denoise")
  with pytest.raises(ConfigError, match="ablation_methods=\\['msp_rebalanced'\\]: needs an ablation_domain"):
    cfg.MatrixConfig(domains=("a",), ablation_methods=("msp_rebalanced",))


def test_rebalanced_cell_samples_msp_s_prompts_with_rebalanced_requests(tmp_path):
  calls = []
  experiment = tiny_runner(tmp_path / "exp", "msp.experiment_matrix.methods = ['msp']",
                           "msp.GenerationSettings.rebalance = False",
                           "msp.experiment_matrix.ablation_domain = 'front_desk'",
                           "msp.experiment_matrix.ablation_mixers = ['attention']",
                           "msp.experiment_matrix.ablation_methods = ['msp_rebalanced']",
                           hook=lambda cell, stage: calls.append((cell.name, stage)))
  experiment.run()
  assert calls == [("msp-attention", "train"), ("msp-attention", "generate"), ("msp-attention", "denoise"),
                   ("msp-attention", cells.CORRECTNESS), ("msp-attention", cells.TASK_MODELS),
                   ("msp_rebalanced-attention", "generate"), ("msp_rebalanced-attention", "denoise"),
                   ("msp_rebalanced-attention", cells.CORRECTNESS), ("msp_rebalanced-attention", cells.TASK_MODELS),
                   ("oracle", cells.ORACLE)]  # one domain: its oracle after its ablation cells
  msp = experiment.run_of(cfg.Cell("front_desk", cfg.MSP, "attention", 0))
  rebalanced = experiment.run_of(cfg.Cell("front_desk", cfg.MSP_REBALANCED, "attention", 0))
  assert rebalanced.config.generation.rebalance and not msp.config.generation.rebalance
  assert rebalanced.config.mixture == msp.config.mixture
  assert rebalanced.prompts[2] == msp.prompts[2]  # the same trained prompt checkpoint
  assert rebalanced.config.generate_fingerprint() != msp.config.generate_fingerprint()
  entry = results.collect(experiment)["domains"]["front_desk"]
  assert entry["rows"]["msp_rebalanced-attention"]["title"] == "seed + MSP, rebalanced (attention)"
  assert {(c["method"], c["baseline"]) for c in entry["comparisons"]} == {("msp_rebalanced-attention",
                                                                         "msp-attention")}


def test_each_domain_has_its_oracle_reference_after_its_main_cells_and_before_the_ablation():
  matrix = cfg.MatrixConfig(domains=("a", "b"), methods=("seed_only",), generation_seeds=(0,),
                            ablation_domain="a", ablation_mixers=("cnn",))
  base = RunConfig()
  plan = runner.ExperimentRunner(matrix, base, show_progress=False).plan()
  order = [(c.domain, c.name, stage) for c, stage in plan if stage in (cells.TASK_MODELS, cells.ORACLE)]
  assert order == [("a", "seed_only", cells.TASK_MODELS), ("a", "oracle", cells.ORACLE),
                   ("b", "seed_only", cells.TASK_MODELS), ("b", "oracle", cells.ORACLE),
                   ("a", "msp-cnn", cells.TASK_MODELS)]
  assert cells.oracle_cell("a").relative_dir == "cells/a/oracle" and not cells.oracle_cell("a").generated


def test_domain_shapes_name_an_experiment_domain_and_two_sizes():
  assert cfg.MatrixConfig(domains=("a",), domain_shapes={"a": (64, 32)}).domain_shapes["a"] == (64, 32)
  with pytest.raises(ConfigError, match="domain_shapes: 'b' is not one of the experiment's domains"):
    cfg.MatrixConfig(domains=("a",), domain_shapes={"b": (64, 32)})
  with pytest.raises(ConfigError, match=r"domain_shapes\['a'\]=\(64,\): expected \(max_text_len, max_target_len\)"):
    cfg.MatrixConfig(domains=("a",), domain_shapes={"a": (64,)})


@pytest.mark.parametrize("binding,expected", [
    ("msp.experiment_matrix.methods = ['msp', 'gpt4']", "unknown method 'gpt4'"),
    ("msp.experiment_matrix.domains = ['no_such_domain']", "no_such_domain"),
    ("msp.experiment_matrix.ablation_mixers = ['lstm']", "unknown mixer 'lstm'"),
    ("msp.experiment_matrix.ablation_methods = ['gpt4']", "ablation_methods: unknown method 'gpt4'"),
])
def test_bad_matrix_is_one_line(tmp_path, capsys, binding, expected):
  code = main(["experiment", "--gin_file", TINY[0], "--quiet", "--workdir", str(tmp_path / "exp"),
               f"--gin.{binding.replace(' = ', '=').replace(' ', '')}"])
  stderr = capsys.readouterr().err
  assert code == 2, stderr
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and expected in lines[0], stderr
  assert "Traceback" not in stderr and not (tmp_path / "exp" / "cells").exists()


def test_report_without_trained_prompts_names_the_method(tmp_path, capsys):
  status = main(["experiment", "--gin_file", TINY[0], "--quiet", "--workdir", str(tmp_path / "exp"), "--only-report"])
  err = capsys.readouterr().err
  assert status == 2 and "method 'msp' needs trained prompts" in err and len(err.strip().splitlines()) == 1
  assert main(["report", str(tmp_path / "nothing")]) == 2
  assert "no results" in capsys.readouterr().err


def test_nlupp_protocol_splits_by_fold(data_dir):
  matrix = cfg.MatrixConfig(domains=("nlupp_hotels",))
  domain = experiment_domain("nlupp_hotels", matrix, str(data_dir))
  folds = lambda examples: {e.uid.split("/")[1] for e in examples}  # noqa: E731
  assert folds(domain.seeds) == {"fold0", "fold1"} and 80 <= len(domain.seeds) <= 110
  assert folds(domain.data.splits["validation"]) == {"fold19"}
  assert folds(domain.data.splits["test"]) == {f"fold{i}" for i in range(2, 19)}
  test_uids = {e.uid for e in domain.data.splits["test"]}
  assert not test_uids & {e.uid for e in domain.oracle_train}
  with pytest.raises(ConfigError, match="fold 42"):
    nlupp_folds(domain.data, (42,), ())


def test_prompt_tuning_model_is_the_prefix_alone_and_in_context_prefix_is_the_instruction():
  import jax
  import numpy as np
  from msp_jax.backbones import load_backbone
  from msp_jax.tuning.msp_model import INSTRUCTION, MixtureConfig, MspModel
  from toy_domain import ONTOLOGY  # pylint: disable=import-error

  backbone = load_backbone("random:llama-tiny").backbone
  length = cells.instruction_length(backbone)
  model = MspModel(backbone, ONTOLOGY, MixtureConfig(mixer="none", prefix_length=length, max_attributes=2))
  params = model.init(jax.random.PRNGKey(0), backbone.params)
  assert list(params) == ["prefix"]  # no attribute table, no mixer
  table = model.embedding_table(backbone.params)
  np.testing.assert_array_equal(params["prefix"]["prompt"], table[np.array(backbone.tokenizer.encode(INSTRUCTION))])
  batch = {"text_ids": np.ones((2, 5), np.int32), "text_mask": np.ones((2, 5), np.int32),
           "attribute_ids": np.array([[0, 1], [2, 0]], np.int32), "attribute_mask": np.array([[1, 1], [1, 0]], np.int32)}
  embeds, mask = model.inputs(params, backbone.params, batch)
  assert embeds.shape == (2, length + 5, backbone.embed_dim) and mask.shape == (2, length + 5)
  other = dict(batch, attribute_ids=np.array([[2, 2], [1, 1]], np.int32))
  np.testing.assert_array_equal(model.inputs(params, backbone.params, other)[0], embeds)  # attributes do not enter
