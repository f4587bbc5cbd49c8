"""A run's progress bar, whole in 80 columns: its short name (jal.experiment.Cell.short_name), the bar, the
epochs, the time, the time left and the last test accuracy, e.g. `jal_ce sym0.8 s123 |####    | 57/120 [12:03,
ETA 13 min, test 64.32%]`; the run's name and its speed per epoch are in its train.log. The time left is
jal.estimate's, at the pace of the run's epochs, as a sweep's progress lines give theirs.
"""

from jal.estimate import eta, history_pace
from jal.util import duration

BAR_FORMAT = "{desc} |{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def bar_postfix(histories: list[list[dict]], work: list[float]) -> str:
    """The time left at the pace of the epochs so far (`work`: jal.estimate.work_left_after_each_epoch; the
    members of a fusion train each epoch together) and the last test accuracy evaluated (of a fusion: the range
    over its members); '' before the first epoch."""
    parts = []
    done, seconds = history_pace(histories[0], work)
    left = work[min(len(histories[0]), len(work) - 1)]
    if left > 0 and (seconds_left := eta(done, left, seconds)) is not None:
        parts.append(f"ETA {duration(seconds_left)}")
    accs = [next((h["test_acc"] for h in reversed(history) if h["test_acc"] is not None), None)
            for history in histories]
    accs = [acc for acc in accs if acc is not None]
    if accs:
        low, high = min(accs), max(accs)
        parts.append(f"test {high:.2f}%" if low == high else f"test {low:.2f}-{high:.2f}%")
    return ", ".join(parts)
