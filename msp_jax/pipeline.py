"""The stages of an MSP run as plain functions of plain arguments (gin binds them in `msp_jax/commands`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import Any

import jax

from msp_jax import checkpointing, training
from msp_jax.backbones import load_backbone
from msp_jax.data import catalog, fewshot, serialization
from msp_jax.data.schema import DomainData, Example
from msp_jax.model_inputs import InputShapes, fixed_batches, make_batch_fn
from msp_jax.msp_model import MixtureConfig, MspModel
from msp_jax.partitioning import make_mesh, shard_params

log = logging.getLogger(__name__)


def load_domain(task: str, data_dir: str | os.PathLike | None = None) -> DomainData:
  """Benchmark or registered domain by task name (importing `tasks` registers the custom ones)."""
  import tasks  # noqa: F401  Registers custom domains (the shipped example and `msp register`ed ones).

  return catalog.load_task_data(task, data_dir)


def seed_examples(domain: DomainData, few_shot: bool, k: int | None, seed: int) -> tuple[Example, ...]:
  """The training seed set: the paper's few-shot sample of the train split, or the whole train split."""
  if few_shot:
    return fewshot.few_shot(domain, k=k, seed=seed)
  return domain.splits["train"]


def manifest_for(backbone_spec: str, embed_dim: int, domain: DomainData, mixture: MixtureConfig,
                 shapes: InputShapes) -> dict:
  """What a prompt checkpoint must agree on with the run restoring it (see checkpointing.IDENTITY_FIELDS)."""
  return {
      "backbone": backbone_spec, "embed_dim": embed_dim, "task": domain.name,
      "task_kind": domain.ontology.task, "ontology": list(domain.ontology.names), "mixer": mixture.mixer,
      "prefix_length": mixture.prefix_length, "attribute_length": mixture.attribute_length,
      "max_attributes": mixture.max_attributes, "mixture": dataclasses.asdict(mixture),
      "shapes": dataclasses.asdict(shapes),
  }


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every stage of a run shares: the domain, its seed set, the frozen backbone and the prompt model."""

  domain: DomainData
  seeds: tuple[Example, ...]
  backbone_spec: str
  model: MspModel
  shapes: InputShapes  # padded sizes, max_attributes taken from the mixture
  manifest: dict  # the identity a prompt checkpoint of this run must carry (checkpointing.IDENTITY_FIELDS)

  @property
  def frozen_params(self) -> Any:
    return self.model.backbone.params


def setup(*, backbone: str, task: str, data_dir: str | None = None, few_shot: bool = True,
          few_shot_k: int | None = None, mixture: MixtureConfig = MixtureConfig(),
          shapes: InputShapes = InputShapes(), seed: int = 0) -> Setup:
  """Loads the domain, draws its seed set and binds fresh soft prompts to the frozen backbone."""
  shapes = dataclasses.replace(shapes, max_attributes=mixture.max_attributes)  # One source of truth.
  domain = load_domain(task, data_dir)
  seeds = tuple(seed_examples(domain, few_shot, few_shot_k, seed))
  bb = load_backbone(backbone).backbone
  model = MspModel(bb, domain.ontology, mixture)
  return Setup(domain, seeds, backbone, model, shapes,
               manifest_for(backbone, bb.embed_dim, domain, mixture, shapes))


def train_prompts(*, workdir: str | os.PathLike, backbone: str, task: str, data_dir: str | None = None,
                  few_shot: bool = True, few_shot_k: int | None = None, mixture: MixtureConfig = MixtureConfig(),
                  shapes: InputShapes = InputShapes(), config: training.TrainConfig = training.TrainConfig(),
                  max_dev_examples: int = 64, num_model: int = 1, show_progress: bool = True,
                  stop_after: int | None = None, prepared: Setup | None = None) -> training.TrainResult:
  """Tunes soft prompts + mixer for `task` against the frozen `backbone`; checkpoints under `workdir`.

  `prepared` reuses an already loaded `setup(...)` of the same arguments (so `msp run` loads the model once).
  """
  run = prepared or setup(backbone=backbone, task=task, data_dir=data_dir, few_shot=few_shot,
                          few_shot_k=few_shot_k, mixture=mixture, shapes=shapes, seed=config.seed)
  shapes = run.shapes
  domain, seeds, model = run.domain, run.seeds, run.model
  dev = domain.splits.get("validation", ())[:max_dev_examples]
  tok = model.backbone.tokenizer
  serialize = lambda e: serialization.serialize(e, domain.ontology.task)  # noqa: E731
  common = dict(exemplar_pool=seeds, ontology=domain.ontology, serialize=serialize, encode=tok.encode,
                eos_id=tok.eos_id, pad_id=tok.pad_id, shapes=shapes, batch_size=config.batch_size)
  batch_at = make_batch_fn(seeds, seed=config.seed, **common)
  dev_batches = fixed_batches(dev, **common)
  frozen = run.frozen_params
  mesh = None
  if jax.device_count() > 1 or num_model > 1:
    mesh = make_mesh(num_model)
    frozen = shard_params(frozen, model.backbone.param_axes(), mesh)
  log.info("training %s prompts on %d seed examples (%d dev) of %s against %s", mixture.mixer, len(seeds),
           len(dev), task, backbone)
  return training.train(model, frozen, batch_at, dev_batches, config, pathlib.Path(workdir), run.manifest,
                        mesh=mesh, show_progress=show_progress, stop_after=stop_after)


def prompt_checkpoint_dir(workdir: str | os.PathLike) -> pathlib.Path:
  """Where `train_prompts` keeps the best prompts by dev loss (the exported prompt checkpoint)."""
  return pathlib.Path(workdir) / "best"


def load_prompts(run: Setup, checkpoint_dir: str | os.PathLike) -> tuple[Any, dict, pathlib.Path]:
  """(soft params, manifest, step folder) of a prompt checkpoint; refused if trained for another backbone,
  ontology or mixer (`checkpointing.check_manifest` names the field)."""
  checkpoint_dir = pathlib.Path(checkpoint_dir)
  like = run.model.init(jax.random.PRNGKey(0), run.frozen_params)  # the tree to restore into
  restored, manifest = checkpointing.restore_exported(checkpoint_dir, {"params": like}, run.manifest)
  return restored["params"], manifest, checkpoint_dir / str(manifest["step"])
