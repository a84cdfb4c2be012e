"""`msp train` with bad input: one line `error: ...` naming the offending field, exit status 2, no traceback.

Runs in-process through `msp_jax.cli.main` on the shipped front_desk domain with a tiny random backbone and
1-2 steps; one case runs the real `msp` entry point in a subprocess to see exactly what a user sees.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from msp_jax import cli

TINY = ["--gin_file", "runs/quickstart.gin", "--gin.msp.experiment.backbone='random:llama-tiny'",
        "--gin.msp.TrainConfig.steps=1", "--gin.msp.TrainConfig.batch_size=2",
        "--gin.msp.experiment.max_dev_examples=2", "--quiet"]


def _train(capsys, workdir, *bindings: str) -> tuple[int, str]:
  """Runs `msp train`; returns (exit status, the one stderr line), asserting stderr is exactly that line."""
  capsys.readouterr()
  status = cli.main(["train", *TINY, "--workdir", str(workdir), *bindings])
  err = capsys.readouterr().err
  if status == 0:
    return status, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  return status, lines[0]


@pytest.mark.parametrize("binding,expected", [
    ("--gin.msp.MixtureConfig.mixer='sum'",
     r"error: MixtureConfig: unknown mixer 'sum'; valid mixers: concat, pooling, attention, bottleneck, cnn"),
    ("--gin.msp.MixtureConfig.prefix_length=0",
     r"error: MixtureConfig.prefix_length=0: the instruction prefix needs at least 1 soft token"),
    ("--gin.msp.MixtureConfig.attribute_length=0",
     r"error: MixtureConfig.attribute_length=0: an attribute prompt needs at least 1 soft token"),
    ("--gin.msp.MixtureConfig.mixer_options=(('hidden',3),)",
     r"error: MixtureConfig: mixer 'attention' has no option\(s\) \['hidden'\]; its options: max_attributes, "
     r"temperature"),
    ("--gin.msp.TrainConfig.steps=0", r"error: steps=0 must be >= 1 \(in gin configurable TrainConfig\)"),
    ("--gin.msp.TrainConfig.steps='3'", r"error: gin binding TrainConfig.steps='3' must be int$"),
])
def test_bad_prompt_or_mixer_config_is_one_line_naming_the_field(capsys, tmp_path, binding, expected):
  status, line = _train(capsys, tmp_path / "run", binding)
  assert status == 2
  assert re.match(expected, line), line
  assert not (tmp_path / "run").exists()  # refused before anything was loaded or written


def test_attribute_set_larger_than_the_mixer_maximum_names_the_example(capsys, tmp_path):
  status, line = _train(capsys, tmp_path / "run", "--gin.msp.MixtureConfig.max_attributes=1")
  assert status == 2
  assert line.startswith("error: example front_desk/")
  assert "more than the mixer maximum max_attributes=1; raise max_attributes" in line


def test_misspelled_binding_on_the_command_line_suggests_the_parameter(capsys, tmp_path):
  status, line = _train(capsys, tmp_path / "run", "--gin.msp.TrainConfig.stpes=3")
  assert status == 2
  assert ("error: gin configuration: Configurable 'msp.TrainConfig' doesn't have a parameter named 'stpes' "
          "(--gin binding: msp.TrainConfig.stpes = 3); did you mean 'steps'?") in line


def test_misspelled_binding_in_a_gin_file_names_the_file_and_line(capsys, tmp_path):
  gin_file = tmp_path / "typo.gin"
  gin_file.write_text("include 'runs/quickstart.gin'\nmsp.MixtureConfig.atribute_length = 4\n")
  status, line = _train(capsys, tmp_path / "run", "--gin_file", str(gin_file))
  assert status == 2
  assert f"(file {gin_file}, line 2: msp.MixtureConfig.atribute_length = 4); did you mean 'attribute_length'?" in line


def test_misspelled_configurable_suggests_the_registered_name(capsys, tmp_path):
  status, line = _train(capsys, tmp_path / "run", "--gin.msp.TrainConfg.steps=3")
  assert status == 2
  assert "No configurable matching 'msp.TrainConfg'" in line and "did you mean 'msp.TrainConfig'?" in line


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  """A workdir holding a 1-step checkpoint of attention prompts on random:llama-tiny."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  assert cli.main(["train", *TINY, "--workdir", str(workdir)]) == 0
  return workdir


@pytest.mark.parametrize("binding,field,was,now", [
    ("--gin.msp.MixtureConfig.mixer='pooling'", "mixer", "'attention'", "'pooling'"),
    ("--gin.msp.experiment.backbone='random:t5-tiny'", "backbone", "'random:llama-tiny'", "'random:t5-tiny'"),
])
def test_resuming_with_another_mixer_or_backbone_names_both_values(capsys, trained_workdir, binding, field, was,
                                                                    now):
  # quickstart.gin trains on a bfloat16 backbone, a Llama-only mode: a T5 run binds float32 (test below).
  status, line = _train(capsys, trained_workdir, "--gin.msp.TrainConfig.steps=2", binding,
                        "--gin.msp.TrainConfig.backbone_dtype='float32'")
  assert status == 2
  assert line == (f"error: {trained_workdir}/checkpoints/1: checkpoint was trained with {field}={was} but this "
                  f"run uses {field}={now}; use a matching checkpoint or a new workdir")


@pytest.mark.parametrize("binding", ["--gin.msp.MixtureConfig.grouping='kind'",
                                     "--gin.msp.TrainConfig.optimizer='adafactor'"])
def test_resuming_with_another_mixer_structure_or_optimizer_is_one_line(capsys, trained_workdir, binding):
  status, line = _train(capsys, trained_workdir, "--gin.msp.TrainConfig.steps=2", binding)
  assert status == 2
  assert "checkpoint was trained with" in line


def test_the_msp_command_prints_one_line_and_no_traceback(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "msp_jax.cli", "train", *TINY, "--workdir", str(tmp_path / "run"),
                         "--gin.msp.TrainConfig.stpes=3"], capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr and "oneDNN" not in proc.stderr  # TensorFlow's banner is kept off too.
  assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
  assert proc.stderr.startswith("error: gin configuration: Configurable 'msp.TrainConfig' doesn't have a "
                                "parameter named 'stpes'")


def test_a_bfloat16_backbone_on_t5_is_one_line_naming_the_fix(capsys, tmp_path):
  status, line = _train(capsys, tmp_path / "t5", "--gin.msp.TrainConfig.steps=1",
                        "--gin.msp.experiment.backbone='random:t5-tiny'")
  assert status == 2
  assert line == ("error: TrainConfig.backbone_dtype='bfloat16' is for Llama-family backbones; random:t5-tiny is an "
                  "encoder-decoder and trains in float32: bind msp.TrainConfig.backbone_dtype = 'float32'")
