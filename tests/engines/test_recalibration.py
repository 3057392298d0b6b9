"""Batch-norm recalibration: exact population statistics, only the given module, run by a validator."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator
from torch import nn

from tea_med.engines.recalibration import BatchNormRecalibration, recalibrate_batchnorm
from tea_med.networks import TeacherPipeline, use_fast_double_backward


def conv_bn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())


def images(n_batches: int = 4, batch: int = 6, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, 8, 8, generator=gen) * 2 + 1 for _ in range(n_batches)]


def test_statistics_are_the_population_ones_of_the_current_weights() -> None:
    torch.manual_seed(0)
    net = conv_bn()
    bn = net[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(0.01)
    batches = images()
    with torch.no_grad():
        z = [net[0](x) for x in batches]
    n = recalibrate_batchnorm(net, batches)
    assert n == 24
    feats = torch.cat(z)
    torch.testing.assert_close(bn.running_mean, feats.mean((0, 2, 3)))
    # PyTorch's cumulative average of the per-batch unbiased variances
    expected_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in z]).mean(0)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert bn.momentum == 0.1 and bn.num_batches_tracked == 4


def test_modes_parameters_and_other_modules_are_left_alone() -> None:
    torch.manual_seed(0)
    first, second = conv_bn(), conv_bn()
    first[1].running_mean.fill_(3.0)
    model = nn.Sequential(first, nn.Conv2d(4, 3, 1), second)
    model.train()
    second.eval()
    params = [p.detach().clone() for p in model.parameters()]
    other = (first[1].running_mean.clone(), first[1].running_var.clone())
    recalibrate_batchnorm(second, images(), model)
    assert model.training and first.training and not second.training and not second[1].training
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    assert torch.equal(first[1].running_mean, other[0]) and torch.equal(first[1].running_var, other[1])
    assert not torch.allclose(second[1].running_mean, torch.zeros(4))


def test_teacher_pipeline_recalibrates_its_classifier_on_masked_images() -> None:
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 1))
    seg[1].running_mean.fill_(0.5)
    classifier = nn.Sequential(conv_bn(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    teacher = TeacherPipeline(seg, classifier, background="zero").freeze_segmenter()
    seg_stats = seg[1].running_mean.clone()
    batches = images()
    recalibrate_batchnorm(teacher.classifier, batches, teacher)
    assert torch.equal(seg[1].running_mean, seg_stats)
    with torch.no_grad():
        expected = torch.cat([classifier[0][0](teacher.masked_input(x)[0]) for x in batches]).mean((0, 2, 3))
    torch.testing.assert_close(classifier[0][1].running_mean, expected)


def test_fast_double_backward_batchnorm_and_dict_batches() -> None:
    torch.manual_seed(0)
    net = use_fast_double_backward(conv_bn())
    batches = images()
    recalibrate_batchnorm(net, [{"image": x, "label": torch.zeros(len(x))} for x in batches])
    with torch.no_grad():
        expected = torch.cat([net[0](x) for x in batches]).mean((0, 2, 3))
    torch.testing.assert_close(net[1].running_mean, expected)


def test_no_batches_is_an_error_and_restores_the_statistics() -> None:
    net = conv_bn()
    net[1].running_mean.fill_(2.0)
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_batchnorm(net, [])
    assert torch.equal(net[1].running_mean, torch.full((4,), 2.0))
    assert net[1].momentum == 0.1


def test_a_model_without_batchnorm_is_left_alone() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert recalibrate_batchnorm(net, images()) == 0


def test_handler_recalibrates_before_the_validator_runs() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(conv_bn(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    net[0][1].running_mean.fill_(100.0)  # stale statistics: the validator must not see these
    train = images(seed=1)
    val = [{"image": x, "label": torch.zeros(len(x), dtype=torch.long)} for x in images(2, seed=2)]
    seen: list[torch.Tensor] = []
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=val,
        network=net,
        val_handlers=[BatchNormRecalibration(net, train)],
    )
    stats = net[0][1].running_mean
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(stats.clone()))
    evaluator.run()
    with torch.no_grad():
        expected = torch.cat([net[0][0](x) for x in train]).mean((0, 2, 3))
    assert len(seen) == 2
    for s in seen:
        torch.testing.assert_close(s, expected)


def test_disabled_handler_attaches_nothing() -> None:
    net = conv_bn()
    net[1].running_mean.fill_(7.0)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=[{"image": x} for x in images(1)],
        network=net,
        val_handlers=[BatchNormRecalibration(net, images(), enabled=False)],
    )
    evaluator.run()
    assert torch.equal(net[1].running_mean, torch.full((4,), 7.0))


def test_max_images_stops_early_and_is_checked() -> None:
    net = conv_bn()
    batches = images(4, batch=6)
    assert recalibrate_batchnorm(net, batches, max_images=10) == 12
    with torch.no_grad():
        expected = torch.cat([net[0](x) for x in batches[:2]]).mean((0, 2, 3))
    torch.testing.assert_close(net[1].running_mean, expected)
    with pytest.raises(ValueError, match="max_images must be a positive"):
        recalibrate_batchnorm(net, batches, max_images=0)
