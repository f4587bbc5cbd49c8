"""The likely-mislabelled samples of a finished run: `jal-mislabelled RUN_DIR`.

    jal-mislabelled outputs/cifar10/symmetric_0.4/jal_ce/seed123 --top 20
    jal-mislabelled RUN_DIR --method cleanlab --out issues.csv        # pip install -e '.[cleanlab]'

A finished run writes predictions.npz beside its record (jal.run.write_predictions, once, after its last epoch):
for each sample of its training set, in labels.npz's order, the class its model predicts, the probability it gives
the sample's given label, the run's loss on it and its class probabilities (float16), computed in eval mode without
augmentation, in batches on the device. This command lists the samples whose given label the model most
disbelieves, as CSV (stdout, or --out): rank, index (the sample's row in the dataset), given, predicted, score =
1 - p(given label), and held_out where the run held out a noisy validation split (those predictions are out of
sample). `--method disagree` (default) lists the samples whose predicted class is not their given label, the most
disbelieved first; `--method cleanlab` those cleanlab's find_label_issues flags from the class probabilities
(confident learning), ranked by the same score. The probabilities are in-sample, not cross-validated: a model
that has memorised a wrong label believes it, so the flagged set shrinks as training memorises (docs/your-data.md).
"""

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

PREDICTIONS = "predictions.npz"
COLUMNS = ("rank", "index", "given", "predicted", "score")


# ---------------------------------------------------------------------------------------------------
# Written by a finished run


def predictions(model, criterion, x_train, rows: np.ndarray, given: np.ndarray, stats, settings,
                precision: str) -> dict:
    """The arrays of predictions.npz for the training images `x_train[rows]` (uint8 NCHW, on the device) with
    their given labels: one pass of the model in eval mode, without augmentation, eval_batch_size at a time.
    `settings`: the run's jal.step.StepSettings (its seed, epochs, eval_batch_size and channels_last)."""
    import torch

    from jal.data import epoch_generator, normalize

    device, batch = x_train.device, settings.eval_batch_size
    rows_on_device, labels = torch.as_tensor(rows, device=device), torch.as_tensor(given, device=device)
    # a loss that draws (NLNL's complementary labels) draws from a generator of its own: the same file every time
    criterion.set_generator(epoch_generator(settings.seed, settings.epochs, device))
    was_training, parts = model.training, []
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch):
                images = normalize(x_train[rows_on_device[start : start + batch]], stats, settings.channels_last)
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    logits = model(images)
                logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
                y = labels[start : start + batch]
                p = logits.softmax(-1)
                parts.append((p, p.argmax(-1), p.gather(1, y[:, None])[:, 0], criterion.per_sample(logits, y)))
    finally:
        model.train(was_training)
    p, predicted, p_given, loss = (torch.cat(column).cpu().numpy() for column in zip(*parts))
    return dict(index=np.asarray(rows, np.int64), given=np.asarray(given, np.int64),
                predicted=predicted.astype(np.int64), p_given=p_given.astype(np.float32),
                loss=loss.astype(np.float32), probabilities=p.astype(np.float16))


# ---------------------------------------------------------------------------------------------------
# Read by jal-mislabelled


class NoPredictions(ValueError):
    """A run directory without usable predictions: one line naming it and what to do."""


def read_predictions(run_dir: Path) -> dict[str, np.ndarray]:
    """predictions.npz of a finished run, its arrays, with `held_out` (the noisy validation split's rows, from
    labels.npz's val_indices; none held out without it). Refused in one line where the run is not finished or the
    file is not of the experiment its record holds."""
    from jal import record as records
    from jal.data import DataError, read_npz

    run_dir = Path(run_dir)
    status, record = records.status(run_dir)
    path = run_dir / PREDICTIONS
    if status != records.Status.FINISHED:
        raise NoPredictions(f"{run_dir} holds no finished run ({status}): a run writes {PREDICTIONS} when it "
                            "finishes; finish it first (the same command that trained it continues it)")
    if not path.exists():
        raise NoPredictions(f"{run_dir} has no {PREDICTIONS}: runs finished before it was written have none; train "
                            "the run again with trainer.restart=true, or pass the run's directory of a newer run")
    try:
        arrays = read_npz(path)
    except DataError as err:
        raise NoPredictions(str(err)) from None
    if str(arrays.get("fingerprint", "")) != (record.fingerprint or ""):
        raise NoPredictions(f"{path} is of another experiment than {run_dir / records.RESULT} (fingerprint "
                            f"{arrays.get('fingerprint', 'none')}, the record's {record.fingerprint}): train the run "
                            "again with trainer.restart=true")
    held_out = np.zeros(len(arrays["given"]), bool)
    labels = run_dir / "labels.npz"
    if labels.exists() and "val_indices" in (saved := read_npz(labels)):
        held_out[saved["val_indices"]] = True
    return arrays | {"held_out": held_out}


def score(arrays: dict) -> np.ndarray:
    """How much the model disbelieves each sample's given label: 1 - p(given label), from 0 to 1."""
    return 1.0 - arrays["p_given"].astype(np.float64)


def flagged(arrays: dict, method: str = "disagree") -> np.ndarray:
    """The positions (labels.npz's order) of the samples flagged as likely mislabelled, the most disbelieved
    first (ties: in training-set order)."""
    if method == "disagree":
        chosen = np.flatnonzero(arrays["predicted"] != arrays["given"])
    elif method == "cleanlab":
        try:
            from cleanlab.filter import find_label_issues
        except ImportError:
            raise NoPredictions("--method cleanlab needs cleanlab: pip install -e '.[cleanlab]' (or pip install "
                                "cleanlab)") from None
        probabilities = arrays["probabilities"].astype(np.float64)
        probabilities /= probabilities.sum(1, keepdims=True)  # float16 rows sum to 1 within ~1e-3
        chosen = np.flatnonzero(find_label_issues(arrays["given"], probabilities))
    else:
        raise NoPredictions(f"--method {method}: choose disagree or cleanlab")
    order = np.lexsort((chosen, -score(arrays)[chosen]))  # score descending, then position
    return chosen[order]


def rows(arrays: dict, method: str = "disagree", top: int | None = None) -> list[dict]:
    """The CSV's rows: the flagged samples, most disbelieved first, at most `top`."""
    positions = flagged(arrays, method)[:top]
    scores, held = score(arrays), arrays["held_out"]
    listed = []
    for rank, i in enumerate(positions, 1):
        row = dict(rank=rank, index=int(arrays["index"][i]), given=int(arrays["given"][i]),
                   predicted=int(arrays["predicted"][i]), score=f"{scores[i]:.4f}")
        if held.any():
            row["held_out"] = int(held[i])
        listed.append(row)
    return listed


def write_csv(listed: list[dict], out, held_out: bool) -> None:
    writer = csv.DictWriter(out, fieldnames=COLUMNS + (("held_out",) if held_out else ()), lineterminator="\n")
    writer.writeheader()
    writer.writerows(listed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's directory (it holds result.json and "
                        f"{PREDICTIONS})")
    parser.add_argument("--method", default="disagree", choices=("disagree", "cleanlab"),
                        help="disagree: predicted class != given label (default); cleanlab: find_label_issues")
    parser.add_argument("--top", type=int, default=None, help="list at most this many (default: every one flagged)")
    parser.add_argument("--out", type=Path, default=None, help="write the CSV here instead of to stdout")
    args = parser.parse_args(argv)
    try:
        arrays = read_predictions(args.run_dir)
        listed = rows(arrays, args.method, args.top)
    except (NoPredictions, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.out is None:
        write_csv(listed, sys.stdout, bool(arrays["held_out"].any()))
        return
    from jal.util import atomic_write_text

    text = io.StringIO()
    write_csv(listed, text, bool(arrays["held_out"].any()))
    atomic_write_text(args.out, text.getvalue())
    print(f"{len(listed)} of {len(arrays['given'])} training samples flagged ({args.method}) -> {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
