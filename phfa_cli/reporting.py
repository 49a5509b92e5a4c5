"""Rich progress for the training loop on a terminal (ETA, live losses); plain lines otherwise."""
from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from phfa_cli.common import err
from pipeline.runtime.progress import Reporter


class RichReporter(Reporter):
    def __init__(self):
        self.prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                             TextColumn("{task.fields[losses]}"), console=err)
        self.prog.start()
        self.task = None

    def phase(self, name, start, total, unit="iterations"):
        self.task = self.prog.add_task(name if unit == "iterations" else f"{name} ({unit})", total=total,
                                       completed=start, losses="")

    def step(self, it):
        self.prog.update(self.task, completed=it)

    def log(self, it, values):
        self.prog.update(self.task, completed=it,
                         losses=" ".join(f"{k}={v:.3g}" for k, v in values.items() if k != "lr"))

    def message(self, text):
        self.prog.console.print(text, markup=False, highlight=False)

    def close(self):
        self.prog.stop()


def make_reporter() -> Reporter:
    """Rich on a terminal, plain lines otherwise; nothing on the other ranks of a torchrun job."""
    from pipeline.runtime import distributed
    from pipeline.runtime.progress import Silent
    if not distributed.is_main():
        return Silent()
    return RichReporter() if err.is_terminal else Reporter()
