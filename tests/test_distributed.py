"""One run across processes (jal/distributed.py): DistributedDataParallel over 2 CPU processes (gloo) trains to
the weights one process trains with the same global batch; rank 0 alone writes; a stop signal to one rank
pauses all after the same epoch; a paused run continues on 2 processes to the uninterrupted result and on 1
process to the one-process result; `torchrun --nproc_per_node=2 -m jal.train` gives the one-process result.

Why a tolerance, and which. The model (conftest.TinyNet) has no BatchNorm, so a rank's step is a function of
its samples alone, and every rank sees exactly the images and labels one process sees (the global batch is
augmented whole, then split). What differs is the order of floating-point sums: one process averages the
loss over B = 16 samples; two average over 8 each and DDP averages the two gradients (and the last batch of
5 splits 2 + 3, each mean weighted by its share). In fp64 (unit roundoff 1.1e-16) a reordered sum of 16
terms of size <= 1 differs by at most ~16 ulp ~ 2e-15, so one step's update (lr 0.1 times gradients below the
clip of 5) differs by < 1e-15; 15 steps of SGD with momentum 0.9 amplify a perturbation by at most
(1 + lr * L + 0.9)^15 for a curvature L of a few units here, so well below 1e-12 (measured: ~3e-17). A real
fault moves the weights by at least one sample's share of one update, ~lr * |grad| / B ~ 1e-3 (a rank on a
wrong slice, gradients summed instead of averaged, a missing all-reduce or resume broadcast); the test also
checks that training moved the weights by far more than the tolerance. BatchNorm nets (CNN8, ResNet) differ
by design: each rank normalises with its own batch statistics (docs/clusters.md).
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import REPO, compose_train

from jal import distributed
from jal import run as jal_run
from jal import stops as jal_stops
from jal import train as jal_train
from jal.config import ConfigError

TOLERANCE = 1e-12  # fp64 weights of size ~0.2: see the module's docstring
SETTINGS = ["dataset=synthetic", "logger=none", "trainer.progress=false", "trainer.device=cpu", "trainer.threads=1",
            "trainer.precision=fp64", "model._target_=conftest.TinyNet", "loss=ce", "optim.lr=0.1",
            "loss._target_=conftest.CEThatSignalsRank1", "dataset.train_size=69", "dataset.test_size=32",
            "trainer.batch_size=16", "trainer.epochs=3"]  # 69 = 4 batches of 16 and one of 5 (split 2 + 3)


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def assert_close_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=atol, msg=f"{name}: {a} vs {b}")


def history(record: dict) -> list:
    return [{k: v for k, v in h.items() if k not in ("images_per_second", "seconds")} for h in record["history"]]


def assert_same_history(a: dict, b: dict) -> None:
    """The same epochs: counts and lr equal, the loss within the tolerance (summed in another order)."""
    for ha, hb in zip(history(a), history(b), strict=True):
        assert ha.pop("train_loss") == pytest.approx(hb.pop("train_loss"), rel=TOLERANCE)
        assert ha == hb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_trains(rank: int, world: int, port: int, jobs: list, out: str) -> None:
    """One rank (a spawned process): train the jobs in turn in one process group; write what it saw."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import conftest

    saved, synced, save = [], [], jal_run.save_checkpoint
    jal_run.save_checkpoint = lambda run_dir, state: (saved.append(state["epoch"]), save(run_dir, state))[1]
    end_epoch = jal_run.end_epoch

    def end_epoch_noting_weights(m, epoch, *args):  # this rank's weights (and buffers) after each epoch
        digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in m.model.state_dict().values()))
        synced.append([epoch + 1, digest.hexdigest()])
        return end_epoch(m, epoch, *args)

    jal_train.end_epoch = end_epoch_noting_weights
    seen = {}
    for name, cfg, run_dir, signal_at in jobs:
        conftest.CEThatSignalsRank1.at_call = signal_at
        saved.clear(), synced.clear()
        result = jal_train.train(cfg, run_dir, jal_stops.StopSignals())  # each run its own: no signal outlives it
        seen[name] = dict(status=result.status.value, epoch=result.epoch, reason=result.reason,
                          saved=list(saved), synced=list(synced))
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[dict, Path]:
    """The uninterrupted one-process run: the result each run across processes is held to."""
    root = tmp_path_factory.mktemp("one")
    return jal_train.train(compose_train(SETTINGS + [f"out_root={root}"]), root / "one").to_json(), root / "one"


@pytest.mark.full  # two processes
def test_two_processes_train_pause_on_one_ranks_signal_and_resume_on_two_or_one(tmp_path, one_process):
    one, one_dir = one_process
    cfg = compose_train(SETTINGS + [f"out_root={tmp_path}"])
    paused_cfg = compose_train(SETTINGS + [f"out_root={tmp_path}", "trainer.pause_after=1"])
    jobs = [("uninterrupted", cfg, tmp_path / "u2", None),
            ("signalled", cfg, tmp_path / "s2", 7),  # rank 1 alone gets SIGUSR1 in epoch 2 (5 steps an epoch)
            ("continued", cfg, tmp_path / "s2", None),  # the same command again, on 2 processes
            ("paused", paused_cfg, tmp_path / "p2", None)]
    ranks = mp.spawn(rank_trains, args=(2, free_port(), jobs, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240  # a rank left waiting in a collective would wait for gloo's 30 minutes
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the ranks did not finish in 240 s (one waits for the other in a collective)")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # the same weights as one process, and on both ranks after every epoch (resumed ones included)
    uninterrupted = json.loads((tmp_path / "u2" / "result.json").read_text())
    assert_close_weights(tmp_path / "u2", one_dir, TOLERANCE)
    assert_same_history(uninterrupted, one)
    moved = max((w - w0).abs().max().item() for w, w0 in zip(weights(one_dir).values(), initial_weights().values()))
    assert moved > 1e-2, moved  # training moved the weights 10^10 times the tolerance: a real test
    for name in ("uninterrupted", "signalled", "continued", "paused"):
        assert ranks[0][name]["synced"] == ranks[1][name]["synced"], name
    # rank 0 alone saved checkpoints, one per epoch (train.log: the torchrun test)
    assert ranks[0]["uninterrupted"]["saved"] == [1, 2, 3] and ranks[1]["uninterrupted"]["saved"] == []

    # SIGUSR1 to rank 1 in epoch 2: both ranks pause after epoch 2, rank 0's record names where it came from
    for r in (0, 1):
        assert ranks[r]["signalled"]["status"] == "paused" and ranks[r]["signalled"]["epoch"] == 2
        assert ranks[r]["signalled"]["saved"] == ([1, 2] if r == 0 else [])
    assert ranks[0]["signalled"]["reason"] == "SIGUSR1 (on rank 1)"  # its paused record's (then continued)
    # continued on 2 processes: bit for bit the uninterrupted run on 2 processes
    assert ranks[0]["continued"]["status"] == "finished" and ranks[0]["continued"]["saved"] == [3]
    assert_close_weights(tmp_path / "s2", tmp_path / "u2", 0)
    assert history(json.loads((tmp_path / "s2" / "result.json").read_text())) == history(uninterrupted)

    # paused on 2 processes after epoch 1, continued in 1 process: the one-process result
    assert ranks[0]["paused"]["status"] == "paused" and ranks[0]["paused"]["epoch"] == 1
    continued = jal_train.train(cfg, tmp_path / "p2")
    assert continued.status == "finished"
    assert_close_weights(tmp_path / "p2", one_dir, TOLERANCE)
    assert_same_history(continued.to_json(), one)


def initial_weights() -> dict:
    torch.manual_seed(123)  # the run's seed: build_member's initialisation
    import conftest

    return {k: v.double() for k, v in conftest.TinyNet(10).state_dict().items()}


# torchrun's runs: their loss sends the signals $JAL_TEST_SIGNALS names (conftest.CEThatSignalsAsTold), plain CE
# without it
TORCHRUN = [s for s in SETTINGS if not s.startswith("loss._target_")] + ["loss._target_=conftest.CEThatSignalsAsTold"]


def torchrun(out_root: Path, log_dir: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=2 -m jal.train TORCHRUN out_root=...`; with `log_dir`, each rank's output in
    its own files there (rank_output)."""
    logs = ["--log-dir", str(log_dir), "--redirects", "3"] if log_dir else []
    path = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", *logs, "-m",
                           "jal.train", *TORCHRUN, f"out_root={out_root}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, **env))


def rank_output(log_dir: Path, rank: int) -> str:
    """What rank `rank` printed (stdout and stderr), from torchrun's --log-dir."""
    return "".join(p.read_text() for name in ("stdout.log", "stderr.log")
                   for p in log_dir.glob(f"*/attempt_0/{rank}/{name}"))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The uninterrupted torchrun run on 2 processes."""
    root = tmp_path_factory.mktemp("torchrun")
    return torchrun(root), root / compose_train(TORCHRUN + [f"out_root={root}"]).run_name


@pytest.mark.full  # torchrun
def test_torchrun_two_processes_give_the_one_process_result(two_processes, one_process):
    (one, one_dir), (done, run_dir) = one_process, two_processes
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "finished"
    assert_close_weights(run_dir, one_dir, TOLERANCE)
    assert_same_history(record, one)
    log = (run_dir / "train.log").read_text()  # rank 0's lines alone, each once
    assert [log.count(f"epoch {e}/3:") for e in (1, 2, 3)] == [1, 1, 1]
    assert "training across 2 processes (DistributedDataParallel, gloo): global batch 16, 8 per process" in log
    assert (done.stdout + done.stderr).count("finished: test accuracy") == 1  # rank 0's closing line alone


@pytest.mark.full  # python -m torch.distributed.run
def test_torchrun_a_rank_killed_mid_run_stops_it_and_the_same_command_resumes_it(tmp_path, two_processes):
    """Rank 1 killed (SIGKILL) at its 7th step, in epoch 2: rank 0 loses its peer in the step's all-reduce. The
    run stopped, it did not fail: no `failed` record, one line from rank 0 naming its checkpoint of epoch 1
    (exit 1, then torchrun's own report of the killed rank); the same command resumes it to the uninterrupted
    run's history and weights, bit for bit. Before: rank 0 wrote a failed record with gloo's error."""
    killed = torchrun(tmp_path, tmp_path / "logs", JAL_TEST_SIGNALS="7:SIGKILL@1")
    run_dir = tmp_path / compose_train(TORCHRUN + [f"out_root={tmp_path}"]).run_name
    said = rank_output(tmp_path / "logs", 0)
    assert killed.returncode != 0 and not (run_dir / "result.json").exists(), said
    line = re.compile(r"interrupted after its checkpoint of epoch 1/3: the same command resumes it from there "
                      r"\(another rank's process ended: gloo: Connection (closed|reset) by peer[^)]*\)$")
    assert [bool(line.search(s)) for s in said.splitlines() if "interrupted" in s] == [True], said
    assert "Traceback" not in said and "failed" not in said and not rank_output(tmp_path / "logs", 1)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1

    resumed = torchrun(tmp_path)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout + resumed.stderr, resumed.stderr[-3000:]
    record, uninterrupted = (json.loads((d / "result.json").read_text()) for d in (run_dir, two_processes[1]))
    assert record["status"] == "finished" and history(record) == history(uninterrupted)
    assert_close_weights(run_dir, two_processes[1], 0)


@pytest.mark.full  # python -m torch.distributed.run
def test_torchrun_ctrl_c_rank_0_alone_says_where_the_run_stopped(tmp_path):
    """Ctrl-C in the terminal reaches torchrun, which hands it on to each rank (here: sent to torchrun from rank
    1's 7th step, in epoch 2). Before: each rank said where the run stopped, rank 1 wrongly (it writes no
    checkpoint): "before its first checkpoint"."""
    torchrun(tmp_path, tmp_path / "logs", JAL_TEST_SIGNALS="7:SIGINT@1:parent")
    run_dir = tmp_path / compose_train(TORCHRUN + [f"out_root={tmp_path}"]).run_name
    epoch = torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]  # 1, or 2 if torchrun was slow
    said = [rank_output(tmp_path / "logs", r) for r in (0, 1)]
    assert [s for s in said[0].splitlines() if "interrupted" in s][0].endswith(
        f"interrupted after its checkpoint of epoch {epoch}/3: the same command resumes it from there"), said[0]
    assert said[0].count("interrupted") == 1 and "Traceback" not in said[0] and not said[1], said
    assert not (run_dir / "result.json").exists()


# ---------------------------------------------------------------------------------------------------
# The rules, without processes


@pytest.mark.parametrize("n, b", [(2, 16), (2, 5), (3, 16), (4, 7), (8, 256), (8, 9)])
def test_batch_parts_tile_the_batch_and_their_weighted_mean_is_the_batch_mean(monkeypatch, n, b):
    monkeypatch.setattr(distributed, "size", lambda: n)
    losses = torch.rand(b, dtype=torch.float64, generator=torch.Generator().manual_seed(b))
    parts, ddp_average = [], 0.0
    for r in range(n):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        part, weight = distributed.batch_part(b)
        parts += range(b)[part]
        ddp_average += weight * losses[part].mean().item() / n  # DDP averages the ranks' (weighted) gradients
        assert (weight == 1.0) == (b % n == 0)
    assert parts == list(range(b))  # each sample on exactly one rank, in order
    assert ddp_average == pytest.approx(losses.mean().item(), rel=1e-14)


def test_one_process_takes_the_whole_batch():
    assert distributed.size() == 1 and distributed.batch_part(16) == (slice(None), 1.0)
    assert distributed.launched({}) is None and distributed.launched({"WORLD_SIZE": "1", "RANK": "0"}) is None


def test_batches_that_cannot_be_split_fail_in_one_line():
    distributed.check_batches(256, 50_000, 8)  # 50000 = 195 * 256 + 80: 10 per process in the last batch
    distributed.check_batches(128, 50_001, 2)  # a last batch of 1 is dropped anyway (jal.step.batch_starts)
    with pytest.raises(ConfigError, match=r"^trainer.batch_size=100 cannot be split over 8 processes: use a multiple"):
        distributed.check_batches(100, 50_000, 8)
    with pytest.raises(ConfigError, match=r"holds 3 images, fewer than the 4 processes"):
        distributed.check_batches(16, 35, 4)


@pytest.mark.full  # trains
def test_a_loss_that_draws_random_numbers_is_refused_across_processes(synthetic_run):
    import hydra

    draws = {loss: distributed.draws_random_numbers(hydra.utils.instantiate(synthetic_run(f"loss={loss}").loss))
             for loss in ("nlnl", "ce", "jal_ce", "nce_rce")}
    assert draws == dict(nlnl=True, ce=False, jal_ce=False, nce_rce=False)


def test_a_fusion_is_refused_across_processes(monkeypatch):
    monkeypatch.setattr(distributed, "launched", lambda env=None: dict(rank=0, world_size=2, local_rank=0))
    with pytest.raises(ConfigError, match=r"^a fusion of 3 runs cannot train across 2 processes"):
        distributed.start("cpu", runs=3)


def test_the_ranks_come_from_torchrun_or_a_slurm_job_step():
    torchrun = dict(RANK="3", WORLD_SIZE="8", LOCAL_RANK="3", SLURM_PROCID="0", SLURM_STEP_NUM_TASKS="1")
    assert distributed.launched(torchrun) == dict(rank=3, world_size=8, local_rank=3)
    step = dict(SLURM_JOB_ID="4242", SLURM_PROCID="5", SLURM_LOCALID="1", SLURM_STEP_NUM_TASKS="8",
                SLURM_NTASKS="8", SLURM_STEP_NODELIST="gpu[012-015,020]", SLURM_JOB_NODELIST="gpu[012-015,020]")
    world = distributed.launched(step)
    assert {k: world[k] for k in ("rank", "world_size", "local_rank", "master_addr")} == dict(
        rank=5, world_size=8, local_rank=1, master_addr="gpu012")
    assert 20000 <= world["master_port"] < 60000 and world == distributed.launched(dict(step, SLURM_PROCID="5"))
    assert distributed.launched(dict(step, MASTER_PORT="29400"))["master_port"] == 29400
    # a batch script's own shell is one process, whatever the allocation's SLURM_NTASKS
    assert distributed.launched(dict(SLURM_JOB_ID="1", SLURM_PROCID="0", SLURM_NTASKS="8")) is None
    assert [distributed.first_host(h) for h in ("node7", "a[1-3],b2", "gpu-[09,11]-ib", "x[003]")] == [
        "node7", "a1", "gpu-09-ib", "x003"]
