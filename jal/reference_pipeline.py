"""The reference implementation's training pipeline, as the benchmark times it: what the paper's public code
does. A torch Dataset of PIL images through torchvision transforms, a DataLoader with worker processes, fp32
NCHW, the L1 penalty as a Python sum over the parameters added to the loss, and `loss.item()` every step."""

from types import SimpleNamespace

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from jal.data import ImageData
from jal.timing import PhaseTimer


class PILImages(torch.utils.data.Dataset):
    """uint8 HWC arrays served one PIL image at a time, as torchvision.datasets.CIFAR10 does."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def reference_transform(cfg: DictConfig):
    from torchvision import transforms

    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    if cfg.dataset.rotation > 0:  # the CIFAR-100 protocol
        steps.append(transforms.RandomRotation(cfg.dataset.rotation))
    steps += [transforms.ToTensor(), transforms.Normalize(list(cfg.dataset.mean), list(cfg.dataset.std))]
    return transforms.Compose(steps)


def reference_l1_penalty(model: torch.nn.Module, strength: float) -> torch.Tensor:
    """The reference's L1 term, added to the loss before backward: a graph over every parameter each step."""
    return strength * sum(p.abs().sum() for p in model.parameters())


def build_reference(cfg: DictConfig, data: ImageData, device: torch.device, workers: int) -> SimpleNamespace:
    torch.manual_seed(cfg.seed)
    model = hydra.utils.instantiate(cfg.model).to(device)  # NCHW, fp32
    loader = torch.utils.data.DataLoader(
        PILImages(data.x_train, data.y_train, reference_transform(cfg)), batch_size=cfg.trainer.batch_size,
        shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)

    def batches():  # a fresh iterator (and fresh worker processes) each epoch, as a `for` loop per epoch
        while True:
            yield from loader

    return SimpleNamespace(model=model, criterion=hydra.utils.instantiate(cfg.loss), optimizer=optimizer,
                           batches=batches(), device=device, l1=cfg.optim.l1, grad_clip=cfg.optim.grad_clip,
                           total_loss=0.0)


def reference_step(ref: SimpleNamespace, mark=lambda phase: None) -> int:
    """One step of the reference training loop; returns the batch size."""
    images, labels = next(ref.batches)
    images, labels = images.to(ref.device), labels.to(ref.device)
    mark("data_bookkeeping")
    ref.model.train()
    ref.model.zero_grad()
    ref.optimizer.zero_grad()
    loss = ref.criterion(ref.model(images), labels)
    if ref.l1 > 0:
        loss = loss + reference_l1_penalty(ref.model, ref.l1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(ref.model.parameters(), ref.grad_clip)
    mark("forward_backward")
    ref.optimizer.step()
    mark("optimizer")
    ref.total_loss += loss.item()  # the reference logs the epoch's loss: a host sync every step
    return len(labels)


def run_reference(ref: SimpleNamespace, steps: int) -> int:
    return sum(reference_step(ref) for _ in range(steps))


def reference_breakdown(ref: SimpleNamespace, steps: int) -> dict:
    timer = PhaseTimer(ref.device)
    timer.start()
    for _ in range(steps):
        reference_step(ref, timer.mark)
    timer.mark("data_bookkeeping")  # the last step's loss.item()
    return timer.summary(steps)
