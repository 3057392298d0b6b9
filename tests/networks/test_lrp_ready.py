"""lrp_ready and the explainer refuse what LRP-ε cannot explain, naming the module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18 as monai_resnet18
from torch import nn

from tea_med.explain import LRPEpsilon, LRPUnsupportedError
from tea_med.networks import densenet121, lrp_ready, resnet18, resnet50


class ReusedReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv2(self.act(self.conv1(x))))
        return self.fc(h.mean((2, 3)))


class FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


class InPlaceAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv(x))
        h += 1.0  # modifies the ReLU output in place
        return self.fc(h.mean((2, 3)))


class SingleLogit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)).mean((2, 3)))


class WithGELU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.GELU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


REFUSED = {
    "reused relu": (ReusedReLU, r"ReLU module 'act' is called 2 times"),
    "functional relu": (FunctionalReLU, r"'<model>' calls the function relu"),
    "in-place op": (InPlaceAdd, r"'<model>' runs the in-place op add_"),
    "single logit": (SingleLogit, r"single-logit head"),
    "unsupported activation": (WithGELU, r"module 'act' is a GELU"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_lrp_ready_refuses_with_the_module_named(case: str) -> None:
    cls, message = REFUSED[case]
    with pytest.raises(LRPUnsupportedError, match=message):
        lrp_ready(cls())


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_explainer_refuses_on_first_call(case: str) -> None:
    cls, message = REFUSED[case]
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(LRPUnsupportedError, match=message):
        LRPEpsilon()(cls().eval(), x, torch.tensor([0, 0]))


def test_in_place_relu_is_fixed_on_a_copy() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(72, 2))
    with pytest.raises(LRPUnsupportedError, match=r"ReLU module '1' is in-place"):
        LRPEpsilon(validate="never")(model, torch.rand(1, 1, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"pass example_input="):
        lrp_ready(model)  # the default 64x64 probe does not fit this model
    ready = lrp_ready(model, torch.rand(2, 1, 8, 8))
    assert ready is not model and model[1].inplace and not ready[1].inplace
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(ready(x), model(x))


def test_ready_model_is_returned_as_is() -> None:
    model = densenet121(num_classes=3)
    assert lrp_ready(model) is model
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_monai_resnet_is_converted_with_identical_outputs() -> None:
    monai_net = monai_resnet18(spatial_dims=2, n_input_channels=3, num_classes=3).eval()
    with pytest.raises(LRPUnsupportedError):
        LRPEpsilon()(monai_net, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    ready = lrp_ready(monai_net)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ready.eval()(x), monai_net(x))
    assert len({id(m) for m in ready.modules() if isinstance(m, nn.ReLU)}) == 1 + 2 * 8


def test_lrp_resnet_loads_monai_state_dicts() -> None:
    monai_net = monai_resnet18(spatial_dims=2, n_input_channels=3, num_classes=4).eval()
    ours = resnet18(num_classes=4).eval()
    ours.load_state_dict(monai_net.state_dict())  # strict: identical keys
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), monai_net(x))
    assert lrp_ready(ours) is ours


def test_resnet50_bottleneck_is_lrp_ready() -> None:
    net = resnet50(num_classes=3)
    assert lrp_ready(net, torch.rand(1, 3, 32, 32)) is net


def test_three_dimensional_networks() -> None:
    net = resnet18(spatial_dims=3, in_channels=1, num_classes=2).double().eval()
    for m in net.modules():
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    x = torch.rand(2, 1, 16, 16, 16, dtype=torch.float64)
    e = LRPEpsilon().explain(net, x, torch.tensor([0, 1]), eps=1e-12)
    assert e.heatmap.shape == x.shape
    torch.testing.assert_close(e.heatmap.flatten(1).sum(1), e.logits.gather(1, e.target[:, None])[:, 0])


@pytest.mark.parametrize("num_classes", [1, 0])
def test_builders_refuse_single_logit_heads(num_classes: int) -> None:
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        densenet121(num_classes=num_classes)


def test_lrp_ready_needs_a_module() -> None:
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Module"):
        lrp_ready("densenet")  # type: ignore[arg-type]
