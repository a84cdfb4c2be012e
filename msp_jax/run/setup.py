"""What every stage of a run shares, loaded once: the domain, its seed set, the frozen backbone and the prompt
model (`Setup`); prompt training and restoring on top of it. Plain arguments throughout: gin binds them in
`msp_jax/commands`."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import Any

import jax

from msp_jax.backbones import load_backbone
from msp_jax.backbones.base import Backbone
from msp_jax.data import catalog, fewshot, serialization
from msp_jax.data.schema import DomainData, Example
from msp_jax.partitioning import make_mesh, shard_params
from msp_jax.tuning import checkpointing, training
from msp_jax.tuning.model_inputs import InputShapes, fixed_batches, make_batch_fn
from msp_jax.tuning.msp_model import MixtureConfig, MspModel

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Where a run writes, on what backbone and data it runs, and how devices are split (gin: `msp.experiment`)."""

  workdir: str = "msp_runs/quickstart"
  backbone: str = "smollm2-135m"  # a name, a checkpoint path or 'random:<preset>' (`load_backbone`)
  task: str = "front_desk"        # a task name of `msp_jax.data.catalog`
  data_dir: str | None = None     # benchmark files; default $MSP_DATA_DIR
  few_shot: bool = True           # seed set: the paper's few-shot sample of train (else all of train)
  few_shot_k: int | None = None   # few-shot size; None: the dataset's default (`fewshot.default_k`)
  max_dev_examples: int = 64      # validation examples the dev loss is measured on
  num_model: int = 1              # devices per model replica (the 'model' mesh axis)


def seed_examples(domain: DomainData, few_shot: bool, k: int | None, seed: int) -> tuple[Example, ...]:
  """The training seed set: the paper's few-shot sample of the train split, or the whole train split."""
  if few_shot:
    return tuple(fewshot.few_shot(domain, k=k, seed=seed))
  return tuple(domain.splits["train"])


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


def load_setup(experiment: Experiment, *, mixture: MixtureConfig, shapes: InputShapes, seed: int,
               domain: DomainData | None = None, backbone: Backbone | None = None) -> Setup:
  """Loads the domain and the frozen backbone `experiment.backbone` (unless given: runs in one process share
  them), draws its seed set with `seed` and binds fresh soft prompts to the frozen backbone."""
  shapes = dataclasses.replace(shapes, max_attributes=mixture.max_attributes)  # One source of truth.
  domain = domain or catalog.load_task_data(experiment.task, experiment.data_dir)
  seeds = seed_examples(domain, experiment.few_shot, experiment.few_shot_k, seed)
  backbone = backbone or load_backbone(experiment.backbone).backbone
  model = MspModel(backbone, domain.ontology, mixture)
  return Setup(domain, seeds, experiment.backbone, model, shapes,
               manifest_for(experiment.backbone, backbone.embed_dim, domain, mixture, shapes))


def train_prompts(setup: Setup, *, workdir: str | os.PathLike, config: training.TrainConfig,
                  max_dev_examples: int = 64, num_model: int = 1, show_progress: bool = True,
                  stop_after: int | None = None) -> training.TrainResult:
  """Tunes the setup's soft prompts + mixer on its seed set against the frozen backbone; checkpoints under
  `workdir` (resuming the newest checkpoint there).

  Args:
    setup: the run's `Setup` (its seed set drawn with `config.seed`).
    workdir: where `training.train` keeps checkpoints and the best prompts (`prompt_checkpoint_dir`).
    config: steps, optimiser, batch size, seed of the batch order.
    max_dev_examples: validation examples the dev loss is measured on.
    num_model: devices per model replica; the frozen backbone is sharded when there is more than one device.
    show_progress: a progress bar on the terminal.
    stop_after: stop after this many steps of this call (tests of resuming).
  """
  domain, seeds, model = setup.domain, setup.seeds, setup.model
  dev = domain.splits.get("validation", ())[:max_dev_examples]
  tok = model.backbone.tokenizer
  serialize = lambda e: serialization.serialize(e, domain.ontology.task)  # noqa: E731
  common = dict(exemplar_pool=seeds, ontology=domain.ontology, serialize=serialize, encode=tok.encode,
                eos_id=tok.eos_id, pad_id=tok.pad_id, shapes=setup.shapes, batch_size=config.batch_size)
  batch_at = make_batch_fn(seeds, seed=config.seed, **common)
  dev_batches = fixed_batches(dev, **common)
  frozen = training.frozen_training_params(model.backbone, setup.frozen_params, config.backbone_dtype)
  mesh = None
  if jax.device_count() > 1 or num_model > 1:
    mesh = make_mesh(num_model)
    frozen = shard_params(frozen, model.backbone.param_axes(), mesh)
  log.info("training %s prompts on %d seed examples (%d dev) of %s against %s", model.config.mixer, len(seeds),
           len(dev), domain.name, setup.backbone_spec)
  return training.train(model, frozen, batch_at, dev_batches, config, pathlib.Path(workdir), setup.manifest,
                        mesh=mesh, show_progress=show_progress, stop_after=stop_after)


def prompt_checkpoint_dir(workdir: str | os.PathLike) -> pathlib.Path:
  """Where `train_prompts` keeps the best prompts by dev loss (the exported prompt checkpoint)."""
  return pathlib.Path(workdir) / "best"


def load_prompts(setup: Setup, checkpoint_dir: str | os.PathLike) -> tuple[Any, dict, pathlib.Path]:
  """(soft params, manifest, step folder) of a prompt checkpoint; refused if trained for another backbone,
  ontology or mixer (`checkpointing.check_manifest` names the field)."""
  checkpoint_dir = pathlib.Path(checkpoint_dir)
  like = setup.model.init(jax.random.PRNGKey(0), setup.frozen_params)  # the tree to restore into
  restored, manifest = checkpointing.restore_exported(checkpoint_dir, {"params": like}, setup.manifest)
  return restored["params"], manifest, checkpoint_dir / str(manifest["step"])
