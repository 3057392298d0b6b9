"""The teacher's batch-norm statistics for training images: estimated on the training chain,
held during training iterations, swapped for the checkpoint's in every validation, and no
random state of the run moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import Dataset
from monai.transforms import Compose, Lambdad, RandFlipd
from torch import nn

from tea_med.engines import TeacherTrainingStatistics
from tea_med.engines.distributed import EVERY_RANK_HANDLERS
from tea_med.networks import TeacherPipeline


def make_teacher(background: str = "zero") -> TeacherPipeline:
    torch.manual_seed(0)
    seg = nn.Conv2d(3, 1, 1)  # lung = where the first channel is dark
    with torch.no_grad():
        seg.weight.zero_()
        seg.weight[0, 0] = -10.0
        seg.bias.fill_(5.0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    classifier = nn.Sequential(
        conv, nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    classifier[1].running_mean.fill_(-3.0)  # the checkpoint's statistics: recognisable values
    classifier[1].running_var.fill_(7.0)
    teacher = TeacherPipeline(seg, classifier, background=background).freeze_segmenter().eval()
    return teacher.requires_grad_(False)


def records(n: int = 12) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"image": rng.random((3, 8, 8), dtype=np.float32)} for _ in range(n)]


def chain(flip_prob: float = 0.0) -> Compose:
    """A 'training chain': a deterministic remapping (the 'augmentation' whose statistics differ
    from the un-augmented images) and a random flip, which must not draw from the run's state."""
    return Compose(
        [Lambdad("image", lambda x: 2.0 * x + 0.25), RandFlipd("image", prob=flip_prob, spatial_axis=1)]
    )


def run(teacher: TeacherPipeline, handler: TeacherTrainingStatistics, epochs: int = 2) -> dict[str, list]:
    seen: dict[str, list] = {"train": [], "validate": []}
    bn = teacher.classifier[1]
    validator = handler.validator
    assert validator is not None
    validator.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen["validate"].append(bn.running_mean.clone())
    )
    trainer = Engine(lambda e, b: seen["train"].append(bn.running_mean.clone()))
    handler.attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0, 1]))
    trainer.run([0, 1, 2], max_epochs=epochs)
    return seen


def test_training_iterations_see_the_training_chain_statistics_validations_the_checkpoint() -> None:
    teacher = make_teacher()
    data = records()
    handler = TeacherTrainingStatistics(
        teacher, Dataset(data, chain()), Engine(lambda e, b: None), batch_size=4
    )
    seen = run(teacher, handler)
    # expected by hand: the first conv over the masked, remapped images (black background)
    with torch.no_grad():
        x = torch.stack([2.0 * torch.from_numpy(r["image"]) + 0.25 for r in data])
        mask = (torch.sigmoid(x[:, :1] * -10.0 + 5.0) > 0.4).float()  # the pipeline's threshold 0.4
        expected = teacher.classifier[0](x * mask).mean((0, 2, 3))
    assert len(seen["train"]) == 6 and len(seen["validate"]) == 4
    for s in seen["train"]:
        torch.testing.assert_close(s, expected)
    for s in seen["validate"]:
        assert torch.equal(s, torch.full((4,), -3.0))
    # after training the teacher holds the checkpoint's statistics again
    assert torch.equal(teacher.classifier[1].running_mean, torch.full((4,), -3.0))
    assert torch.equal(teacher.classifier[1].running_var, torch.full((4,), 7.0))


def test_no_random_state_of_the_run_moves_and_a_second_start_estimates_the_same() -> None:
    teacher = make_teacher("uniform")  # its background noise draws from torch's generator
    transform = chain(flip_prob=0.5)
    transform.set_random_state(seed=3)
    before_transform = transform.transforms[1].R.get_state()[1].copy()
    handler = TeacherTrainingStatistics(
        teacher, Dataset(records(), transform), Engine(lambda e, b: None), seed=5
    )
    torch.manual_seed(11)
    before_torch = torch.get_rng_state()
    handler.estimate()
    first = teacher.classifier[1].running_mean.clone()
    assert torch.equal(torch.get_rng_state(), before_torch)
    assert np.array_equal(transform.transforms[1].R.get_state()[1], before_transform)
    handler.use_checkpoint()
    handler.estimate()  # a resumed run starts the trainer again
    assert torch.equal(teacher.classifier[1].running_mean, first)
    assert not torch.equal(first, torch.full((4,), -3.0))


def test_checkpoint_statistics_attach_nothing_and_bad_values_are_refused() -> None:
    teacher = make_teacher()
    handler = TeacherTrainingStatistics(
        teacher, Dataset(records(), chain()), Engine(lambda e, b: None), statistics="checkpoint"
    )
    seen = run(teacher, handler, epochs=1)
    assert all(torch.equal(s, torch.full((4,), -3.0)) for s in seen["train"] + seen["validate"])
    with pytest.raises(
        ValueError, match=r"teacher_statistics must be one of \('checkpoint', 'training'\), got 'augmented'"
    ):
        TeacherTrainingStatistics(teacher, Dataset(records(), chain()), statistics="augmented")


def test_a_co_trained_teacher_is_refused() -> None:
    teacher = make_teacher()
    teacher.classifier.requires_grad_(True)
    handler = TeacherTrainingStatistics(teacher, Dataset(records(), chain()))
    with pytest.raises(ValueError, match="needs a frozen teacher"):
        handler.estimate()


def test_every_torchrun_rank_runs_it() -> None:
    # its estimate ends with a broadcast, a collective call that every rank must make
    assert TeacherTrainingStatistics.__name__ in EVERY_RANK_HANDLERS
