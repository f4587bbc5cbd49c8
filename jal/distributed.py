"""Training one run across processes (one per GPU, on one node or several) with PyTorch's
DistributedDataParallel: `torchrun --nproc_per_node=N -m jal.train ...`, or a SLURM job of several tasks
(hydra/launcher=slurm with tasks_per_node = GPUs per node, or srun). One process is the default and, alone,
nothing here does anything: every function below is then the identity or a no-op.

The rules (docs/clusters.md, "Several GPUs for one run"):
- The global batch is trainer.batch_size whatever the number of processes N: each epoch's order is the
  permutation the run's epoch generator draws (the same on every rank, jal.step.train_steps), global batch
  j = order[j*B:(j+1)*B], and rank r trains on batch[r*b//N:(r+1)*b//N] of a batch of b images (B/N each
  when B is a multiple of N; a shorter last batch splits as evenly as it can, each rank's loss weighted by
  its share so that DDP's average of the ranks' gradients is the gradient of the batch's mean loss).
- Every rank augments the whole global batch with the epoch generator, then takes its part: the images of a
  global batch are the same bits whatever N, so a run paused on N processes continues on M.
- DDP averages the gradients; the L1 gradient, the clip and SGD then act on the same numbers on every rank,
  so the ranks' weights stay equal. BatchNorm normalises with each rank's own batch statistics (no SyncBN,
  as the reference's DDP through Lightning Fabric); its running statistics are rank 0's (DDP broadcasts them
  before each forward, and once more at the epoch end, before the evaluation and the checkpoint).
- The epoch's sums and the test set's correct counts are summed over ranks (each rank evaluates a part of
  the test set); rank 0 alone takes the run's lock, reads its checkpoint (sent to every rank) and writes its
  records, labels, checkpoints, train.log and W&B run. A stop (a signal to any rank, trainer.stop_at) is
  agreed on at each epoch end: all ranks pause after the same epoch.
- A fusion of K > 1 runs and a loss that draws random numbers (NLNL) are refused under N > 1.
- A rank whose process ends mid-run (killed, out of memory) stops the others at their next collective: the
  run stopped, it did not fail (PeerLost: no failed record; rank 0 names its last checkpoint, from which the
  same command resumes it). Under Ctrl-C rank 0 alone says where the run stopped.
"""

import atexit
import logging
import os
import pickle
import random
import re
import signal
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from jal.config import ConfigError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Who this process is: torchrun's environment, or SLURM's


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: `gpu[012-015,020],cpu1` -> `gpu012` (scontrol's expansion)."""
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?([^,]*)", nodelist.strip())
    prefix, ranges, suffix = match.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "") + suffix


def launched(env=os.environ) -> dict | None:
    """rank, world_size, local_rank (and, from SLURM, master_addr and master_port) of this process when it is
    one of several training one run, else None. torchrun sets RANK and WORLD_SIZE; under SLURM, a job step of
    several tasks (srun, or submitit's tasks_per_node) sets SLURM_STEP_NUM_TASKS and SLURM_PROCID. A batch
    script's own shell (no step) is one process, whatever SLURM_NTASKS says."""
    if "WORLD_SIZE" in env and "RANK" in env:
        world = dict(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]), local_rank=int(env.get("LOCAL_RANK", 0)))
    elif int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1 and "SLURM_PROCID" in env:
        nodelist = env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"]
        # the port: MASTER_PORT when set, else one of 20000-59999 drawn from the job id (submitit's rule), the
        # same in every task of the job and in its requeued runs
        port = env.get("MASTER_PORT") or random.Random(env.get("SLURM_JOB_ID", "0")).randint(20000, 59999)
        world = dict(rank=int(env["SLURM_PROCID"]), world_size=int(env["SLURM_STEP_NUM_TASKS"]),
                     local_rank=int(env.get("SLURM_LOCALID", 0)),
                     master_addr=env.get("MASTER_ADDR") or first_host(nodelist), master_port=int(port))
    elif env.get("SUBMITIT_EXECUTOR") == "local" and int(env.get("SUBMITIT_LOCAL_NTASKS", 1)) > 1:
        # submitit's local executor (hydra/launcher=local with tasks_per_node > 1): the same path on one machine
        port = env.get("MASTER_PORT") or random.Random(env.get("SUBMITIT_LOCAL_JOB_ID", "0")).randint(20000, 59999)
        world = dict(rank=int(env["SUBMITIT_LOCAL_GLOBALID"]), world_size=int(env["SUBMITIT_LOCAL_NTASKS"]),
                     local_rank=int(env.get("SUBMITIT_LOCAL_LOCALID", 0)), master_addr="127.0.0.1",
                     master_port=int(port))
    else:
        return None
    return world if world["world_size"] > 1 else None


def start(device_type: str, runs: int = 1) -> None:
    """Join the process group once per process when launched as one of several (gloo on a CPU, nccl on CUDA,
    each rank on its local GPU); alone, nothing. `runs`: how many runs this call trains (a fusion's K)."""
    world = launched()
    if world is None:
        return
    if runs > 1:
        raise ConfigError(f"a fusion of {runs} runs cannot train across {world['world_size']} processes: train each "
                          "run with torchrun on its own, or fuse runs in one process per GPU (python -m jal.fuse)")
    if dist.is_initialized():
        return
    if device_type == "cuda":
        torch.cuda.set_device(world["local_rank"] % torch.cuda.device_count())
    if "master_addr" in world:  # SLURM: env:// rendezvous from its variables
        os.environ.setdefault("MASTER_ADDR", world["master_addr"])
        os.environ.setdefault("MASTER_PORT", str(world["master_port"]))
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", init_method="env://",
                            rank=world["rank"], world_size=world["world_size"])
    atexit.register(dist.destroy_process_group)
    if world["rank"] != 0:
        quiet_logging()


def quiet_logging() -> None:
    """On ranks other than 0: no log file (rank 0 writes train.log), warnings and errors only on the console."""
    for logger in [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]:
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
                handler.close()
            else:
                handler.setLevel(max(handler.level, logging.WARNING))


def size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


# ---------------------------------------------------------------------------------------------------
# Rank 0 decides, every rank learns


def _error_to_send(err: BaseException) -> BaseException:
    """The error as it can travel to the other ranks (pickled), else its one line as a RuntimeError."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")


def on_rank_zero(fn: Callable, *args):
    """fn(*args) on rank 0, its value (or its error, raised on every rank) sent to every rank."""
    if size() == 1:
        return fn(*args)
    box = [None]
    if is_main():
        try:
            box[0] = ("value", fn(*args))
        except Exception as err:
            box[0] = ("error", _error_to_send(err))
    try:
        dist.broadcast_object_list(box, src=0)
    except RuntimeError as err:  # another rank's process ended while rank 0 prepared the run: it stopped
        if (lost := lost_peer(err)) is None:
            raise
        raise lost from None
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def rank_zero_first(fn: Callable, *args):
    """fn(*args) on rank 0, then on the other ranks (what rank 0 writes, e.g. labels.npz, they then read and
    check); an error on any rank is raised on every rank."""
    if size() == 1:
        return fn(*args)
    value, error = None, None
    for turn in (True, False):
        if is_main() == turn:
            try:
                value = fn(*args)
            except Exception as err:
                error = err
        errors = [None] * size()
        dist.all_gather_object(errors, None if error is None else _error_to_send(error))
        failed = next(((r, e) for r, e in enumerate(errors) if e is not None), None)
        if failed is not None:
            raise error if error is not None else failed[1]
    return value


def adopt(member) -> None:
    """A Member rank 0 prepared (its checkpoint loaded), made this rank's: its local device, torch's settings
    for it (prepare_member's on rank 0), and, on ranks other than 0, nothing written."""
    from jal.device import set_determinism

    if size() == 1:
        return
    if member.device.type == "cuda":
        member.device = torch.device("cuda", torch.cuda.current_device())
    if not is_main():
        if member.cfg.trainer.threads:
            torch.set_num_threads(member.cfg.trainer.threads)
        set_determinism(member.device, member.cfg.trainer.deterministic)  # cuDNN's and torch's, per process
        member.writes = False


# ---------------------------------------------------------------------------------------------------
# The training step across ranks


def check_batches(batch_size: int, n_train: int, world_size: int) -> None:
    """The global batch must split over the processes: B a multiple of N, and a last batch (of n mod B
    images; one image alone is dropped, jal.step.batch_starts) of at least N images."""
    if world_size == 1:
        return
    if batch_size % world_size:
        raise ConfigError(f"trainer.batch_size={batch_size} cannot be split over {world_size} processes: use a "
                          f"multiple of {world_size} or another number of processes")
    last = n_train % batch_size
    if 1 < last < world_size:
        raise ConfigError(f"the last batch of an epoch ({n_train} training images, trainer.batch_size={batch_size}) "
                          f"holds {last} images, fewer than the {world_size} processes: train on {n_train - last} or "
                          "more images, or use fewer processes")


def draws_random_numbers(criterion: torch.nn.Module) -> bool:
    """A loss that draws from the epoch generator in its step (NLNL's complementary labels) draws for its
    rank's part of the batch, which would make the run depend on the number of processes."""
    return any(getattr(m, "draws_random_numbers", False) for m in criterion.modules())


class DistributedStep(DistributedDataParallel):
    """DDP around the model the training step calls; without gradients (the evaluation) the rank's own model,
    so that ranks evaluating different numbers of batches run no collective."""

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.module(*args, **kwargs)
        return super().forward(*args, **kwargs)


def wrap(members: list, n_train: int) -> None:
    """Under N > 1 processes: refuse what cannot be split, and wrap the model the step calls in DDP (which
    sends rank 0's weights and buffers to every rank)."""
    if size() == 1:
        return
    m = members[0]  # one run: jal.distributed.start refuses a fusion
    check_batches(m.cfg.trainer.batch_size, n_train, size())
    if draws_random_numbers(m.criterion):
        raise ConfigError(f"loss {type(m.criterion).__name__} draws random numbers per sample (NLNL): its draws would "
                          f"depend on the number of processes; train it in one process")
    device_ids = [m.device] if m.device.type == "cuda" else None
    m.step_model = DistributedStep(m.step_model, device_ids=device_ids)
    if is_main():
        log.info("training across %d processes (DistributedDataParallel, %s): global batch %d, %d per process",
                 size(), dist.get_backend(), m.cfg.trainer.batch_size, m.cfg.trainer.batch_size // size())


def batch_part(b: int, r: int | None = None, n: int | None = None) -> tuple[slice, float]:
    """Rank r's part of a global batch of b images split over n processes (default: this process's), and the
    weight of its mean loss (1 when the ranks' parts are equal): DDP averages the ranks' gradients, so weight
    n_r * N / b makes that average the gradient of the mean over the whole batch."""
    n, r = size() if n is None else n, rank() if r is None else r
    if n == 1:
        return slice(None), 1.0
    part = slice(r * b // n, (r + 1) * b // n)
    share = part.stop - part.start
    return part, 1.0 if share * n == b else share * n / b


def test_part(n_test: int) -> slice:
    """This rank's part of the test set (the counts are then summed over ranks)."""
    n, r = size(), rank()
    return slice(r * n_test // n, (r + 1) * n_test // n)


def summed(values):
    """A tensor, or a list of ints or Nones (one per member), summed over ranks (as is when alone)."""
    if size() == 1:
        return values
    if isinstance(values, torch.Tensor):
        dist.all_reduce(values)
        return values
    if all(v is None for v in values):
        return values
    total = torch.tensor(values, dtype=torch.long, device=_collective_device())
    dist.all_reduce(total)
    return total.tolist()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sync_buffers(members: list) -> None:
    """Rank 0's BatchNorm running statistics on every rank: the evaluation and the checkpoint use them."""
    if size() == 1:
        return
    for m in members:
        for buffer in m.model.buffers():
            dist.broadcast(buffer, src=0)


# What a collective raises when another rank's process has ended: gloo's closed or reset connection, NCCL's
# remote error (with a dead peer NCCL may instead wait for its timeout, whose watchdog then ends the process).
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
             "remote process exited or there was a network error")


class PeerLost(KeyboardInterrupt):
    """Another rank's process ended: this rank stops as after Ctrl-C (nothing a run catches as its error, no
    failed record: its last checkpoint resumes it), and its command exits with status 1."""
    exit_status = 1

    def __init__(self, error: str):
        super().__init__(error)
        self.cause = f"another rank's process ended: {error}"
        self.how = f"stopped ({self.cause})"  # jal.stops.no_run_line


def where_stopped(err: KeyboardInterrupt, where: str) -> str | None:
    """What this rank says of a run stopped at once, `where` being rank 0's words for its last checkpoint: rank 0
    says where, and why when the stop has a cause (a second SIGTERM, a lost rank); another rank, which writes
    no checkpoint, only that it lost a peer when it did, else nothing."""
    cause = f" ({err.cause})" if getattr(err, "cause", None) else ""
    if is_main():
        return where + cause
    if isinstance(err, PeerLost):
        return f"stopped on rank {rank()}{cause}: rank 0 keeps its last checkpoint, the same command resumes it"
    return None


def lost_peer(err: BaseException) -> PeerLost | None:
    """The PeerLost that `err` is, when it is a collective's error after another rank's process ended."""
    if size() == 1 or not isinstance(err, RuntimeError):
        return None
    text = str(err)
    found = next((gone for gone in PEER_GONE if gone in text), None)
    if found is None:
        return None
    # gloo's line: `[.../pair.cc:561] Connection closed by peer [127.0.0.1]:55451. This is typically ...`
    said = text[text.index(found):].split(". ")[0].rstrip(".")
    return PeerLost(f"{dist.get_backend()}: {said}")


def agreed_stop(reason: str | None, received: int | None) -> tuple[str | None, int | None]:
    """Whether to pause now, agreed by all ranks: the first rank's reason that has one (another rank's named
    so), or None; and the stop signal this rank received (jal.stops.StopSignals.first), else another rank's, so that
    rank 0 hands it on to the launcher (submitit requeues the job from rank 0)."""
    if size() == 1:
        return reason, received
    reasons = [None] * size()
    dist.all_gather_object(reasons, (reason, received))
    stopping = [(r, why) for r, (why, _) in enumerate(reasons) if why is not None]
    signals = [signal.Signals(sig) for _, sig in reasons if sig is not None]
    received = received if received is not None else (signals[0] if signals else None)
    if not stopping:
        return None, received
    r, why = stopping[0]
    return (why if r == 0 else f"{why} (on rank {r})"), received
