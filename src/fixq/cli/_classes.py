"""Class ids from a model output: the argmax of several scores, a threshold on a single column."""
import click
import numpy as np

RULES = {
    "argmax": "class = argmax of the {columns} scores",
    "probability": "one column, every value in [0, 1]: read as a probability, class 1 where it is > 0.5",
    "logit": "one column, values outside [0, 1]: read as a logit, class 1 where it is > 0",
}


def classes(columns):
    """How many classes an output with `columns` columns decides between (one column: two)."""
    return columns if columns > 1 else 2


class ClassIds:
    """The class ids of one output ``[N, columns]``, fed batch by batch with :meth:`add`.

    Several columns: the argmax, first index on ties (numpy's).  One column (binary, logistic): class 1
    where a probability is > 0.5 or a logit is > 0 (scikit-learn's ``predict``, PyTorch's
    ``BCEWithLogitsLoss`` convention); a probability when every value seen lies in [0, 1], as a
    sigmoid's output does, a logit otherwise.  Which one is known only after the last batch, so the
    single column is kept until :meth:`ids`."""

    def __init__(self, columns):
        self.columns = columns
        self._parts = []
        self._lo, self._hi = np.inf, -np.inf

    def add(self, y):
        if self.columns > 1:
            self._parts.append(np.argmax(y, axis=1))
            return
        col = np.array(y[:, 0], dtype=np.float32)
        self._parts.append(col)
        if col.size:
            self._lo, self._hi = min(self._lo, float(col.min())), max(self._hi, float(col.max()))

    def rule(self):
        """``"argmax"``, ``"probability"`` or ``"logit"`` (a key of :data:`RULES`)."""
        if self.columns > 1:
            return "argmax"
        return "probability" if 0.0 <= self._lo and self._hi <= 1.0 else "logit"

    def ids(self, rule=None):
        """int64 class ids of every sample added, by `rule` (default: :meth:`rule`)."""
        rule = rule or self.rule()
        v = np.concatenate(self._parts) if self._parts else np.zeros(0, np.int64)
        if rule == "argmax":
            return v.astype(np.int64)
        return (v > (0.5 if rule == "probability" else 0.0)).astype(np.int64)


def describe(rule, columns):
    return RULES[rule].format(columns=columns)


def report_run(outputs, ids, output, n, quiet):
    """What `fixq run` says on stderr when done: each one-column output's class rule (--argmax), and the file."""
    for t, acc in zip(outputs, ids or ()):
        if acc.columns == 1:
            click.echo(f"{t}: {describe(acc.rule(), 1)}", err=True)
    if not quiet:
        click.echo(f"wrote {output}: {n} samples", err=True)
