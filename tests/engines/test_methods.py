"""The comparison methods' losses against hand computations, and their refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.fake_engine import FakeEngine

from tea_med.engines import TEATask
from tea_med.engines.methods import (
    ERMStep,
    GAINStep,
    GradCAMKDStep,
    GroupDROStep,
    IRMStep,
    ISNetStep,
    KDStep,
    RepKDStep,
    RRRStep,
    TEAPlusKDStep,
    TEAPlusRepKDStep,
    background_relevance_loss,
    distillation_loss,
    feature_distillation_loss,
    input_gradient_penalty,
    irm_penalty,
    map_dissimilarity,
    training_step,
)
from tea_med.engines.methods.gain import erase_attention, normalised_attention
from tea_med.engines.steps import TEATrainStep
from tea_med.explain.gradcam import GradCAM
from tea_med.networks import TeacherPipeline, densenet121


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_distillation_loss_is_t_squared_times_the_kl_divergence() -> None:
    s = np.array([[1.0, 2.0, 0.0], [0.3, -1.0, 0.5]])
    t = np.array([[0.5, 0.0, 1.0], [2.0, 0.1, -0.4]])
    temperature = 2.0
    p_t, p_s = _softmax(t / temperature), _softmax(s / temperature)
    expected = temperature**2 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    found = distillation_loss(torch.tensor(s), torch.tensor(t), temperature)
    assert float(found) == pytest.approx(expected, rel=1e-10)
    # identical logits: nothing to distil
    assert float(distillation_loss(torch.tensor(t), torch.tensor(t), 4.0)) == pytest.approx(0.0, abs=1e-12)


def _task() -> TEATask:
    torch.manual_seed(0)
    return TEATask(densenet121(num_classes=3), densenet121(num_classes=3))


def test_kd_and_erm_losses_match_hand_computations() -> None:
    task = _task()
    opt = torch.optim.SGD(task.student.parameters(), lr=0.1)
    s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    t = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 2])
    ce = -np.mean([math.log(_softmax(s.numpy())[0, 0]), math.log(_softmax(s.numpy())[1, 2])])
    assert float(ERMStep(task, opt).loss(s, y, s, t)) == pytest.approx(ce, rel=1e-6)
    p_t, p_s = _softmax(t.numpy() / 4.0), _softmax(s.numpy() / 4.0)
    kd = 16.0 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    step = KDStep(task, opt, temperature=4.0, weight=0.5, ce_weight=0.25)
    assert float(step.loss(s, y, s, t)) == pytest.approx(0.5 * kd + 0.25 * ce, rel=1e-6)
    assert step.needs_labels and not KDStep(task, opt).needs_labels


def test_a_step_trains_the_student_only() -> None:
    task = _task()
    opt = torch.optim.SGD(task.student.parameters(), lr=0.05)
    step = ERMStep(task, opt)
    before = [p.detach().clone() for p in task.teacher.parameters()]
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0])
    losses = []

    class _Engine:  # the attributes of a MONAI engine a step reads
        class state:  # noqa: N801 - mirrors ignite's Engine.state
            device = torch.device("cpu")
            output = None

        @staticmethod
        def fire_event(_: object) -> None:
            pass

    for _ in range(5):
        out = step(_Engine(), {"image": x, "label": y})  # type: ignore[arg-type]
        losses.append(float(out["loss"]))
    assert losses[-1] < losses[0]
    assert all(torch.equal(a, b) for a, b in zip(before, task.teacher.parameters(), strict=True))


def test_methods_refuse_what_they_cannot_do() -> None:
    task = _task()
    opt = torch.optim.SGD(task.student.parameters(), lr=0.1)
    with pytest.raises(
        ValueError, match=r"method must be one of tea, erm, kd, rep_kd, .*, tea\+rep_kd, got 'pgi'"
    ):
        training_step("pgi", task, opt)
    with pytest.raises(ValueError, match="kd_temperature must be > 0"):
        KDStep(task, opt, temperature=0)
    cotrained = TEATask(densenet121(num_classes=3), densenet121(num_classes=3), teacher_ce_weight=1.0)
    with pytest.raises(ValueError, match="set warmup_epochs 0"):
        ERMStep(cotrained, opt)

    class _Engine:
        class state:  # noqa: N801
            device = torch.device("cpu")

    with pytest.raises(ValueError, match="ERMStep needs labels"):
        ERMStep(task, opt)(_Engine(), {"image": torch.rand(2, 3, 32, 32)})  # type: ignore[arg-type]


def test_the_rrr_penalty_matches_the_closed_form_gradient_of_a_linear_model() -> None:
    rng = np.random.default_rng(3)
    b, c, h, w, k = 2, 1, 3, 4, 3
    weight = rng.normal(size=(k, c * h * w))
    bias = rng.normal(size=k)
    x = rng.random((b, c, h, w))
    background = (rng.random((b, 1, h, w)) > 0.5).astype(float)
    linear = torch.nn.Linear(c * h * w, k).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight))
        linear.bias.copy_(torch.tensor(bias))
    xt = torch.tensor(x, requires_grad=True)
    found = input_gradient_penalty(linear(xt.flatten(1)), xt, torch.tensor(background))
    # d/dx sum_k log softmax(Wx + b)_k = W^T (1 - K p)
    expected = 0.0
    for i in range(b):
        p = _softmax((weight @ x[i].ravel() + bias)[None])[0]
        g = (weight.T @ (1.0 - k * p)).reshape(c, h, w)
        expected += float(((background[i] * g) ** 2).sum())
    assert float(found) == pytest.approx(expected / b, rel=1e-10)
    found.backward()  # the penalty is differentiable with respect to the weights
    assert linear.weight.grad is not None and float(linear.weight.grad.abs().sum()) > 0


def test_rrr_needs_the_teachers_lung_masks() -> None:
    task = _task()  # a plain classifier as teacher: no segmenter, no masks
    with pytest.raises(ValueError, match="rrr needs lung masks"):
        RRRStep(task, torch.optim.SGD(task.student.parameters(), lr=0.1))


def test_map_dissimilarity_is_one_minus_the_cosine_of_the_flattened_maps() -> None:
    a = np.array([[[[1.0, 0.0], [2.0, 1.0]]], [[[0.0, 3.0], [0.0, 0.0]]]])
    b = np.array([[[[1.0, 1.0], [1.0, 1.0]]], [[[0.0, 1.0], [0.0, 0.0]]]])
    cos = [float(a[i].ravel() @ b[i].ravel() / np.linalg.norm(a[i]) / np.linalg.norm(b[i])) for i in range(2)]
    found = map_dissimilarity(torch.tensor(a), torch.tensor(b))
    assert float(found) == pytest.approx(np.mean([1 - c for c in cos]), rel=1e-10)


def test_gradcam_kd_is_zero_for_a_student_identical_to_its_teacher_and_kd_otherwise() -> None:
    torch.manual_seed(0)
    teacher = densenet121(num_classes=3).eval()
    student = densenet121(num_classes=3).eval()
    student.load_state_dict(teacher.state_dict())
    task = TEATask(teacher, student)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z = teacher(x)
    step = GradCAMKDStep(task, opt)
    assert float(step.loss(x, None, student(x), z)) == pytest.approx(0.0, abs=1e-6)  # same maps, same outputs
    torch.manual_seed(5)
    other = densenet121(num_classes=3).eval()
    kd_only = GradCAMKDStep(
        TEATask(teacher, other), torch.optim.SGD(other.parameters(), lr=0.1), cam_weight=0.0
    )
    with torch.no_grad():
        zs = other(x)
    p_t, p_s = _softmax(z.numpy() / 4.0), _softmax(zs.numpy() / 4.0)
    expected = 0.1 * 16.0 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    assert float(kd_only.loss(x, None, other(x), z)) == pytest.approx(expected, rel=1e-3)  # float32 logits


def test_group_dro_weights_the_worse_group_up_as_sagawa_et_al_do() -> None:
    task = _task()
    step = GroupDROStep(task, torch.optim.SGD(task.student.parameters(), lr=0.1), step_size=0.5)
    s = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([0, 1, 0, 0])
    step.batch_groups = ["H1", "H1", "H2", "H2"]
    found = float(step.loss(s, y, s, s))
    p = _softmax(s.numpy())
    ce = -np.log(p[np.arange(4), y.numpy()])
    losses = np.array([ce[:2].mean(), ce[2:].mean()])
    q = np.array([0.5, 0.5]) * np.exp(0.5 * losses)  # both groups start at 1/2
    q /= q.sum()
    assert found == pytest.approx(float(q @ losses), rel=1e-6)
    assert step.groups == ["H1", "H2"] and float(step.weights[1]) > float(step.weights[0])  # H2 is worse
    restored = GroupDROStep(task, torch.optim.SGD(task.student.parameters(), lr=0.1))
    restored.load_state_dict(step.state_dict())
    assert restored.groups == step.groups and torch.equal(restored.weights, step.weights)


def test_group_dro_names_the_missing_source() -> None:
    task = _task()
    step = GroupDROStep(task, torch.optim.SGD(task.student.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="needs each training record's 'source'"):
        step(object(), {"image": torch.rand(2, 3, 32, 32), "label": torch.tensor([0, 1])})  # type: ignore[arg-type]


def test_the_irm_penalty_is_the_squared_derivative_of_the_scaled_risk() -> None:
    z = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 1.0]])
    y = np.array([0, 2, 2])
    p = _softmax(z)
    # d/ds CE(s z, y) at s = 1 is the mean over images of sum_k p_k z_k - z_y
    derivative = np.mean((p * z).sum(axis=1) - z[np.arange(3), y])
    found = irm_penalty(torch.tensor(z, requires_grad=True), torch.tensor(y))
    assert float(found) == pytest.approx(derivative**2, rel=1e-10)


def test_irm_averages_risks_and_penalties_over_the_hospitals_after_its_anneal() -> None:
    task = _task()
    step = IRMStep(task, torch.optim.SGD(task.student.parameters(), lr=0.1), weight=100.0, anneal_steps=3)
    z = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0], [0.0, 2.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1, 0, 0])
    step.batch_groups = ["H2", "H1", "H1", "H2"]
    p = _softmax(z.detach().numpy())
    ce = -np.log(p[np.arange(4), y.numpy()])
    deriv = (p * z.detach().numpy()).sum(axis=1) - z.detach().numpy()[np.arange(4), y.numpy()]
    risks = np.array([ce[[1, 2]].mean(), ce[[0, 3]].mean()])
    penalties = np.array([deriv[[1, 2]].mean() ** 2, deriv[[0, 3]].mean() ** 2])
    step.iteration = 2  # during the anneal: weight 1
    assert float(step.loss(z, y, z, z)) == pytest.approx(risks.mean() + penalties.mean(), rel=1e-6)
    step.iteration = 4  # after it: weight 100, the loss divided by 100
    assert float(step.loss(z, y, z, z)) == pytest.approx(
        (risks.mean() + 100 * penalties.mean()) / 100, rel=1e-6
    )


class _HalfLungs(torch.nn.Module):
    """A segmenter whose lungs are the left half of every image (logits +-20)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((x.shape[0], 1, *x.shape[2:]), -20.0)
        out[..., : x.shape[-1] // 2] = 20.0
        return out


def _mask_task(student: torch.nn.Module | None = None) -> TEATask:
    torch.manual_seed(0)
    classifier = densenet121(num_classes=3)
    teacher = TeacherPipeline(_HalfLungs(), classifier, background="zero")
    return TEATask(teacher, student if student is not None else densenet121(num_classes=3))


_Engine = FakeEngine


def test_the_isnet_background_loss_matches_a_hand_computation() -> None:
    rng = np.random.default_rng(4)
    heat = rng.normal(size=(2, 3, 4, 4))
    mask = np.zeros((2, 1, 4, 4))
    mask[:, :, 1:3, 1:3] = 1.0
    d = 0.9
    expected = []
    for b in range(2):
        scaled = np.abs(heat[b]) / math.sqrt(heat[b].var(ddof=1) + 1e-4) * (1 - mask[b])
        for c in range(3):
            ranked = sorted(scaled[c].ravel(), reverse=True)
            weights = [d**i for i in range(len(ranked))]
            pooled = sum(w * v for w, v in zip(weights, ranked, strict=True)) / sum(weights)
            expected.append(-math.log(1 - pooled / (pooled + 1)))
    found = background_relevance_loss(torch.tensor(heat), torch.tensor(mask), decay=d)
    assert float(found) == pytest.approx(np.mean(expected), rel=1e-10)
    # relevance only inside the lungs: nothing to penalise
    inside = torch.tensor(heat) * torch.tensor(mask)
    assert float(background_relevance_loss(inside, torch.tensor(mask))) == pytest.approx(0.0, abs=1e-12)


def test_isnet_weighs_cross_entropy_and_background_loss_by_p() -> None:
    task = _mask_task()
    step = ISNetStep(task, torch.optim.SGD(task.student.parameters(), lr=0.0), weight=1.0 - 1e-9)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1])
    task.train()
    with torch.no_grad():
        z = task.student(x)
    almost_heat_only = float(step.loss(x, y, z, z))
    assert 0.0 < almost_heat_only < -math.log(1e-4) + 1e-6  # the squashed loss is bounded
    ce_only = ISNetStep(task, torch.optim.SGD(task.student.parameters(), lr=0.0), weight=0.0)
    expected_ce = -np.mean(np.log(_softmax(z.numpy())[[0, 1], [0, 1]]))
    assert float(ce_only.loss(x, y, z, z)) == pytest.approx(expected_ce, rel=1e-5)


def test_gain_combines_cross_entropy_mining_and_mask_supervision_as_li_et_al_do() -> None:
    a = np.array([[[[0.0, 2.0], [4.0, 1.0]]]])
    norm = normalised_attention(torch.tensor(a))
    assert np.allclose(norm.numpy(), a / 4.0)
    x = np.full((1, 3, 2, 2), 0.5)
    soft = 1.0 / (1.0 + np.exp(-10.0 * (a / 4.0 - 0.5)))
    assert np.allclose(erase_attention(torch.tensor(x), norm).numpy(), x - soft * x)

    task = _mask_task()
    step = GAINStep(task, torch.optim.SGD(task.student.parameters(), lr=0.0), am_weight=0.5, mask_weight=2.0)
    x_t = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([2, 0])
    task.eval()  # batch-norm from running statistics: the same logits on every forward
    teacher_logits, student_logits = step.forward(x_t, y)
    found = float(step.loss(x_t, y, student_logits, teacher_logits))
    cam = GradCAM().explain(task.student, x_t, y).heatmap.numpy()
    peak = cam.reshape(2, -1).max(1).reshape(2, 1, 1, 1)
    att = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)  # an all-zero map stays zero
    soft = 1.0 / (1.0 + np.exp(-10.0 * (att - 0.5)))
    erased = x_t.numpy() - soft * x_t.numpy()
    with torch.no_grad():
        p_erased = _softmax(task.student(torch.tensor(erased, dtype=torch.float32)).numpy())
        z = task.student(x_t).numpy()
    mask = np.zeros((2, 1, 32, 32))
    mask[..., :16] = 1.0
    ce = -np.mean(np.log(_softmax(z)[[0, 1], [2, 0]]))
    mining = np.mean(p_erased[[0, 1], [2, 0]])
    supervision = np.mean((att - mask) ** 2)
    assert found == pytest.approx(ce + 0.5 * mining + 2.0 * supervision, rel=1e-4)


def test_gain_and_isnet_need_the_teachers_lung_masks() -> None:
    task = _task()
    opt = torch.optim.SGD(task.student.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="gain needs lung masks"):
        GAINStep(task, opt)
    with pytest.raises(ValueError, match="isnet needs lung masks"):
        ISNetStep(task, opt)
    with pytest.raises(ValueError, match=r"isnet_weight \(P\) must be in \[0, 1\), got 1.0"):
        ISNetStep(_mask_task(), opt, weight=1.0)


def test_rep_kd_matches_the_pooled_features_of_student_and_teacher() -> None:
    task = _mask_task()
    step = RepKDStep(task, torch.optim.SGD(task.student.parameters(), lr=0.0), weight=3.0)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    task.eval()
    teacher_logits, student_logits = step.forward(x, None)
    found = float(step.loss(x, None, student_logits, teacher_logits))

    def pooled(net: torch.nn.Module, inp: torch.Tensor) -> np.ndarray:  # DenseNet121's head by hand
        with torch.no_grad():
            return torch.relu(net.features(inp)).mean(dim=(2, 3)).numpy()

    masked = x.clone()
    masked[..., 16:] = 0.0  # the teacher's zero background right of its lungs
    f_s, f_t = pooled(task.student, x), pooled(task.teacher.classifier, masked)
    assert found == pytest.approx(3.0 * np.mean((f_s - f_t) ** 2), rel=1e-5)
    assert feature_distillation_loss(torch.tensor(f_t), torch.tensor(f_t)).item() == 0.0


def test_rep_kd_needs_the_teachers_last_layer_shape() -> None:
    task = TEATask(densenet121(num_classes=3), densenet121(num_classes=2))
    with pytest.raises(ValueError, match=r"rep_kd transplants the teacher's last layer.*\(3, 1024\)"):
        RepKDStep(task, torch.optim.SGD(task.student.parameters(), lr=0.1))


def test_tea_plus_kd_adds_the_distillation_of_the_students_outputs_to_the_tea_loss() -> None:
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    losses = {}
    for name in ("tea", "tea+kd"):
        torch.manual_seed(0)
        teacher, student = densenet121(num_classes=3).eval(), densenet121(num_classes=3)
        task = TEATask(teacher, student, seed=5)
        opt = torch.optim.SGD(student.parameters(), lr=0.0)
        step = (
            TEATrainStep(task, opt)
            if name == "tea"
            else TEAPlusKDStep(task, opt, weight=0.7, temperature=2.0)
        )
        losses[name] = float(step(_Engine(), {"image": x})["loss"])  # type: ignore[arg-type]
        task.train()
        with torch.no_grad():
            zs, zt = student(x).numpy(), teacher(x).numpy()
    p_t, p_s = _softmax(zt / 2.0), _softmax(zs / 2.0)
    kd = 4.0 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    assert losses["tea+kd"] - losses["tea"] == pytest.approx(0.7 * kd, rel=1e-3, abs=1e-6)


def test_tea_plus_rep_kd_adds_the_feature_distillation_to_the_tea_loss() -> None:
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    losses = {}
    for name in ("tea", "tea+rep_kd"):
        torch.manual_seed(0)
        teacher, student = densenet121(num_classes=3).eval(), densenet121(num_classes=3)
        task = TEATask(teacher, student, seed=5)
        opt = torch.optim.SGD(student.parameters(), lr=0.0)
        step = TEATrainStep(task, opt) if name == "tea" else TEAPlusRepKDStep(task, opt, weight=2.0)
        losses[name] = float(step(_Engine(), {"image": x})["loss"])  # type: ignore[arg-type]
        task.train()
        with torch.no_grad():  # DenseNet121's pooled features by hand
            f_s = torch.relu(student.features(x)).mean(dim=(2, 3)).numpy()
            f_t = torch.relu(teacher.features(x)).mean(dim=(2, 3)).numpy()
    expected = 2.0 * np.mean((f_s - f_t) ** 2)
    assert losses["tea+rep_kd"] - losses["tea"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
