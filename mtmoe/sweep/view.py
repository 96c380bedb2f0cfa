"""The progress of a sweep, for both back ends: a rich live table on a terminal, a line per state
change otherwise."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mtmoe.sweep.jobs import Job


class SweepView:
    """The grid's progress: a rich live table on a terminal, a line per state change otherwise."""

    def __init__(self, queue: list[Job], show: bool):
        self.queue, self.show = queue, show
        self.seen: dict[Path, str] = {}
        self.start = time.time()
        if show:
            from rich.live import Live

            self.live = Live(self._table(), refresh_per_second=2, transient=False)
            self.live.start()

    def _table(self):
        from rich.table import Table

        counts = {s: sum(j.state == s for j in self.queue) for s in ("queued", "running", "done", "failed", "skipped",
                                                                  "elsewhere")}
        title = (f"sweep: {len(self.queue)} runs · " + " · ".join(f"{v} {k}" for k, v in counts.items() if v)
                 + f" · {time.time() - self.start:.0f} s")
        table = Table(title=title)
        for col in ("suite", "run", "state", "steps", "returns"):
            table.add_column(col)
        shown = [j for j in self.queue if j.state in ("running", "failed")][:30]
        shown += [j for j in self.queue if j.state == "queued"][: max(0, 8 - len(shown))]
        for j in shown:
            step, returns = j.progress() if j.state == "running" else (0, {})
            pct = f"{step:,}/{j.cfg.steps:,} ({100 * step / max(j.cfg.steps, 1):.0f}%)" if step else "-"
            ret = "  ".join(f"{t}: {v:.1f}" for t, v in returns.items() if v is not None)
            table.add_row(j.cfg.suite, j.run_dir.name, j.state + (" (resumed)" if j.resumed else ""), pct, ret)
        return table

    def update(self) -> None:
        if self.show:
            self.live.update(self._table())
            return
        for j in self.queue:
            if self.seen.get(j.run_dir) != j.state:
                self.seen[j.run_dir] = j.state
                if j.state != "queued":
                    extra = " (resumed)" if j.resumed and j.state == "running" else ""
                    print(f"[{time.time() - self.start:6.0f} s] {j.cfg.suite}/{j.run_dir.name}: {j.state}{extra}",
                          file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.show:
            self.live.update(self._table())
            self.live.stop()
