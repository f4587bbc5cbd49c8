"""A run's progress bar, whole in 80 columns: its short name (jal.experiment.Cell.short_name), the bar, the
epochs, the time and the last test accuracy, e.g. `jal_ce sym0.8 s123 |####    | 57/120 [12:03<13:20, test
64.32%]`; the run's name and its speed per epoch are in its train.log.
"""

BAR_FORMAT = "{desc} |{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def bar_postfix(histories: list[list[dict]]) -> str:
    """The last test accuracy evaluated (of a fusion: the range over its members); '' before there is one."""
    accs = [next((h["test_acc"] for h in reversed(history) if h["test_acc"] is not None), None)
            for history in histories]
    accs = [acc for acc in accs if acc is not None]
    if not accs:
        return ""
    low, high = min(accs), max(accs)
    return f"test {high:.2f}%" if low == high else f"test {low:.2f}-{high:.2f}%"
