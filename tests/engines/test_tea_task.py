"""TEATask and its MONAI steps: TEA learns, and only the heatmap loss reaches the student."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.fake_engine import FakeEngine
from monai.engines import SupervisedTrainer
from torch import nn

from tea_med.data.phantoms import CLASSES, iter_phantoms
from tea_med.engines import TEATask, TEATrainStep, recalibrate_batchnorm, sample_eps, sample_targets
from tea_med.explain import LRPEpsilon
from tea_med.losses import TEALoss
from tea_med.networks import TeacherPipeline, init_student, lung_segmenter


def phantom_tensors(split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = list(iter_phantoms({split: n}, size=32, seed=seed, splits=(split,)))
    x = torch.from_numpy(np.stack([img for _, img, _ in data]))[:, None].repeat(1, 3, 1, 1)
    y = torch.tensor([CLASSES.index(spec.label) for spec, _, _ in data])
    return x, y


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained_teacher() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x, y = phantom_tensors("training", 48, 0)
    xv, _ = phantom_tensors("validation", 24, 1)
    teacher = small_cnn()
    opt = torch.optim.Adam(teacher.parameters(), 1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, len(x), (16,), generator=gen)
        loss = nn.functional.cross_entropy(teacher(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    recalibrate_batchnorm(teacher, x.split(16))  # as the teacher bundle saves it
    return teacher.eval(), x, y, xv


def test_short_tea_run_lowers_loss_and_lifts_agreement(trained_teacher) -> None:
    teacher, x, _, xv = trained_teacher
    torch.manual_seed(1)
    student = init_student(teacher, mode="random")  # only the last layer is the teacher's
    task = TEATask(copy.deepcopy(teacher), student, seed=0)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], 1e-2)

    def held_out() -> tuple[float, float]:
        # as the bundles validate: batch-norm statistics of the current weights, on training images
        recalibrate_batchnorm(student, x.split(16))
        task.eval()
        out = task.validation_losses(xv)
        agree = (out["student_logits"].argmax(1) == out["teacher_logits"].argmax(1)).float().mean()
        return float(out["loss_per_sample"].mean()), float(agree)

    loss0, _ = held_out()
    gen = torch.Generator().manual_seed(2)
    for _ in range(60):
        task.train()
        out = task(x[torch.randint(0, len(x), (16,), generator=gen)])
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
    loss1, agree1 = held_out()
    assert loss1 < 0.5 * loss0, (loss0, loss1)
    assert agree1 > 0.5, agree1  # three classes: chance is about 1/3


def test_the_update_equals_the_one_from_the_heatmap_loss_alone(trained_teacher) -> None:
    """One TEATrainStep moves the student exactly as SGD on TEALoss(student heatmap, teacher heatmap)."""
    teacher, x, y, _ = trained_teacher
    xb, yb = x[:8], y[:8]
    student = init_student(teacher, mode="copy")
    reference = copy.deepcopy(student)
    task = TEATask(copy.deepcopy(teacher), student, seed=5)
    opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    step = TEATrainStep(task, opt, max_grad_norm=1.0)
    gen_state = task.generator.get_state()
    batch = {"image": xb, "label": yb}
    engine = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch],
        network=student,
        optimizer=opt,
        loss_function=task.loss,
        iteration_update=step,
        decollate=False,
    )
    engine.run()  # one iteration of the stock trainer, as the bundle runs it
    out = engine.state.output
    assert set(out) >= {"pred", "teacher", "loss", "agreement", "loss_level0"}

    # The same step written out: same ε and classes (same generator state), heatmaps only.
    gen = torch.Generator()
    gen.set_state(gen_state)
    eps = sample_eps(len(xb), 1e-3, 1e-2, gen)
    lrp = LRPEpsilon()
    t = lrp.explain(teacher, xb, lambda z: sample_targets(z, gen), eps=eps)
    reference.train()
    s = lrp(reference, xb, t.target, eps=eps, create_graph=True)
    ref_opt = torch.optim.SGD([p for p in reference.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    ref_opt.zero_grad()
    TEALoss()(s, t.heatmap).backward()
    torch.nn.utils.clip_grad_norm_([p for p in reference.parameters() if p.requires_grad], 1.0)
    ref_opt.step()
    moved = False
    for (name, a), b in zip(student.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
        moved |= not torch.equal(a, teacher.state_dict()[name])
    assert moved
    # the frozen last layer did not move, the teacher (parameters and batch-norm buffers) did not move
    torch.testing.assert_close(student[-1].weight, teacher[-1].weight, rtol=0, atol=0)
    frozen = task.teacher.state_dict()
    assert frozen.keys() == teacher.state_dict().keys()
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(frozen[name], value, rtol=0, atol=0, msg=name)


def _one_step(teacher: nn.Module, xb: torch.Tensor, **options: object) -> nn.Module:
    """The student after one TEATrainStep (SGD, lr 0.1) under the stock trainer."""
    student = init_student(teacher, mode="copy")
    task = TEATask(copy.deepcopy(teacher), student, seed=5)
    opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.1)
    step = TEATrainStep(task, opt, max_grad_norm=1.0, **options)  # type: ignore[arg-type]
    SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=[{"image": xb}], network=student,
        optimizer=opt, loss_function=task.loss, iteration_update=step, decollate=False,
    ).run()  # fmt: skip
    return student


def test_channels_last_takes_the_step_of_the_default_memory_format(trained_teacher) -> None:
    teacher, x, _, _ = trained_teacher
    start = init_student(teacher, mode="copy")
    plain, cl = _one_step(teacher, x[:8]), _one_step(teacher, x[:8], channels_last=True)
    assert cl[0].weight.is_contiguous(memory_format=torch.channels_last)
    moves = [
        (n, a - s, b - s)
        for (n, a), b, s in zip(plain.named_parameters(), cl.parameters(), start.parameters(), strict=True)
    ]
    scale = max(float(m.abs().max()) for _, m, _ in moves)
    for name, a, b in moves:  # the same update up to float32 rounding of other convolution kernels
        torch.testing.assert_close(b, a, rtol=0, atol=1e-3 * scale, msg=name)


def test_a_bfloat16_step_computes_under_autocast_and_keeps_float32_weights(trained_teacher) -> None:
    teacher, x, _, _ = trained_teacher
    start = init_student(teacher, mode="copy")
    fp32, bf16 = _one_step(teacher, x[:8]), _one_step(teacher, x[:8], precision="bfloat16")
    moved32 = torch.cat(
        [(a - s).flatten() for a, s in zip(fp32.parameters(), start.parameters(), strict=True)]
    )
    moved16 = torch.cat(
        [(b - s).flatten() for b, s in zip(bf16.parameters(), start.parameters(), strict=True)]
    )
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert not torch.equal(moved16, moved32)  # bfloat16 arithmetic changed the step ...
    assert F.cosine_similarity(moved16, moved32, dim=0) > 0.2  # ... but it is a step of the same loss
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'float16'"):
        _one_step(teacher, x[:8], precision="float16")


def test_teacher_pipeline_is_explained_through_its_classifier_on_the_masked_input() -> None:
    classifier = small_cnn().eval()
    teacher = TeacherPipeline(lung_segmenter("small"), classifier).eval()
    task = TEATask(teacher, init_student(teacher), seed=0)
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(4)
    masked = teacher.masked_input(x)[0]
    eps = torch.full((2,), 1e-2)
    torch.manual_seed(4)
    e = task.explain_teacher(x, eps, sample=False)
    torch.testing.assert_close(e.heatmap, LRPEpsilon()(classifier, masked, e.target, eps=eps))


def test_a_lung_mask_given_to_the_step_replaces_the_teachers_segmenter() -> None:
    """With the mask its segmenter would compute, a TEATrainStep that reads the mask from the
    batch takes the step of one that runs the segmenter, and runs the segmenter not once."""
    classifier = small_cnn().eval()
    teacher = TeacherPipeline(lung_segmenter("small"), classifier, background="zero").eval()
    x = torch.rand(4, 3, 32, 32)
    mask = (torch.sigmoid(teacher.segmenter(x)) > teacher.threshold).float().detach()  # the segmenter's rule
    calls: list[int] = []
    students = []
    for batch, mask_key in (({"image": x}, None), ({"image": x, "lung": mask}, "lung")):
        student = init_student(teacher, mode="copy")
        task = TEATask(copy.deepcopy(teacher), student, seed=5)
        task.teacher.segmenter.register_forward_hook(lambda *_: calls.append(1))
        opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.1)
        calls.clear()
        step = TEATrainStep(task, opt, mask_key=mask_key)
        SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=[batch], network=student,
            optimizer=opt, loss_function=task.loss, iteration_update=step, decollate=False,
        ).run()  # fmt: skip
        students.append(student)
        assert len(calls) == (0 if mask_key else 1)
    for (name, a), b in zip(students[0].named_parameters(), students[1].parameters(), strict=True):
        torch.testing.assert_close(b, a, msg=name)
    with pytest.raises(
        ValueError,
        match=r"images of shape \[4, 3, 32, 32\] must have shape \[B, 1, H, W\] .* got \[4, 32, 32\]",
    ):
        teacher.masked_input(x, mask[:, 0])
    task = TEATask(teacher, init_student(teacher))
    opt = torch.optim.SGD(task.student.parameters(), lr=0.1)
    with pytest.raises(KeyError, match="the batch has no 'lung'"):
        TEATrainStep(task, opt, mask_key="lung")(FakeEngine(), {"image": x})


def test_bn_modes_and_frozen_teacher() -> None:
    teacher = small_cnn().eval()
    task = TEATask(teacher, init_student(teacher), bn_mode="frozen").train()
    bns = [m for m in task.student.modules() if isinstance(m, nn.BatchNorm2d)]
    assert task.student.training and all(not m.training for m in bns)
    assert not task.teacher.training and not any(p.requires_grad for p in task.teacher.parameters())
    task = TEATask(teacher, init_student(teacher), bn_mode="train").train()
    assert all(m.training for m in task.student.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="bn_mode must be one of"):
        TEATask(teacher, init_student(teacher), bn_mode="eval")


def test_a_student_with_sync_batch_norm_is_refused() -> None:
    teacher = small_cnn().eval()
    student = nn.SyncBatchNorm.convert_sync_batchnorm(init_student(teacher))
    with pytest.raises(ValueError, match="SyncBatchNorm layers, whose backward"):
        TEATask(teacher, student)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy written out: log-sum-exp (max subtracted) minus the true class's logit."""
    m = logits.max(1, keepdim=True).values
    lse = m[:, 0] + torch.log(torch.exp(logits - m).sum(1))
    return (lse - logits[torch.arange(len(y)), y]).mean()


def _tea_loss_written_out(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Paper Eqs. 1-2, ``mean|S - T| / (sqrt(mean|S|) sqrt(mean|T|) + 1e-10)`` averaged over the
    batch and the levels; 32-px maps give the levels 32, 16 and 8 px (average pooling by 1, 2, 4)."""
    total = s.new_zeros(())
    for k in (1, 2, 4):
        sk = F.avg_pool2d(s, k).flatten(1) if k > 1 else s.flatten(1)
        tk = F.avg_pool2d(t, k).flatten(1) if k > 1 else t.flatten(1)
        d = (sk - tk).abs().mean(1) / (sk.abs().mean(1).sqrt() * tk.abs().mean(1).sqrt() + 1e-10)
        total = total + d.mean()
    return total / 3


def test_warmup_co_training_trains_the_teacher_with_the_tea_gradient() -> None:
    """Warm-up: teacher loss = 0.1 CE + TEA loss (both reach the teacher); afterwards weight * CE.

    The expected objective is assembled here from a written-out cross-entropy and TEA loss on the
    LRP-ε heatmaps (LRPEpsilon is checked against a matrix form in tests/explain) with the task's
    classes and ε; its value and its gradient with respect to every teacher parameter must match.
    """
    torch.manual_seed(0)
    teacher = small_cnn().double()
    student = init_student(teacher.eval(), mode="random")  # a copy would match exactly: zero TEA gradient
    weight = 2.5  # not 1 and not 0.1: a wrong factor after warm-up shows
    task = TEATask(teacher, student, teacher_ce_weight=weight, warmup_epochs=1, seed=0)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 32, 32, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    params = list(teacher.parameters())

    def teacher_grads(loss: torch.Tensor) -> list[torch.Tensor | None]:
        return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))

    lrp = LRPEpsilon()
    task.train()
    assert teacher.training  # co-training: the teacher runs in training mode
    for warmup in (True, False):
        out = task(x, label=y, warmup=warmup)
        t = lrp.explain(teacher, x, out["target"], eps=out["eps"], create_graph=True)
        s = lrp(student, x, out["target"], eps=out["eps"])  # a constant for the teacher
        ce = _cross_entropy(t.logits, y)
        tea = _tea_loss_written_out(s, t.heatmap)
        expected = 0.1 * ce + tea if warmup else weight * ce
        assert float(out["loss"].detach()) == pytest.approx(float(tea.detach()), rel=1e-9)
        assert float(out["teacher_loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-9)
        got, want = teacher_grads(out["teacher_loss"]), teacher_grads(expected)
        for (name, _), g, w in zip(teacher.named_parameters(), got, want, strict=True):
            assert g is not None and w is not None, name
            torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-12, msg=name)
        tea_part = teacher_grads(out["loss"])
        reaches = any(g is not None and g.abs().sum() > 0 for g in tea_part)
        assert reaches == warmup  # the TEA gradient reaches the teacher only during warm-up
        if warmup:  # ... and it is not negligible: 0.1 CE alone has a clearly different gradient
            ce_only = teacher_grads(0.1 * ce)
            diff = sum(float((g - c).abs().sum()) for g, c in zip(got, ce_only, strict=True))
            assert diff > 1e-3 * sum(float(c.abs().sum()) for c in ce_only)

    s_opt = torch.optim.SGD([p for p in task.student.parameters() if p.requires_grad], lr=0.1)
    with pytest.raises(ValueError, match="pass teacher_optimizer"):
        TEATrainStep(task, s_opt)
    with pytest.raises(ValueError, match="warmup_epochs needs teacher_ce_weight"):
        TEATask(teacher, init_student(teacher), warmup_epochs=2)
    with pytest.raises(ValueError, match="needs labels"):
        task(x)
