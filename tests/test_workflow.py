"""`msp run` / `msp generate` / `msp denoise`: stage caching, export, SeqIO registration and bad input.

The backbone is the tiny random Llama. Every output it writes decodes to an empty line, so generation keeps
nothing unless a test gives the outputs text (`chatty_outputs`); the denoise stage is also run on hand-made
candidates (reworded seed examples) to check what it writes.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import pathlib
import random
import re
import types

import pytest

import toy_domain
from msp_jax import cli
from msp_jax.data.schema import Example
from msp_jax.evaluation import predictions
from msp_jax.run import cache
from msp_jax.run.summaries import DenoiseSummary, GenerateSummary, SyntheticFiles
from msp_jax.synthesis import export, generation

TINY = toy_domain.TINY_RUN_FLAGS
# Outputs take their seed's labels (the authors' mode), so text that does not parse is kept too.
INHERIT = "--gin.msp.GenerationSettings.label_mode='inherit'"
STAGES = ("train", "generate", "denoise", "downstream")


@pytest.fixture(autouse=True)
def msp_home(tmp_path, monkeypatch):
  home = tmp_path / "msp_home"
  monkeypatch.setenv("MSP_HOME", str(home))
  return home


@pytest.fixture
def chatty_outputs(monkeypatch):
  """Each generated output reads as a distinct request (the tiny backbone's own outputs are empty lines); with
  `INHERIT` every one becomes a candidate, and the synthetic set is not empty."""
  numbers = itertools.count()
  monkeypatch.setattr(generation, "cut_output", lambda text: f"could you help me with request {next(numbers)}")


def run_tiny(command: str, workdir: pathlib.Path, *extra: str) -> int:
  return cli.main([command, *TINY, "--workdir", str(workdir), *extra])


def tiny_run(workdir: pathlib.Path):
  """The `workflow.Run` that `msp run` with the TINY flags builds, in-process."""
  from msp_jax.commands import stage_command
  from msp_jax.commands.gin_utils import split_gin_flags
  argv, bindings = split_gin_flags(["run", *TINY, "--workdir", str(workdir)])
  args = cli.build_parser().parse_args(argv)
  args.gin_bindings = list(args.gin_bindings) + bindings
  run = stage_command.make_run(args, STAGES)
  run.report = lambda message: None
  return run


# ---------------------------------------------------------------------------------------------- stages


def test_stage_runs_once_then_skips_and_reruns_when_its_fingerprint_or_outputs_change(tmp_path):
  calls = []
  output = tmp_path / "out.txt"

  def compute():
    calls.append(1)
    output.write_text("x")
    return {"n": len(calls)}, [output]

  messages = []
  first = cache.run_stage(tmp_path, "s", "fp1", compute, report=messages.append)
  again = cache.run_stage(tmp_path, "s", "fp1", compute, report=messages.append)
  assert len(calls) == 1 and again.summary == first.summary == {"n": 1}
  assert "skipping" in messages[-1]
  cache.run_stage(tmp_path, "s", "fp2", compute, report=messages.append)
  assert len(calls) == 2 and "changed" in messages[-2]
  output.unlink()
  cache.run_stage(tmp_path, "s", "fp2", compute, report=messages.append)
  assert len(calls) == 3
  cache.run_stage(tmp_path, "s", "fp2", compute, force=True, report=messages.append)
  assert len(calls) == 4


def test_failed_stage_leaves_no_record(tmp_path):
  def boom():
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    cache.run_stage(tmp_path, "s", "fp", boom, report=lambda m: None)
  assert cache.read_record(tmp_path, "s") is None


def test_corrupt_stage_record_is_a_clear_error(tmp_path):
  path = cache.record_path(tmp_path, "train")
  path.parent.mkdir(parents=True)
  path.write_text("{not json")
  with pytest.raises(Exception, match=r"train\.json:1: corrupt stage record"):
    cache.read_record(tmp_path, "train")


def test_summaries_read_back_what_they_write_and_records_of_earlier_versions():
  rng = random.Random()
  generated = GenerateSummary(generated=rng.randrange(100), candidates=rng.randrange(100),
                              dropped={"empty": rng.randrange(9)}, outcomes={"ok": rng.randrange(9)},
                              novel_generated=rng.randrange(9), novel_candidates=rng.randrange(9),
                              prompt_checkpoint="w/best/60")
  assert GenerateSummary.from_json(json.loads(json.dumps(generated.to_json()))) == generated
  older = {k: v for k, v in generated.to_json().items() if k != "novel_candidates"}
  assert GenerateSummary.from_json(older).novel_candidates == 0  # written before novel candidates were counted
  denoised = DenoiseSummary(kept=3, metrics={"kept": {"count": 3}}, files=SyntheticFiles("a.jsonl", "a.tfrecord",
                                                                                        "s.jsonl"),
                            metrics_file="m.json", seqio_tasks=("x", "x_mixture"))
  raw = json.loads(json.dumps(denoised.to_json()))
  assert raw["files"] == {"jsonl": "a.jsonl", "tfrecord": "a.tfrecord", "seeds": "s.jsonl"}
  assert raw["seqio_tasks"] == ["x", "x_mixture"] and DenoiseSummary.from_json(raw) == denoised


def test_stage_summary_missing_a_field_is_a_clear_error(tmp_path, capsys):
  workdir = tmp_path / "w"
  config = tiny_run(workdir).config
  cache.write_record(workdir, "generate", config.generate_fingerprint(), [], {"generated": 3}, 0.0)
  assert run_tiny("denoise", workdir) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "generate.json: stage summary is not a GenerateSummary" in err[0]
  assert "'candidates'" in err[0] and "delete it to re-run stage 'generate'" in err[0]


def test_fingerprint_is_stable_and_sensitive():
  from msp_jax.run.config import RunConfig
  from msp_jax.tuning.training import TrainConfig
  a, b = RunConfig(), RunConfig()
  assert a.generate_fingerprint() == b.generate_fingerprint()
  c = RunConfig(training=TrainConfig(steps=301))
  assert c.train_fingerprint() != a.train_fingerprint()
  assert c.denoise_fingerprint() != a.denoise_fingerprint()  # upstream changes propagate


def test_a_setting_added_later_leaves_finished_stages_alone_until_it_is_set():
  import dataclasses
  from msp_jax.config_fields import new_setting

  @dataclasses.dataclass(frozen=True)
  class Before:
    steps: int = 3
    inner: tuple = ((1, "a"),)

  @dataclasses.dataclass(frozen=True)
  class After:
    steps: int = 3
    inner: tuple = ((1, "a"),)
    dtype: str = new_setting("float32")

  @dataclasses.dataclass(frozen=True)
  class Outer:
    config: object
    name: str = "x"

  assert cache.fingerprint({"c": Outer(Before())}) == cache.fingerprint({"c": Outer(After())})
  assert cache.fingerprint({"c": Outer(After(dtype="bfloat16"))}) != cache.fingerprint({"c": Outer(After())})
  # The text hashed is what dataclasses.asdict gives for a config without such fields.
  assert cache.fingerprint({"c": Outer(Before())}) == cache.fingerprint({"c": dataclasses.asdict(Outer(Before()))})
  from msp_jax.tuning.training import TrainConfig
  assert cache.fingerprint({"t": TrainConfig()}) != cache.fingerprint({"t": TrainConfig(backbone_dtype="bfloat16")})


# ------------------------------------------------------------------------------------------------- run


def test_msp_run_caches_every_stage(tmp_path, capsys, chatty_outputs):
  workdir = tmp_path / "run"
  assert run_tiny("run", workdir, INHERIT) == 0
  first = capsys.readouterr().out
  for stage in STAGES:
    assert f"[{stage}] running" in first
    assert cache.read_record(workdir, stage) is not None
  assert export.read_jsonl(workdir / "synthetic" / "synthetic.jsonl")  # something to compare downstream
  report = json.loads((workdir / "downstream" / "report.json").read_text())
  assert list(report["sets"]) == ["seed only", "seed + EDA", "seed + MSP"] and report["test_examples"] == 25
  assert "seed + MSP" in first and "intent F1" in first
  assert (workdir / "synthetic" / "synthetic.jsonl").is_file()
  assert (workdir / "synthetic" / "synthetic.tfrecord").is_file()
  metrics = json.loads((workdir / "synthetic" / "metrics.json").read_text())
  generated = GenerateSummary.from_json(cache.read_record(workdir, "generate").summary)
  assert metrics["generated"]["outputs"] == sum(generated.outcomes.values())
  # The records keep their JSON shape (earlier workdirs are read by this version and the other way round).
  on_disk = json.loads(cache.record_path(workdir, "denoise").read_text())
  assert list(on_disk) == ["stage", "fingerprint", "outputs", "summary", "seconds"]
  assert list(on_disk["summary"]) == ["kept", "metrics", "files", "metrics_file", "seqio_tasks"]
  assert list(on_disk["summary"]["files"]) == ["jsonl", "tfrecord", "seeds"]
  assert on_disk["summary"]["metrics"] == metrics
  assert run_tiny("run", workdir, INHERIT) == 0
  second = capsys.readouterr().out
  for stage in STAGES:
    assert f"[{stage}] already done" in second
  # More sampling settings change only generation and what follows.
  assert run_tiny("run", workdir, INHERIT, "--gin.msp.SamplingConfig.temperature=0.5") == 0
  third = capsys.readouterr().out
  assert "[train] already done" in third and "[generate] configuration" in third and "[denoise] configuration" in third
  assert "[downstream] configuration" in third
  # The downstream model's settings change only the downstream stage.
  assert run_tiny("run", workdir, INHERIT, "--gin.msp.SamplingConfig.temperature=0.5",
                  "--gin.msp.downstream_evaluation.repeats=2") == 0
  fourth = capsys.readouterr().out
  assert "[denoise] already done" in fourth and "[downstream] configuration" in fourth
  # Sampling on bfloat16 weights (the AVX512-BF16 kernel where the CPU has it) is a new generation.
  assert run_tiny("generate", workdir, INHERIT, "--gin.msp.SamplingConfig.temperature=0.5",
                  "--gin.msp.SamplingConfig.weights_dtype='bfloat16'") == 0
  fifth = capsys.readouterr().out
  assert "[generate] configuration" in fifth
  assert sum(GenerateSummary.from_json(cache.read_record(workdir, "generate").summary).outcomes.values()) > 0


@pytest.fixture(scope="module")
def nothing_kept(tmp_path_factory):
  """(workdir, stdout) of `msp run` whose denoise stage kept nothing: it is handed no candidate at all."""
  from msp_jax.synthesis import denoising
  real_denoise = denoising.denoise
  workdir = tmp_path_factory.mktemp("nothing_kept") / "run"
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("MSP_HOME", str(workdir.parent / "msp_home"))
    patch.setattr(denoising, "denoise", lambda candidates, *args, **kwargs: real_denoise((), *args, **kwargs))
    with contextlib.redirect_stdout(io.StringIO()) as out:
      status = run_tiny("run", workdir)
  assert status == 0
  assert json.loads((workdir / "synthetic" / "metrics.json").read_text())["kept"]["count"] == 0
  return workdir, out.getvalue()


def test_msp_run_says_nothing_was_kept_and_skips_the_downstream_stage(nothing_kept):
  workdir, out = nothing_kept
  skipped = [line for line in out.splitlines() if line.startswith("[downstream]")]
  assert len(skipped) == 1
  said = re.fullmatch(r"\[downstream\] skipped: nothing was kept: the denoise stage kept 0 synthetic examples of "
                      r"(\d+) generated \(parse rate \d+%; see (.+)\), so seed \+ MSP would be seed only again",
                      skipped[0])
  assert said and int(said[1]) > 0 and said[2] == str(workdir / "synthetic" / "metrics.json"), skipped[0]
  assert "intent F1" not in out  # no comparison table
  assert cache.read_record(workdir, "downstream") is None and not (workdir / "downstream").exists()


def test_msp_downstream_refuses_a_run_that_kept_nothing(nothing_kept, capsys):
  workdir, _ = nothing_kept
  assert run_tiny("downstream", workdir) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: downstream: nothing was kept: the denoise stage kept 0 ")
  assert cache.read_record(workdir, "downstream") is None


def _denoised(kept: int, outputs: int) -> DenoiseSummary:
  return DenoiseSummary(kept=kept, metrics={"generated": {"outputs": outputs, "parse_rate": 0.25}},
                        files=SyntheticFiles("s.jsonl", "s.tfrecord", "seeds.jsonl"), metrics_file="w/metrics.json",
                        seqio_tasks=())


def _run_for_downstream(test_examples: int, unsupported: str | None = None):
  """What `stage_command.downstream_skip_reason` reads of a `workflow.Run`."""
  domain = types.SimpleNamespace(name="toy", splits={"train": ["e"] * 4, "test": ["e"] * test_examples})
  return types.SimpleNamespace(domain=domain, downstream_skip_reason=lambda: unsupported)


def test_downstream_runs_when_the_domain_is_scorable_and_something_was_kept():
  from msp_jax.commands import stage_command
  assert stage_command.downstream_skip_reason(_run_for_downstream(random.randint(1, 9)), _denoised(1, 3)) is None


def test_downstream_is_skipped_for_a_domain_without_test_examples():
  from msp_jax.commands import stage_command
  reason = stage_command.downstream_skip_reason(_run_for_downstream(0), _denoised(5, 6))
  assert reason == "domain 'toy' has no test examples to score on"


def test_downstream_skip_reasons_name_the_first_obstacle():
  from msp_jax.commands import stage_command
  outputs = random.randint(1, 99)
  assert stage_command.downstream_skip_reason(_run_for_downstream(0, "a 'ner' task"), _denoised(0, 1)) == "a 'ner' task"
  assert stage_command.downstream_skip_reason(_run_for_downstream(3), _denoised(0, outputs)) == (
      f"nothing was kept: the denoise stage kept 0 synthetic examples of {outputs} generated (parse rate 25%; see "
      "w/metrics.json), so seed + MSP would be seed only again")


def test_downstream_before_denoise_is_a_clear_error(tmp_path, capsys):
  assert run_tiny("downstream", tmp_path / "empty") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "no denoised synthetic set" in err[0] and "msp denoise" in err[0]


def test_generate_before_train_is_a_clear_error(tmp_path, capsys):
  assert run_tiny("generate", tmp_path / "empty") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "no trained prompts" in err[0] and "msp train" in err[0]


def test_target_count_zero_is_a_clear_error(tmp_path, capsys):
  assert run_tiny("run", tmp_path / "w", "--gin.msp.GenerationSettings.target_count=0") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "target_count=0" in err[0]


def test_unknown_requested_attribute_is_a_clear_error(tmp_path, capsys):
  code = run_tiny("run", tmp_path / "w", "--gin.msp.GenerationSettings.combinations=[['book_room', 'sauna']]")
  assert code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "'sauna'" in err[0] and "front_desk" in err[0]
  assert not (tmp_path / "w" / "checkpoints").exists()  # Refused before any training.


def test_prompt_checkpoint_from_another_backbone_or_ontology_is_refused(tmp_path, capsys):
  workdir = tmp_path / "w"
  assert run_tiny("train", workdir) == 0
  capsys.readouterr()
  assert run_tiny("generate", workdir, "--gin.msp.experiment.backbone='random:t5-tiny'") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "backbone" in err[0] and "random:llama-tiny" in err[0]

  import tasks
  other = tmp_path / "other"
  other.mkdir()
  rows = [{"text": f"turn on the light {i}", "intents": ["lights_on"], "spans": []} for i in range(4)]
  (other / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  tasks.register_domain("lights_toy", train=other / "train.jsonl", overwrite=True)
  assert run_tiny("generate", workdir, "--gin.msp.experiment.task='lights_toy'") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "ontology" in err[0]


# --------------------------------------------------------------------------------------------- denoise


def _reworded(seed: Example, i: int) -> Example:
  return Example(uid=f"synthetic/{seed.uid}/{i}", domain=seed.domain, text=f"please, {seed.text.lower()}",
                 intents=seed.intents, spans=tuple(
                     type(s)(start=s.start + 8, end=s.end + 8, label=s.label, text=s.text.lower())
                     for s in seed.spans))


def test_denoise_stage_exports_scores_and_registers_a_seqio_mixture(tmp_path, capsys, msp_home):
  import seqio

  workdir = tmp_path / "w"
  assert run_tiny("train", workdir) == 0
  run = tiny_run(workdir)
  config = run.config
  seeds = run.setup.seeds[:5]
  candidates = [generation.Candidate(_reworded(s, i), s.uid, s.attributes, False, "raw")
                for s in seeds for i in range(2)]
  out = workdir / "generated"
  generation.write_candidates(out / "candidates.jsonl", candidates)
  (out / "plan.json").write_text(json.dumps({"keep_per_seed": {s.uid: 1 for s in seeds},
                                             "prompt_checkpoint": "ckpt", "requests": 5, "novel_requests": 0}))
  generated = GenerateSummary(generated=10, candidates=10, dropped={}, outcomes={"ok": 10}, novel_generated=0,
                              novel_candidates=0, prompt_checkpoint="ckpt")
  cache.write_record(workdir, "generate", config.generate_fingerprint(), [out / "candidates.jsonl"],
                     generated.to_json(), 0.0)
  from msp_jax.commands import stage_command
  summary = run.denoise(publish=stage_command.publish_synthetic)
  kept = export.read_jsonl(workdir / "synthetic" / "synthetic.jsonl")
  # One per seed (the quotas), then the best over quota fills up to target_count=6.
  assert len(kept) == 6 and {r.seed_uid for r in kept} == {s.uid for s in seeds}
  assert summary.metrics["denoise"]["filled_over_quota"] == 1
  assert kept == export.read_tfrecord(workdir / "synthetic" / "synthetic.tfrecord")
  assert all(r.provenance == {"backbone": "random:llama-tiny", "prompt_checkpoint": "ckpt", "seed": 0}
             for r in kept)
  metrics = summary.metrics
  assert metrics["kept"]["parse_rate"] == 1.0 and metrics["kept"]["attribute_agreement"] == 1.0
  assert metrics["distinct_equal_size"]["sample_size"] == 6
  assert set(metrics["distinct_equal_size"]["synthetic"]) == {"distinct_1", "distinct_2", "distinct_3"}
  assert metrics["kept"]["perplexity"] > 1

  name = config.synthetic_task_name
  assert name in summary.seqio_tasks and f"{name}_mixture" in summary.seqio_tasks
  def texts_of(task_or_mixture: str) -> list[str]:
    provider = seqio.get_mixture_or_task(task_or_mixture)
    vocabulary = provider.output_features["inputs"].vocabulary
    rows = provider.get_dataset({"inputs": 64, "targets": 64}, split="train", shuffle=False, num_epochs=1)
    return [vocabulary.decode([int(t) for t in r["inputs"] if t != vocabulary.eos_id])
            for r in rows.as_numpy_iterator()]

  synthetic_texts = sorted(r.example.text for r in kept)
  seed_texts = sorted(s.text for s in run.setup.seeds)
  assert sorted(texts_of(f"{name}_smollm2")) == synthetic_texts
  assert sorted(texts_of(f"{name}_seeds_smollm2")) == seed_texts
  mixed = texts_of(f"{name}_mixture_smollm2")  # sampled by size until one side runs out
  assert set(mixed) <= set(synthetic_texts) | set(seed_texts)
  assert set(mixed) & set(synthetic_texts) and set(mixed) & set(seed_texts)
  pointer = json.loads((msp_home / "synthetic" / f"{name}.json").read_text())
  assert pathlib.Path(pointer["records"]) == (workdir / "synthetic" / "synthetic.jsonl").resolve()


def test_drop_label_noise_leaves_noisy_candidates_out_counts_them_and_is_its_own_denoising(tmp_path):
  import dataclasses
  from msp_jax.run import workflow

  workdir = tmp_path / "w"
  run = tiny_run(workdir)
  seeds = run.setup.seeds[:4]
  clean = [generation.Candidate(_reworded(s, 0), s.uid, s.attributes, False, "raw") for s in seeds]
  leaky = [generation.Candidate(dataclasses.replace(_reworded(s, 1), uid=f"leak/{s.uid}",
                                                    text=_reworded(s, 1).text + " // intents: booking"),
                                s.uid, s.attributes, False, "raw") for s in seeds[:3]]
  out = workdir / "generated"
  generation.write_candidates(out / "candidates.jsonl", clean + leaky)
  (out / "plan.json").write_text(json.dumps({"keep_per_seed": {s.uid: 2 for s in seeds},
                                             "prompt_checkpoint": "ckpt", "requests": 4, "novel_requests": 0}))
  config = dataclasses.replace(run.config, drop_label_noise=True)
  candidates, _, result = workflow.Run(config, show_progress=False, report=lambda m: None).denoise_result()
  assert [c.example.uid for c in candidates] == [c.example.uid for c in clean]
  assert not any("intents:" in c.example.text for c in result.kept) and result.kept
  assert result.summary["dropped"]["label_noise"] == 3 and result.summary["candidates"] == 7
  _, _, plain = run.denoise_result()  # the default keeps them in the running
  assert "label_noise" not in plain.summary["dropped"] and plain.summary["candidates"] == 7
  assert any("intents:" in c.example.text for c in plain.kept)
  assert config.denoise_fingerprint() != run.config.denoise_fingerprint()
  assert config.generate_fingerprint() == run.config.generate_fingerprint()


@pytest.mark.parametrize("task,validation,scores", [
    ("crossner_music", "validation", ("entity F1",)),
    ("topv2_weather", "fewshot_validation", ("exact match", "intent acc.", "slot F1"))])
def test_msp_run_on_ner_and_parse_domains_ends_with_a_downstream_table(tmp_path, capsys, data_dir, task, validation,
                                                                        scores):
  workdir = tmp_path / task
  assert run_tiny("run", workdir, f"--gin.msp.experiment.task='{task}'", f"--gin.msp.experiment.data_dir='{data_dir}'",
                  "--gin.msp.experiment.few_shot=True", f"--gin.msp.downstream_evaluation.validation_split='{validation}'", "--gin.msp.GenerationSettings.target_count=2",
                  "--gin.msp.downstream_evaluation.max_test_examples=12",
                  "--gin.msp.TaskModelConfig.batch_size=32",
                  # Constrained: the random backbone's samples parse only when the grammar writes their labels.
                  "--gin.msp.SamplingConfig.constrained=True", "--gin.msp.SamplingConfig.max_new_tokens=64") == 0
  out = capsys.readouterr().out
  assert "downstream task model" in out, out
  table = out[out.index("downstream task model"):].splitlines()
  assert all(title in table[1] for title in scores), table[1]
  assert [line.split()[:2] for line in table[2:5]] == [["seed", "only"], ["seed", "+"], ["seed", "+"]]
  report = json.loads((workdir / "downstream" / "report.json").read_text())
  assert report["model_kind"] == "fine_tuned" and report["test_examples"] == 12
  for row in report["sets"].values():
    run = row["runs"][0]
    rows = predictions.read(workdir / "downstream" / run["predictions"])
    assert len(rows) == 12 and predictions.score_rows(rows, report["task"]) == run["scores"]
  if task == "topv2_weather":
    assert "exact-match ceiling" in out and report["ceiling"]["parses"] == 12
