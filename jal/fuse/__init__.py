"""Fused runs, K runs trained as one network: `python -m jal.fuse --fuse K <overrides>`.

    python -m jal.fuse --fuse 8 dataset=cifar10 loss=ce,jal_ce noise=symmetric noise.rate=0.4,0.8 seed=123,124
    python -m jal.fuse --fuse 8 hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 <overrides>
    python -m jal.fuse --fuse 8 hydra/launcher=slurm hydra.launcher.partition=a100 <overrides>

takes the runs `python -m jal.train -m <overrides>` would train (jal.multirun.plan_runs: the same directories,
the same configs), skips the finished ones and groups the others into fusions of at most K runs that can
train together (jal.multirun.fusions: the same fixed settings, the same epoch reached). Each fusion trains as
one network (jal.train.train_fusion), launched as the overrides' Hydra launcher launches a plain sweep's runs:

- basic (the default): one fusion after another in this process;
- joblib (hydra/launcher=joblib): fusions side by side, hydra.launcher.n_jobs at a time, each in its own
  worker process (joblib's loky backend, as hydra-joblib-launcher uses) with trainer.threads torch threads;
- submitit (hydra/launcher=slurm, or local for the same code path on this machine): one fusion per task of
  a SLURM job array, submitted with the launcher config's partition, time limit, GPUs, CPUs and memory
  (configs/hydra/launcher/), as hydra-submitit-launcher submits them. A task that SLURM signals before its
  time limit, or preempts, pauses its fusion at the next epoch end and is requeued; the requeued task
  continues the fusion from its members' checkpoints.

Where a fusion trains, it prints a line per fusion epoch (the epoch's time and the fusion's ETA), and each
member's train.log gets its lines as a run alone's Hydra job logging writes them (its epoch lines, its
precision, resuming and pausing). This process prints a line per member as its fusion ends, with the sweep's
ETA, and a closing summary. Each member writes the files a run alone writes; a stop signal or
trainer.stop_at pauses the fusion at an epoch end, and the same command continues it.
"""

# Its parts: command.py (the command: plan, launch, summary), tasks.py (a fusion as a launcher runs it, the
# launch paths), logs.py (each member's train.log and the fusion's epoch lines), rejoin.py (members a kill
# left an epoch apart brought back to their common epoch). The step trains any fusion: jal.step.Fusion.
