"""The training step, on the device: model, loss, SGD and schedule built from a run's step settings and its model
and loss configs; K runs' models fused into one (HFTA); one epoch of training steps; the evaluation. Nothing here
touches disk or the host inside an epoch: the metrics stay on the device until the epoch's end (jal/train.py reads
them once). What the step reads of a run's config it reads from StepSettings (jal.run.step_settings takes them
from the composed config, once per run), never the config itself.
"""

import copy
from dataclasses import dataclass, field

import hydra
import torch
from omegaconf import DictConfig

from jal import distributed
from jal.data import augment, epoch_generator, normalize
from jal.device import PARAMETER_DTYPE


@dataclass(frozen=True, kw_only=True)
class StepSettings:
    """The values of a run's config that the step reads, and only those (jal.run.step_settings takes them from
    the composed config once per run): its SGD, schedule, augmentation, batches and evaluation. The members of a
    fusion each keep their own (their seeds and optim settings may differ); the loop's shared values (batches,
    augmentation, evaluation) are its first member's: jal.experiment.check_fusable requires them alike."""
    seed: int  # its epochs' generators: the data order, the augmentation, a loss's draws
    epochs: int  # trainer.epochs: the cosine schedule's length; the last epoch is always evaluated
    batch_size: int  # trainer.batch_size
    eval_batch_size: int  # trainer.eval_batch_size
    eval_every: int  # trainer.eval_every
    channels_last: bool  # trainer.channels_last: the model's and the images' memory format
    compile: bool | str  # trainer.compile: off, on, or one of torch.compile's modes
    rotation: float  # dataset.rotation: the augmentation's random rotation (degrees)
    lr: float  # optim.lr
    momentum: float  # optim.momentum
    weight_decay: float  # optim.weight_decay (L2, SGD's)
    l1: float  # optim.l1
    grad_clip: float | None  # optim.grad_clip: None, no clip
    nesterov: bool = False  # dataset.nesterov: the real-world recipes'
    lr_decay: float | None = None  # dataset.lr_decay: a step decay instead of the cosine schedule
    lr_decay_every: int | None = None  # dataset.lr_decay_every (epochs)


@dataclass(eq=False, kw_only=True)  # members of a fusion are told apart by identity
class Learner:
    """What the step trains of one run: its step settings, plain model (and the compiled model the step calls),
    loss, SGD and schedule, as build_training makes them. A fusion's members are Learners: a run's Member
    (jal/run.py) is one, and so are the benchmark's and the GPU checks' runs."""
    settings: StepSettings
    model: torch.nn.Module = None
    step_model: torch.nn.Module = None
    criterion: torch.nn.Module = None
    optimizer: torch.optim.Optimizer = None
    scheduler: object = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: StepSettings, model_config: DictConfig, loss_config: DictConfig, device: torch.device,
              precision: str = "fp32") -> "Learner":
        parts = build_training(settings, model_config, loss_config, device, precision)
        return cls(settings=settings, **dict(zip(LEARNER_PARTS, parts)))


LEARNER_PARTS = ("model", "step_model", "criterion", "optimizer", "scheduler")


def build_training(settings: StepSettings, model_config: DictConfig, loss_config: DictConfig, device: torch.device,
                   precision: str = "fp32"):
    """Model (from its config section, cfg.model; its parameters in the precision's dtype), loss (from cfg.loss),
    SGD (Nesterov where the dataset's recipe says) and the cosine schedule (or the real-world recipes' step
    decay), as the run's step settings say. `step_model` is the model the training step and the evaluation call:
    the model itself, or its torch.compile'd version (sharing its parameters; forward and backward compiled, the
    evaluation's no-grad forward as a second graph)."""
    model = hydra.utils.instantiate(model_config).to(device, PARAMETER_DTYPE[precision])
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = hydra.utils.instantiate(loss_config)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay, nesterov=settings.nesterov)
    if settings.lr_decay is not None:  # the real-world recipes: x lr_decay every lr_decay_every epochs
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, settings.lr_decay_every, settings.lr_decay)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs, eta_min=0.0)
    mode = settings.compile  # true, or one of torch.compile's modes (checked by jal.config.TrainerConfig)
    step_model = torch.compile(model, mode=None if mode is True else mode) if mode else model
    return model, step_model, criterion, optimizer, scheduler


def add_l1_gradient(params: list[torch.Tensor], strength: float) -> None:
    """Add the gradient of strength * sum|theta| (= strength * sign(theta)) to every parameter's gradient.

    The same as adding the penalty to the loss before backward, as the reference does, but in two fused
    foreach ops instead of a Python sum that builds a graph over every parameter each step."""
    grads = [p.grad for p in params]
    torch._foreach_add_(grads, torch._foreach_sign(params), alpha=strength)


def per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) values shaped to broadcast over a stacked (K, ...) tensor."""
    return values.view(-1, *(1,) * (like.ndim - 1))


class Fusion:
    """The models of K runs trained as one (HFTA: Wang et al., MLSys 2021): parameters and BatchNorm buffers
    stacked along a first member dimension (torch.func.stack_module_state), the network called on all K at
    once by torch.vmap(functional_call). One SGD over the stacked parameters updates each member exactly as
    its own SGD would: the parameters are disjoint slices, and L1, the gradient-norm clip and the L2 weight
    decay are applied per member. Each member keeps the plain model, SGD and schedule a run alone builds;
    `unstack` writes the fused state back into them (to save a checkpoint a run alone can read).

    A fusion of one trains the plain model with its own SGD (the `self.k == 1` branches): exactly the step a
    run alone always took. The vmapped path with K = 1 is the same arithmetic in another order: on an Ice Lake
    Xeon its weights differed from the plain step's by up to 1.9e-5 after 4 fp32 steps, so taking it for
    runs alone would change every record a run alone has written."""

    def __init__(self, members: list):
        self.members = list(members)  # each with settings, model, step_model, criterion, optimizer, scheduler
        self.stack()

    @property
    def k(self) -> int:
        return len(self.members)

    def stack(self) -> None:
        """The fused state from the members' plain models, SGD states and schedule (all at one epoch)."""
        first = self.members[0]
        if self.k == 1:
            self.optimizer, self.scheduler = first.optimizer, first.scheduler
            self.params = list(first.model.parameters())
            return
        models = [m.model for m in self.members]
        self.base = copy.deepcopy(first.model).to("meta")  # the architecture functional_call runs
        self.stacked, self.buffers = torch.func.stack_module_state(models)
        self.params = list(self.stacked.values())
        group = first.optimizer.param_groups[0]
        self.optimizer = torch.optim.SGD(self.params, lr=group["lr"], momentum=group["momentum"], weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=first.settings.epochs)
        self.scheduler.load_state_dict(first.scheduler.state_dict())
        self.optimizer.param_groups[0].update(lr=group["lr"], initial_lr=group["initial_lr"])
        named = [dict(model.named_parameters()) for model in models]
        for name, fused in self.stacked.items():
            momenta = [m.optimizer.state.get(n[name], {}).get("momentum_buffer") for m, n in zip(self.members, named)]
            if all(b is not None for b in momenta):  # none before the first step
                self.optimizer.state[fused]["momentum_buffer"] = torch.stack(momenta)
        like = self.params[0]  # the settings in the parameters' dtype: an fp64 fusion stays fp64
        values = lambda key: [getattr(m.settings, key) for m in self.members]
        setting = lambda key: torch.tensor([float("inf" if v is None else v) for v in values(key)],
                                           dtype=like.dtype, device=like.device)
        self.l1, self.weight_decay, self.max_norm = setting("l1"), setting("weight_decay"), setting("grad_clip")
        self.any_l1 = any(m.settings.l1 > 0 for m in self.members)
        self.any_weight_decay = any(m.settings.weight_decay > 0 for m in self.members)
        forward = torch.vmap(self.call)
        mode = first.settings.compile
        self.fused_forward = torch.compile(forward, mode=None if mode is True else mode) if mode else forward
        self.shared_forward = torch.vmap(self.call, in_dims=(0, 0, None))  # one batch for all (the test set)

    def call(self, params, buffers, x):
        return torch.func.functional_call(self.base, (params, buffers), (x,))

    def unstack(self) -> None:
        """Write the fused parameters, buffers, momenta and schedule back into each member's plain objects."""
        if self.k == 1:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        with torch.no_grad():
            for i, m in enumerate(self.members):
                for name, p in m.model.named_parameters():
                    p.copy_(self.stacked[name][i])
                    momentum = self.optimizer.state.get(self.stacked[name], {}).get("momentum_buffer")
                    if momentum is not None:
                        m.optimizer.state[p]["momentum_buffer"] = momentum[i].clone()
                for name, b in m.model.named_buffers():
                    b.copy_(self.buffers[name][i])
                m.optimizer.param_groups[0]["lr"] = lr
                m.scheduler.load_state_dict(self.scheduler.state_dict())

    def drop(self, members: list) -> None:
        """Take these members out of the fusion (slicing their parameters, buffers and momenta out)."""
        self.unstack()
        self.members = [m for m in self.members if m not in members]
        if self.members:
            self.stack()

    def set_training(self, mode: bool) -> None:
        """Train or eval mode (BatchNorm, dropout) for the network the fusion calls."""
        (self.members[0].step_model if self.k == 1 else self.base).train(mode)

    def __call__(self, images) -> torch.Tensor:
        """Logits (K, B, classes) of each member on its own batch (a list of K), or all on one batch."""
        if self.k == 1:
            return self.members[0].step_model(images[0] if isinstance(images, list) else images)[None]
        if isinstance(images, list):
            return self.fused_forward(self.stacked, self.buffers, torch.stack(images))
        return self.shared_forward(self.stacked, self.buffers, images)

    @torch.no_grad()
    def regularise_and_clip(self) -> None:
        """Per member, as its own run does: its L1 gradient, the clip of its gradients' total norm to its
        grad_clip (torch.nn.utils.clip_grad_norm_'s rule), then its L2 weight decay (SGD's, after the clip)."""
        if self.k == 1:
            settings = self.members[0].settings
            if settings.l1 > 0:
                add_l1_gradient(self.params, settings.l1)
            if settings.grad_clip is not None:  # null: no clip (the Clothing1M recipe)
                torch.nn.utils.clip_grad_norm_(self.params, settings.grad_clip, foreach=True)
            return  # the weight decay is the member's own SGD's
        # foreach ops over all parameters at once (a few fused kernels, not three per parameter); `shaped`
        # makes views of a (K,) setting that broadcast over each stacked parameter
        grads = [p.grad for p in self.params]
        shaped = lambda values: [per_member(values, p) for p in self.params]  # noqa: E731
        if self.any_l1:
            torch._foreach_add_(grads, torch._foreach_mul(torch._foreach_sign(self.params), shaped(self.l1)))
        # per-member norms have no foreach op: one reduction per parameter, over all but the member dimension
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (parameters, K)
        coef = (self.max_norm / (torch.linalg.vector_norm(norms, dim=0) + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, shaped(coef))
        if self.any_weight_decay:
            torch._foreach_add_(grads, torch._foreach_mul(self.params, shaped(self.weight_decay)))


# ---------------------------------------------------------------------------------------------------
# One epoch: the training step on the device, the evaluation


@dataclass
class TrainingData:
    """The members' training sets on the device: the images once, each member's rows of them (its subset)
    and its labels, all (K, n)."""
    x_train: torch.Tensor  # uint8 (N, C, H, W)
    rows: torch.Tensor
    y_noisy: torch.Tensor
    y_clean: torch.Tensor
    stats: tuple

    def select(self, keep: list[int]) -> "TrainingData":
        return TrainingData(self.x_train, self.rows[keep], self.y_noisy[keep], self.y_clean[keep], self.stats)

    def epoch_batches(self, generators: list, settings: StepSettings, max_steps: int | None = None):
        """Each step's rows of the members' labels (K tensors), their augmented images (K batches), each member
        in the order and with the augmentation drawn from its own generator, made on the device, and the weight
        of the step's loss (across processes, this rank's part of the global batch: jal.distributed.batch_part)."""
        n, batch = self.y_noisy.shape[1], settings.batch_size
        orders = [torch.randperm(n, device=self.y_noisy.device, generator=g) for g in generators]
        for i in batch_starts(n, batch)[:max_steps]:
            idx = [order[i : i + batch] for order in orders]
            part, weight = distributed.batch_part(len(idx[0]))  # alone: the whole batch, weight 1
            images = [training_batch(self.x_train, rows[ix], g, self.stats, settings, part)
                      for rows, ix, g in zip(self.rows, idx, generators)]
            yield [ix[part] for ix in idx], images, weight


def batch_starts(n_train: int, batch_size: int) -> range:
    """Where each batch of an epoch starts; a last batch of a single image is dropped (BatchNorm cannot
    train on one sample)."""
    n_used = n_train - 1 if n_train % batch_size == 1 else n_train
    return range(0, n_used, batch_size)


def training_batch(x_train, idx, generator: torch.Generator, stats, settings: StepSettings,
                   part=slice(None)) -> torch.Tensor:
    """The augmented, normalised images of one training batch, made on the device; across processes, this
    rank's `part` of the global batch, augmented as a whole (the same draws whatever the number of processes)."""
    images = augment(x_train[idx], generator, settings.rotation)[part]
    return normalize(images, stats, settings.channels_last)


def train_step(fusion: Fusion, images: list, targets: list, precision: str, weight: float = 1.0):
    """Forward of all members, each member's loss on its logits, one backward of their sum (the gradients
    stay each member's own; across processes, weighted by this rank's share of the batch, see
    jal.distributed.batch_part), per-member L1 and clip, SGD step; returns logits (K, B, classes) and the
    losses (K,), on the device."""
    with torch.autocast(images[0].device.type, torch.bfloat16, enabled=precision == "bf16"):
        logits = fusion(images)
    losses = [m.criterion(z, y) for m, z, y in zip(fusion.members, logits, targets)]
    fusion.optimizer.zero_grad(set_to_none=True)
    total = torch.stack(losses).sum()
    (total if weight == 1.0 else total * weight).backward()  # of one member: its loss's own gradient, bit for bit
    fusion.regularise_and_clip()
    fusion.optimizer.step()
    return logits, torch.stack(losses)


def train_steps(fusion: Fusion, settings: StepSettings, precision: str, data, generators: list,
                max_steps: int | None = None) -> torch.Tensor:
    """One pass over the training set, in the batches its source makes (TrainingData: arrays on the device;
    jal.real_world.FileTrainingData: image files through DataLoader workers) from each member's generator; returns
    each member's running sums (K, 5): loss, fit to the noisy labels, fit to the clean labels on the clean
    part, the same on the corrupted part, fit to the noisy labels on the corrupted part. Left on the device:
    nothing in the step waits for the host."""
    fusion.set_training(True)
    dtype = fusion.params[0].dtype  # fp32, or fp64: then the losses are summed without float32 rounding
    sums = torch.zeros(fusion.k, 5, dtype=dtype, device=data.y_noisy.device)
    for idx, images, weight in data.epoch_batches(generators, settings, max_steps):
        logits, losses = train_step(fusion, images, [y[ix] for y, ix in zip(data.y_noisy, idx)], precision, weight)
        with torch.no_grad():
            idx = torch.stack(idx)
            noisy, clean = data.y_noisy.gather(1, idx), data.y_clean.gather(1, idx)
            pred, corrupted = logits.argmax(-1), noisy != clean
            fit_noisy, fit_clean = pred == noisy, pred == clean
            sums += torch.stack([losses.detach() * idx.shape[1], fit_noisy.sum(1), (fit_clean & ~corrupted).sum(1),
                                 (fit_clean & corrupted).sum(1), (fit_noisy & corrupted).sum(1)], dim=1).to(dtype)
    return sums


def evaluate(fusion: Fusion, x: torch.Tensor, y: torch.Tensor, stats, settings: StepSettings,
             precision: str) -> torch.Tensor:
    """Number of correct test predictions of each member (K,), in one fused pass, left on the device."""
    fusion.set_training(False)
    correct = torch.zeros(fusion.k, dtype=torch.long, device=x.device)
    batch = settings.eval_batch_size
    with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=precision == "bf16"):
        for i in range(0, len(x), batch):
            images = normalize(x[i : i + batch], stats, settings.channels_last)
            correct += (fusion(images).argmax(-1) == y[i : i + batch]).sum(-1)
    return correct


def evaluate_rows(fusion: Fusion, x_train: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, stats,
                  settings: StepSettings, precision: str) -> torch.Tensor:
    """Number of correct predictions of each member (K,) on its own rows (K, n) of the training images, without
    augmentation, against `labels` (K, n), in one fused pass, left on the device."""
    fusion.set_training(False)
    correct = torch.zeros(fusion.k, dtype=torch.long, device=x_train.device)
    batch = settings.eval_batch_size
    with torch.no_grad(), torch.autocast(x_train.device.type, torch.bfloat16, enabled=precision == "bf16"):
        for i in range(0, rows.shape[1], batch):
            images = [normalize(x_train[r[i : i + batch]], stats, settings.channels_last) for r in rows]
            correct += (fusion(images).argmax(-1) == labels[:, i : i + batch]).sum(-1)
    return correct


@dataclass
class ArraySplits:
    """What an evaluated epoch scores when the runs hold out a validation split of their training images
    (dataset.val_fraction): the test set, shared, and each member's held-out rows of x_train with their given
    labels (by member: a member that diverges leaves the fusion, and its rows with it). In the test set's place in
    the loop, as jal.real_world.FileTests: accuracies in percent, test_acc None without a test set."""
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_train: torch.Tensor
    held_out: dict  # member -> (rows (n,), labels (n,)) on the device

    def __len__(self):
        return len(self.y_test)

    @torch.no_grad()
    def accuracies(self, fusion: Fusion, stats, settings: StepSettings, precision: str) -> list[dict]:
        test = distributed.test_part(len(self.y_test))  # across processes: each rank its part, the counts summed
        rows, labels = (torch.stack(parts) for parts in zip(*(self.held_out[m] for m in fusion.members)))
        val = distributed.test_part(rows.shape[1])
        on_test = evaluate(fusion, self.x_test[test], self.y_test[test], stats, settings, precision)
        on_val = evaluate_rows(fusion, self.x_train, rows[:, val], labels[:, val], stats, settings, precision)
        correct = torch.stack([on_test, on_val])
        n_test, n_val = len(self.y_test), rows.shape[1]
        return [dict(test_acc=100.0 * t / n_test if n_test else None, val_acc=100.0 * v / n_val)
                for t, v in distributed.summed(correct).T.tolist()]


def train_one_epoch(fusion: Fusion, settings: StepSettings, precision: str, data: TrainingData,
                    epoch: int) -> torch.Tensor:
    """One epoch of every member, each in the order, with the augmentation and (for a loss that draws, NLNL)
    the draws of its own epoch's generator; the sums (K, 5) left on the device."""
    generators = [epoch_generator(m.settings.seed, epoch, data.y_noisy.device) for m in fusion.members]
    for m, generator in zip(fusion.members, generators):
        m.criterion.set_generator(generator)
    return train_steps(fusion, settings, precision, data, generators)


def correct_predictions(fusion: Fusion, x_test, y_test, stats, settings: StepSettings, precision: str,
                        epoch: int) -> list:
    """Each member's correct test predictions in the epochs evaluated (every eval_every, and always the last,
    the reported figure), else None for each; across processes each rank evaluates its part of the test set
    and the counts are summed. A real-world run's test splits (jal.real_world.FileTests), and a run's validation
    split beside its test set (ArraySplits), give a dict of accuracies."""
    epochs = settings.epochs
    if (epoch + 1) % settings.eval_every != 0 and epoch + 1 != epochs:
        return [None] * fusion.k
    if hasattr(x_test, "accuracies"):
        return x_test.accuracies(fusion, stats, settings, precision)
    part = distributed.test_part(len(y_test))  # alone: the whole test set
    return distributed.summed(evaluate(fusion, x_test[part], y_test[part], stats, settings, precision)).tolist()
