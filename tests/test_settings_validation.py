"""A run's settings reach it and are checked before its first stage.

- Every `--gin.msp.<Class>.<field>=VALUE` binding takes effect, with or without a gin file.
- A workdir that is a file or cannot be written is one line naming it, before any data or model is read.
- A setting no stage could run with is one line `error: ...` (exit 2) before any stage runs, so it never costs
  a finished stage (nor hours of training).

In-process through `msp_jax.cli.main`, on the shipped front_desk domain and the tiny random Llama.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pathlib
import random
import re
import subprocess
import sys

import pytest

import toy_domain
from msp_jax import cli
from msp_jax.commands import configurables, stage_command
from msp_jax.commands.gin_utils import split_gin_flags
from msp_jax.data import catalog
from msp_jax.data.schema import Example
from msp_jax.run import cache, workflow
from msp_jax.run.config import RunConfig
from msp_jax.run.summaries import GenerateSummary
from msp_jax.synthesis import generation

TINY = toy_domain.TINY_RUN_FLAGS
STAGE_COMMANDS = ["train", "generate", "denoise", "downstream", "run"]


@pytest.fixture(autouse=True)
def msp_home(tmp_path, monkeypatch):
  home = tmp_path / "msp_home"
  monkeypatch.setenv("MSP_HOME", str(home))
  return home


def _parsed_args(argv: list[str]):
  """The argparse namespace `msp` builds for `argv` (its --gin.NAME=VALUE flags folded in)."""
  argv, bindings = split_gin_flags(argv)
  args = cli.build_parser().parse_args(argv)
  args.gin_bindings = list(args.gin_bindings) + bindings
  return args


def _one_error_line(capsys) -> str:
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


def _instances(value, cls) -> list:
  """Every instance of `cls` inside a (nested) dataclass value."""
  if type(value) is cls:  # pylint: disable=unidiomatic-typecheck
    return [value]
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return [found for f in dataclasses.fields(value) for found in _instances(getattr(value, f.name), cls)]
  return []


def _other_value(default, rng: random.Random):
  """A value other than `default` that the config class accepts: sizes and counts grow, so they stay >= 1; a
  number grows by less than half again (a 0.5 threshold stays a probability, a 1.2 ratio stays >= 1)."""
  if isinstance(default, int):
    return default + rng.randint(1, 9)
  return round(default * rng.uniform(1.1, 1.9), 4) if default else round(rng.uniform(0.05, 0.5), 4)


# ----------------------------------------------------------------------------------------- bindings


@pytest.mark.parametrize("gin_files", [[], ["--gin_file", "runs/quickstart.gin"],
                                       ["--gin_file", "runs/nlupp_hotels.gin"]], ids=["no_file", "quickstart",
                                                                                     "nlupp_hotels"])
@pytest.mark.parametrize("config_class", configurables.CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_numeric_field_binding_of_a_config_class_reaches_the_run(config_class, gin_files):
  rng = random.Random()
  defaults = config_class()
  numeric = [f.name for f in dataclasses.fields(config_class)
             if type(getattr(defaults, f.name)) in (int, float)]  # pylint: disable=unidiomatic-typecheck
  assert numeric, config_class
  bound = {name: _other_value(getattr(defaults, name), rng) for name in numeric}
  flags = [f"--gin.msp.{config_class.__name__}.{name}={value!r}" for name, value in bound.items()]
  config = stage_command.run_config(_parsed_args(["train", *gin_files, *flags]))
  found = _instances(config, config_class)
  assert len(found) == 1, f"{config_class.__name__} appears {len(found)} times in RunConfig"
  assert {name: getattr(found[0], name) for name in numeric} == bound


@pytest.mark.parametrize("flag,read", [
    ("--gin.msp.synthesis.synthetic_task='hotel_extra'", lambda c: c.synthetic_task),
    ("--gin.msp.synthesis.fill_to_target=False", lambda c: c.fill_to_target),
    ("--gin.msp.downstream_evaluation.repeats=5", lambda c: c.downstream_repeats),
    ("--gin.msp.experiment.max_dev_examples=7", lambda c: c.experiment.max_dev_examples),
])
def test_group_parameters_bind_without_a_gin_file(flag, read):
  config = stage_command.run_config(_parsed_args(["run", flag]))
  assert repr(read(config)) == flag.split("=", 1)[1]


def test_nothing_bound_is_the_library_default_run():
  assert stage_command.run_config(_parsed_args(["run"])) == RunConfig()


def test_msp_train_without_a_gin_file_trains_the_bound_number_of_steps(tmp_path, capsys):
  steps = random.choice([2, 3])
  workdir = tmp_path / "run"
  status = cli.main(["train", "--quiet", "--workdir", str(workdir), "--gin.msp.experiment.backbone='random:llama-tiny'",
                     f"--gin.msp.TrainConfig.steps={steps}", "--gin.msp.TrainConfig.batch_size=2",
                     "--gin.msp.MixtureConfig.prefix_length=2", "--gin.msp.MixtureConfig.attribute_length=2",
                     "--gin.msp.InputShapes.max_text_len=48", "--gin.msp.InputShapes.max_target_len=24",
                     "--gin.msp.experiment.max_dev_examples=2"])
  assert status == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert summary["stage"] == "train" and summary["steps"] == steps
  assert max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == steps


# ------------------------------------------------------------------------------------------ workdir


@pytest.fixture
def nothing_loads(monkeypatch):
  """Reading the domain or the backbone fails the test: the check must come before both."""
  def loaded(*args, **kwargs):
    raise AssertionError("data or model loaded before the check that should refuse the command")
  monkeypatch.setattr(catalog, "load_task_data", loaded)
  monkeypatch.setattr("msp_jax.run.setup.load_backbone", loaded)


@pytest.mark.parametrize("command", STAGE_COMMANDS)
def test_a_workdir_that_is_a_file_is_one_line_before_anything_loads(command, tmp_path, capsys, nothing_loads):
  workdir = tmp_path / "run"
  workdir.write_text("not a folder")
  assert cli.main([command, *TINY, "--workdir", str(workdir)]) == 2
  assert _one_error_line(capsys) == f"error: --workdir {workdir} is a file; it must be a folder (created if missing)"


@pytest.mark.parametrize("command", STAGE_COMMANDS)
def test_a_workdir_on_a_read_only_file_system_is_one_line_before_anything_loads(command, tmp_path, capsys,
                                                                               monkeypatch, nothing_loads):
  # Root may write anywhere, so the read-only file system is simulated where the probe file is created.
  def read_only(self, *args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
  monkeypatch.setattr(pathlib.Path, "touch", read_only)
  workdir = tmp_path / "run"
  assert cli.main([command, *TINY, "--workdir", str(workdir)]) == 2
  assert _one_error_line(capsys) == f"error: --workdir {workdir}: cannot write in the folder (Read-only file system)"


def test_a_workdir_set_in_gin_is_named_by_its_setting(tmp_path, capsys, nothing_loads):
  blocker = tmp_path / "taken"
  blocker.write_text("")
  assert cli.main(["run", *TINY, f"--gin.msp.experiment.workdir='{blocker}/run'"]) == 2
  assert _one_error_line(capsys) == (f"error: msp.experiment.workdir {blocker}/run: cannot create the folder, "
                                     f"{blocker} is a file")


# ---------------------------------------------------------------------------- settings, before any stage


@pytest.mark.parametrize("flag,expected", [
    ("--gin.msp.synthesis.synthetic_task='two words'", r"synthetic_task: synthetic set name 'two words' is invalid"),
    ("--gin.msp.synthesis.synthetic_task='front_desk'",
     r"synthetic_task: task name 'front_desk' is the example domain shipped"),
    ("--gin.msp.SamplingConfig.temperature=0.0", r"SamplingConfig.temperature=0.0: expected a number > 0"),
    ("--gin.msp.SamplingConfig.top_p=1.5", r"SamplingConfig.top_p=1.5: expected a probability in \(0, 1\]"),
    ("--gin.msp.SamplingConfig.top_k=-1", r"SamplingConfig.top_k=-1: expected a whole number >= 0"),
    ("--gin.msp.SamplingConfig.max_new_tokens=0", r"SamplingConfig.max_new_tokens=0: expected a whole number >= 1"),
    ("--gin.msp.SamplingConfig.repetition_penalty=0.0", r"SamplingConfig.repetition_penalty=0.0: expected a number"),
    ("--gin.msp.SamplingConfig.batch_size=0", r"SamplingConfig.batch_size=0: expected a whole number >= 1"),
    ("--gin.msp.SamplingConfig.weights_dtype='float16'",
     r"SamplingConfig.weights_dtype='float16': expected one of 'float32', 'bfloat16'"),
    ("--gin.msp.InputShapes.max_target_len=0", r"InputShapes.max_target_len=0: expected a whole number >= 1"),
    ("--gin.msp.downstream_evaluation.repeats=0", r"downstream_evaluation.repeats=0: expected a whole number >= 1"),
    ("--gin.msp.experiment.max_dev_examples=-1", r"experiment.max_dev_examples=-1: expected a whole number >= 0"),
])
@pytest.mark.parametrize("command", ["run", "train"])
def test_a_bad_setting_is_one_line_before_any_data_model_or_stage(command, flag, expected, tmp_path, capsys,
                                                                  nothing_loads):
  workdir = tmp_path / "run"
  assert cli.main([command, *TINY, "--workdir", str(workdir), flag]) == 2
  assert re.match(f"error: {expected}", _one_error_line(capsys))
  assert not (workdir / "stages").exists() and not (workdir / "checkpoints").exists()


def test_more_model_replicas_than_devices_is_one_line_before_anything_loads(tmp_path, capsys, nothing_loads):
  import jax
  replicas = jax.device_count() + 1
  assert cli.main(["run", *TINY, "--workdir", str(tmp_path / "run"), f"--gin.msp.experiment.num_model={replicas}"]) == 2
  assert f"num_model={replicas} must be >= 1 and divide the device count" in _one_error_line(capsys)
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_batch_that_does_not_split_over_the_devices_is_one_line_before_training(tmp_path):
  # Four simulated CPU devices: a separate process, since JAX fixes its devices when it starts.
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  workdir = tmp_path / "run"
  proc = subprocess.run([sys.executable, "-m", "msp_jax.cli", "run", *TINY, "--workdir", str(workdir),
                         "--gin.msp.TrainConfig.batch_size=6"], capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: TrainConfig.batch_size=6 must be a multiple of the data-parallel size 4 (4 devices / "
      "experiment.num_model=1)"]
  assert not (workdir / "checkpoints").exists()


def test_a_requested_combination_the_mixer_cannot_hold_is_refused_before_training(tmp_path, capsys):
  ontology = catalog.load_task_data("front_desk").ontology
  # front_desk seeds carry at most 5 attributes, so max_attributes=5 trains; the request carries 6.
  combination = random.sample([a.name for a in ontology.attributes], 6)
  workdir = tmp_path / "run"
  assert cli.main(["run", *TINY, "--workdir", str(workdir), "--gin.msp.MixtureConfig.max_attributes=5",
                   f"--gin.msp.GenerationSettings.combinations=[{combination!r}]"]) == 2
  line = _one_error_line(capsys)
  assert line.startswith(f"error: generation request {sorted(combination)} (seed ")
  assert "has 6 attributes" in line and "more than the mixer maximum max_attributes=5" in line
  assert not (workdir / "stages").exists() and not (workdir / "checkpoints").exists()


def test_a_seed_the_mixer_cannot_hold_is_refused_before_the_backbone_loads(tmp_path, capsys, monkeypatch):
  def loaded(*args, **kwargs):
    raise AssertionError("backbone loaded before the seeds were checked")
  monkeypatch.setattr("msp_jax.run.setup.load_backbone", loaded)
  assert cli.main(["train", *TINY, "--workdir", str(tmp_path / "run"), "--gin.msp.MixtureConfig.max_attributes=1"]) == 2
  line = _one_error_line(capsys)
  assert line.startswith("error: example front_desk/") and "more than the mixer maximum max_attributes=1" in line


def test_a_sampling_budget_too_small_for_constrained_output_is_refused_before_training(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert cli.main(["run", *TINY, "--workdir", str(workdir), "--gin.msp.SamplingConfig.constrained=True",
                   "--gin.msp.SamplingConfig.max_new_tokens=3"]) == 2
  line = _one_error_line(capsys)
  assert line.startswith("error: generation request ") and "more than SamplingConfig.max_new_tokens=3" in line
  assert not (workdir / "stages").exists() and not (workdir / "checkpoints").exists()


def test_top_k_beyond_the_vocabulary_is_refused_before_training(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert cli.main(["run", *TINY, "--workdir", str(workdir), "--gin.msp.SamplingConfig.top_k=10000000"]) == 2
  assert re.match(r"error: SamplingConfig.top_k=10000000: expected at most the backbone's vocabulary size \d+",
                  _one_error_line(capsys))
  assert not (workdir / "checkpoints").exists()


def test_a_bad_synthetic_task_name_leaves_the_exported_set_untouched(tmp_path, capsys):
  """The denoise stage used to export (rewriting `synthetic/`) and only then refuse the name."""
  workdir = tmp_path / "run"
  bad = "--gin.msp.synthesis.synthetic_task='two words'"
  config = stage_command.run_config(_parsed_args(["denoise", *TINY, "--workdir", str(workdir), bad]))
  seeds = workflow.Run(config).setup.seeds[:3]
  # A finished generate stage (hand-made candidates: reworded seeds) and an earlier export to protect.
  candidates = [generation.Candidate(Example(uid=f"synthetic/{s.uid}/0", domain=s.domain, text=f"please {s.text}",
                                             intents=s.intents), s.uid, s.intents, False, "raw")
                for s in seeds]
  out = workdir / "generated"
  generation.write_candidates(out / "candidates.jsonl", candidates)
  (out / "plan.json").write_text(json.dumps({"keep_per_seed": {c.seed_uid: 1 for c in candidates},
                                             "prompt_checkpoint": "ckpt", "requests": 3, "novel_requests": 0}))
  generated = GenerateSummary(generated=len(candidates), candidates=len(candidates), dropped={},
                              outcomes={"ok": len(candidates)}, novel_generated=0, novel_candidates=0,
                              prompt_checkpoint="ckpt")
  cache.write_record(workdir, "generate", config.generate_fingerprint(), [out / "candidates.jsonl"],
                     generated.to_json(), 0.0)
  earlier = workdir / "synthetic" / "synthetic.jsonl"
  earlier.parent.mkdir()
  earlier.write_text('{"an": "earlier export"}\n')
  capsys.readouterr()
  assert cli.main(["denoise", *TINY, "--workdir", str(workdir), bad]) == 2
  assert _one_error_line(capsys).startswith("error: synthetic_task: synthetic set name 'two words' is invalid")
  assert earlier.read_text() == '{"an": "earlier export"}\n'
  assert sorted(p.name for p in earlier.parent.iterdir()) == ["synthetic.jsonl"]
