"""The two backbones against the architecture of docs/protocol.md section 1, and a short run that must learn.

The parameter counts are worked out by hand from the layer shapes, as sums of conv / batch-norm / linear
terms, never by asking jal.models: a missing, extra or mis-sized layer changes them.
"""

import math

import pytest
import torch
from conftest import compose_train
from torch import nn

from jal import train as jal_train
from jal.models import CNN8, ResNet34


def conv(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def bn(c: int) -> int:  # weight and bias; the running statistics are buffers, not parameters
    return 2 * c


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def cnn8_parameters(num_classes: int) -> int:
    """Three blocks of two [3x3 conv (with bias) -> BN -> ReLU] of 64, 128, 196 channels, each block ending
    in a 2x2 max-pool, then FC 196*4*4 -> 256 -> BN1d -> ReLU -> FC 256 -> K."""
    total, c_in = 0, 3
    for width in (64, 128, 196):
        total += conv(c_in, width, 3, True) + bn(width) + conv(width, width, 3, True) + bn(width)
        c_in = width
    return total + linear(196 * 4 * 4, 256) + bn(256) + linear(256, num_classes)


def resnet34_parameters(num_classes: int) -> int:
    """CIFAR stem (3x3 conv, no bias, BN), BasicBlocks x [3, 4, 6, 3] of 64, 128, 256, 512 channels (two
    3x3 convs without bias, each with BN; a 1x1 conv + BN shortcut where the width or stride changes), then
    global average pooling and FC 512 -> K."""
    total, c_in = conv(3, 64, 3, False) + bn(64), 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for _ in range(blocks):
            total += conv(c_in, width, 3, False) + bn(width) + conv(width, width, 3, False) + bn(width)
            if c_in != width:
                total += conv(c_in, width, 1, False) + bn(width)
            c_in = width
    return total + linear(512, num_classes)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module", autouse=True)
def seeded_one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cnn8_has_the_parameters_of_its_layer_shapes(num_classes):
    assert count(CNN8(num_classes)) == cnn8_parameters(num_classes)
    assert cnn8_parameters(10) == 1_639_794  # 833,640 in the conv blocks + 806,154 in the head


@pytest.mark.parametrize("num_classes", [10, 100])
def test_resnet34_has_the_parameters_of_its_layer_shapes(num_classes):
    assert count(ResNet34(num_classes)) == resnet34_parameters(num_classes)
    # the CIFAR ResNet-34 everyone quotes: 21,282,122 parameters with 10 outputs, 21,328,292 with 100
    assert (resnet34_parameters(10), resnet34_parameters(100)) == (21_282_122, 21_328_292)


def test_cnn8_maps_32x32_images_to_3136_features_and_k_logits():
    model = CNN8(10).eval()
    x = torch.randn(3, 3, 32, 32)
    assert model.features(x).shape == (3, 196, 4, 4)  # 32 -> 16 -> 8 -> 4, flattened: 3136
    assert model(x).shape == (3, 10)
    assert CNN8(100).eval()(x).shape == (3, 100)


def test_cnn8_layers_come_in_the_order_of_the_protocol():
    block = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2 + [nn.MaxPool2d]
    head = [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    model = CNN8(10)
    assert [type(m) for m in model.features] + [type(m) for m in model.classifier] == block * 3 + head
    assert [m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)] == [(3, 3)] * 6
    assert [m.padding for m in model.modules() if isinstance(m, nn.Conv2d)] == [(1, 1)] * 6


def test_cnn8_backward_reaches_every_weight():
    model = CNN8(10).train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    nn.functional.cross_entropy(model(x), y).backward()
    # a conv bias right before a BN gets (almost) no gradient in train mode: the BN subtracts it again
    conv_biases = {f"features.{i}.bias" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)}
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name not in conv_biases:
            assert p.grad.abs().sum() > 0, name


def test_cnn8_initialises_convolutions_kaiming_uniform_and_linear_layers_xavier_uniform():
    model = CNN8(10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 6 and len(linears) == 2
    for m in convs:  # U(-b, b), b = gain * sqrt(3 / fan_in) with the ReLU gain sqrt(2)
        fan_in = m.in_channels * 3 * 3
        bound = math.sqrt(2) * math.sqrt(3 / fan_in)
        assert bound * 0.97 < m.weight.abs().max() <= bound
    for m in linears:  # U(-b, b), b = sqrt(6 / (fan_in + fan_out))
        bound = math.sqrt(6 / (m.in_features + m.out_features))
        assert bound * 0.97 < m.weight.abs().max() <= bound


def test_resnet34_stages_keep_then_halve_the_resolution_and_end_in_k_logits():
    model = ResNet34(100).eval()
    shapes = []
    for stage_end in (2, 6, 12, 15):  # the last block of each stage (3, 4, 6, 3 blocks)
        model.stages[stage_end].register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape)))
    x = torch.randn(2, 3, 32, 32)
    assert model.stem(x).shape == (2, 64, 32, 32)  # the CIFAR stem: stride 1, no max-pool
    assert model(x).shape == (2, 100)
    assert shapes == [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4)]
    assert len(model.stages) == 3 + 4 + 6 + 3


@pytest.mark.full  # ResNet-34's backward pass
def test_resnet34_forward_and_backward_give_a_finite_nonzero_gradient_to_every_parameter():
    model = ResNet34(100).train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 17, 42, 99])
    logits = model(x)
    assert logits.shape == (4, 100) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name  # no bias before a BN here, so every parameter gets a signal


@pytest.mark.full  # trains three epochs
def test_cnn8_learns_synthetic_data_well_above_chance(tmp_path):
    """Three epochs of the real training loop (CE, clean labels) on the synthetic set, whose classes differ
    by a faint colour offset under pixel noise: test accuracy must end far above chance (10%). About 10 s
    on one core; it fails when the model cannot learn (a broken layer) or the optimiser does not (lr 0)."""
    cfg = compose_train(["dataset=synthetic", "loss=ce", "logger=none", "trainer.progress=false",
                         "trainer.epochs=3", "trainer.batch_size=32", "trainer.device=cpu", f"out_root={tmp_path}"])
    result = jal_train.train(cfg, tmp_path / "run")
    history = result.history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert result.last_test_acc > 60.0, [h["test_acc"] for h in history]
