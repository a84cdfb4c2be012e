"""`msp run` / `msp generate` / `msp denoise`: stage caching, export, SeqIO registration and bad input.

The backbone is the tiny random Llama (it cannot write parseable examples, so generation keeps nothing);
the denoise stage is also run on hand-made candidates (reworded seed examples) to check what it writes.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from msp_jax import cli, export, generation, stages
from msp_jax.data.schema import Example

TINY = ["--gin_file", "runs/quickstart.gin", "--quiet",
        "--gin.msp.experiment.backbone='random:llama-tiny'",
        "--gin.msp.TrainConfig.steps=2", "--gin.msp.TrainConfig.eval_every=2",
        "--gin.msp.MixtureConfig.prefix_length=2", "--gin.msp.MixtureConfig.attribute_length=2",
        "--gin.msp.InputShapes.max_text_len=48", "--gin.msp.InputShapes.max_target_len=24",
        "--gin.msp.synthesis.settings=@msp.GenerationSettings()",
        "--gin.msp.GenerationSettings.target_count=6",
        "--gin.msp.SamplingConfig.max_new_tokens=8", "--gin.msp.GenerationSettings.sampling=@msp.SamplingConfig()"]


@pytest.fixture(autouse=True)
def msp_home(tmp_path, monkeypatch):
  home = tmp_path / "msp_home"
  monkeypatch.setenv("MSP_HOME", str(home))
  return home


def run_tiny(command: str, workdir: pathlib.Path, *extra: str) -> int:
  return cli.main([command, *TINY, "--workdir", str(workdir), *extra])


def tiny_run(workdir: pathlib.Path):
  """The `workflow.Run` that `msp run` with the TINY flags builds, in-process."""
  from msp_jax.commands import stage_command
  from msp_jax.commands.gin_utils import split_gin_flags
  argv, bindings = split_gin_flags(["run", *TINY, "--workdir", str(workdir)])
  args = cli.build_parser().parse_args(argv)
  args.gin_bindings = list(args.gin_bindings) + bindings
  run = stage_command.make_run(args)
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
  first = stages.run_stage(tmp_path, "s", "fp1", compute, report=messages.append)
  again = stages.run_stage(tmp_path, "s", "fp1", compute, report=messages.append)
  assert len(calls) == 1 and again["summary"] == first["summary"] == {"n": 1}
  assert "skipping" in messages[-1]
  stages.run_stage(tmp_path, "s", "fp2", compute, report=messages.append)
  assert len(calls) == 2 and "changed" in messages[-2]
  output.unlink()
  stages.run_stage(tmp_path, "s", "fp2", compute, report=messages.append)
  assert len(calls) == 3
  stages.run_stage(tmp_path, "s", "fp2", compute, force=True, report=messages.append)
  assert len(calls) == 4


def test_failed_stage_leaves_no_record(tmp_path):
  def boom():
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    stages.run_stage(tmp_path, "s", "fp", boom, report=lambda m: None)
  assert stages.read_record(tmp_path, "s") is None


def test_corrupt_stage_record_is_a_clear_error(tmp_path):
  path = stages.record_path(tmp_path, "train")
  path.parent.mkdir(parents=True)
  path.write_text("{not json")
  with pytest.raises(Exception, match=r"train\.json:1: corrupt stage record"):
    stages.read_record(tmp_path, "train")


def test_fingerprint_is_stable_and_sensitive():
  from msp_jax.workflow import RunConfig
  from msp_jax.training import TrainConfig
  a, b = RunConfig(), RunConfig()
  assert a.generate_fingerprint() == b.generate_fingerprint()
  c = RunConfig(training=TrainConfig(steps=301))
  assert c.train_fingerprint() != a.train_fingerprint()
  assert c.denoise_fingerprint() != a.denoise_fingerprint()  # upstream changes propagate


# ------------------------------------------------------------------------------------------------- run


def test_msp_run_caches_every_stage(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert run_tiny("run", workdir) == 0
  first = capsys.readouterr().out
  for stage in ("train", "generate", "denoise", "downstream"):
    assert f"[{stage}] running" in first
    assert stages.read_record(workdir, stage) is not None
  report = json.loads((workdir / "downstream" / "report.json").read_text())
  assert list(report["sets"]) == ["seed only", "seed + EDA", "seed + MSP"] and report["test_examples"] == 25
  assert "seed + MSP" in first and "intent F1" in first
  assert (workdir / "synthetic" / "synthetic.jsonl").is_file()
  assert (workdir / "synthetic" / "synthetic.tfrecord").is_file()
  metrics = json.loads((workdir / "synthetic" / "metrics.json").read_text())
  assert metrics["generated"]["outputs"] == sum(
      stages.read_record(workdir, "generate")["summary"]["outcomes"].values())
  assert run_tiny("run", workdir) == 0
  second = capsys.readouterr().out
  for stage in ("train", "generate", "denoise", "downstream"):
    assert f"[{stage}] already done" in second
  # More sampling settings change only generation and what follows.
  assert run_tiny("run", workdir, "--gin.msp.SamplingConfig.temperature=0.5") == 0
  third = capsys.readouterr().out
  assert "[train] already done" in third and "[generate] configuration" in third and "[denoise] configuration" in third
  assert "[downstream] configuration" in third
  # The downstream model's settings change only the downstream stage.
  assert run_tiny("run", workdir, "--gin.msp.SamplingConfig.temperature=0.5",
                  "--gin.msp.downstream_evaluation.repeats=1") == 0
  fourth = capsys.readouterr().out
  assert "[denoise] already done" in fourth and "[downstream] configuration" in fourth


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
  stages.write_record(workdir, "generate", config.generate_fingerprint(), [out / "candidates.jsonl"],
                      {"outcomes": {"ok": 10}, "dropped": {}, "novel_generated": 0}, 0.0)
  record = run.denoise()
  kept = export.read_jsonl(workdir / "synthetic" / "synthetic.jsonl")
  # One per seed (the quotas), then the best over quota fills up to target_count=6.
  assert len(kept) == 6 and {r.seed_uid for r in kept} == {s.uid for s in seeds}
  assert record["summary"]["metrics"]["denoise"]["filled_over_quota"] == 1
  assert kept == export.read_tfrecord(workdir / "synthetic" / "synthetic.tfrecord")
  assert all(r.provenance == {"backbone": "random:llama-tiny", "prompt_checkpoint": "ckpt", "seed": 0}
             for r in kept)
  metrics = record["summary"]["metrics"]
  assert metrics["kept"]["parse_rate"] == 1.0 and metrics["kept"]["attribute_agreement"] == 1.0
  assert metrics["distinct_equal_size"]["sample_size"] == 6
  assert set(metrics["distinct_equal_size"]["synthetic"]) == {"distinct_1", "distinct_2", "distinct_3"}
  assert metrics["kept"]["perplexity"] > 1

  name = config.synthetic_task_name
  assert name in record["summary"]["seqio_tasks"] and f"{name}_mixture" in record["summary"]["seqio_tasks"]
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


def test_msp_run_skips_the_downstream_stage_for_a_task_it_has_no_model_for(tmp_path, capsys, data_dir):
  workdir = tmp_path / "ner"
  assert run_tiny("run", workdir, "--gin.msp.experiment.task='crossner_ai'",
                  f"--gin.msp.experiment.data_dir='{data_dir}'", "--gin.msp.GenerationSettings.target_count=2") == 0
  out = capsys.readouterr().out
  assert "[denoise] done" in out
  assert "[downstream] skipped: domain 'ai' is a 'ner' task" in out
  assert stages.read_record(workdir, "downstream") is None
