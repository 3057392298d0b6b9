"""The frozen teacher's batch-norm statistics for the images it explains during TEA training.

The teacher bundle re-estimates its classifier's statistics on *un-augmented* training images
(what validation and test images look like). During TEA the frozen teacher runs in eval mode on
*augmented* training images (random shift, rotation with black fill, flip), whose statistics
differ: on the 64-px demo phantoms the seed-0 teacher classified them with accuracy 0.55 against
0.90 un-augmented, so much of what the student was asked to imitate was the explanation of a
class the teacher got wrong. Re-estimated on the augmented, masked training images, the same
teacher reached 0.89 on them (docs/method.md, section 6).

:class:`TeacherTrainingStatistics` keeps both sets: the training steps explain with statistics
of the training chain, every validation with the checkpoint's own.
"""

from __future__ import annotations

import copy

import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.transforms import Randomizable
from torch import nn

from tea_med.engines.distributed import broadcast_buffers
from tea_med.engines.recalibration import recalibrate_batchnorm
from tea_med.networks.teacher import teacher_classifier

__all__ = ["TEACHER_STATISTICS", "TeacherTrainingStatistics"]

#: the student bundle's ``teacher_statistics`` values
TEACHER_STATISTICS = ("checkpoint", "training")

_Snapshot = dict[str, torch.Tensor]
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class TeacherTrainingStatistics:
    """Trainer handler: the teacher's classifier explains training batches with batch-norm
    statistics re-estimated on the training chain, and validations with the checkpoint's.

    When the trainer starts, the statistics are estimated once over ``dataset`` (its records
    through a copy of its transform chain, seeded with ``seed``, on a loader with a generator of
    its own): no random state of the run moves, so a resumed run estimates the same statistics.
    Before each training iteration the teacher holds them; when ``validator`` starts, and when
    training completes, it holds the checkpoint's statistics again.

    Args:
        teacher: the frozen teacher (a :class:`~tea_med.networks.TeacherPipeline`, whose
            classifier is re-estimated on its masked images, or a plain classifier).
        dataset: the student's training dataset (a MONAI ``Dataset`` with ``data`` and
            ``transform``, the augmentation included).
        validator: the evaluator whose runs must see the checkpoint's statistics.
        statistics: ``"training"`` (the above) or ``"checkpoint"`` (attach nothing).
        batch_size: images per estimation batch.
        seed: seeds the copied transforms and the loader.
        max_images: at most this many images (``None``: the whole dataset once).
    """

    def __init__(
        self,
        teacher: nn.Module,
        dataset: Dataset,
        validator: Engine | None = None,
        statistics: str = "training",
        batch_size: int = 32,
        seed: int = 0,
        max_images: int | None = None,
    ) -> None:
        if statistics not in TEACHER_STATISTICS:
            raise ValueError(f"teacher_statistics must be one of {TEACHER_STATISTICS}, got {statistics!r}")
        self.teacher = teacher
        self.classifier = teacher_classifier(teacher)
        self.dataset = dataset
        self.validator = validator
        self.enabled = statistics == "training"
        self.batch_size = batch_size
        self.seed = seed
        self.max_images = max_images
        self.checkpoint: _Snapshot | None = None
        self.training: _Snapshot | None = None
        self.holds_training = False

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self.estimate)
        engine.add_event_handler(Events.ITERATION_STARTED, self.use_training)
        engine.add_event_handler(Events.COMPLETED, self.use_checkpoint)
        if self.validator is not None:
            self.validator.add_event_handler(Events.STARTED, self.use_checkpoint)

    def _snapshot(self) -> _Snapshot:
        """The classifier's batch-norm buffers (running mean and variance, batch count)."""
        return {k: v.clone() for k, v in self.classifier.state_dict().items() if k.endswith(_BN_BUFFERS)}

    def _load(self, snapshot: _Snapshot) -> None:
        self.classifier.load_state_dict(snapshot, strict=False)

    def estimate(self, engine: Engine | None = None) -> None:
        """Re-estimate the training statistics (keeping the checkpoint's); the teacher then
        holds the training ones."""
        if any(p.requires_grad for p in self.classifier.parameters()):
            raise ValueError(
                "teacher_statistics 'training' needs a frozen teacher: the co-trained teacher "
                "(warmup_epochs > 0) keeps its own batch-norm statistics; use 'checkpoint'"
            )
        if self.checkpoint is None:
            self.checkpoint = self._snapshot()
        else:
            self._load(self.checkpoint)
        transform = copy.deepcopy(self.dataset.transform)
        if isinstance(transform, Randomizable):
            transform.set_random_state(seed=self.seed)
        loader = DataLoader(
            Dataset(list(self.dataset.data), transform),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=0,
            generator=torch.Generator().manual_seed(self.seed),
        )
        with torch.random.fork_rng(devices=[]):
            recalibrate_batchnorm(self.classifier, loader, self.teacher, max_images=self.max_images)
        broadcast_buffers(self.classifier)
        self.training = self._snapshot()
        self.holds_training = True

    def use_training(self, engine: Engine | None = None) -> None:
        """The training statistics, unless the teacher holds them already."""
        if not self.holds_training and self.training is not None:
            self._load(self.training)
            self.holds_training = True

    def use_checkpoint(self, engine: Engine | None = None) -> None:
        """The checkpoint's statistics (validation, and after training)."""
        if self.holds_training and self.checkpoint is not None:
            self._load(self.checkpoint)
            self.holds_training = False
