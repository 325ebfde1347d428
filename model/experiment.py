"""A minimal resumable step runner for run_experiment.py.

Each step is a command line of one of the project's scripts (exactly what a user would type)
and the files that prove it finished. A finished step leaves a marker with its command and
stamp (what else decides its output, e.g. the synthetic generator's version); a rerun skips a
step whose marker matches both and whose outputs all exist. Once a step runs, every later step
runs too: each may depend on what an earlier one wrote."""
import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from model import files
from model.cli import UserError

log = logging.getLogger("experiment")


@dataclass
class Step:
    name: str
    command: list                      # argv; "python" is replaced by this interpreter
    outputs: object = field(default_factory=list)   # paths, or a callable returning them
                                                    # (for names known only after earlier steps)
    stamp: str = ""

    def record(self):
        return {"command": [str(a) for a in self.command], "stamp": self.stamp}

    def argv(self):
        return [sys.executable if a == "python" else str(a) for a in self.command]

    def output_paths(self):
        return [Path(p) for p in (self.outputs() if callable(self.outputs) else self.outputs)]


class Runner:
    def __init__(self, marker_dir, force=False):
        self.marker_dir = Path(marker_dir)
        self.force = force              # becomes True once a step has run
        self.timings = []              # (step name, seconds, "ran" | "skipped")

    def _marker(self, step):
        return self.marker_dir / f"{step.name}.json"

    def is_done(self, step):
        marker = self._marker(step)
        if self.force or not marker.is_file():
            return False
        try:
            recorded = json.loads(marker.read_text())
        except json.JSONDecodeError:
            return False
        try:
            outputs = step.output_paths()
        except (OSError, ValueError, KeyError):
            return False
        return (all(recorded.get(k) == v for k, v in step.record().items())
                and all(p.exists() for p in outputs))

    def run(self, step):
        prefix = f"[step {len(self.timings) + 1}] {step.name}"
        if self.is_done(step):
            log.info("%s: already complete, skipped", prefix)
            self.timings.append((step.name, 0.0, "skipped"))
            return
        log.info("%s: %s", prefix, shlex.join(step.argv()))
        self.force = True
        start = time.time()
        result = subprocess.run(step.argv())
        seconds = time.time() - start
        if result.returncode != 0:
            raise UserError(f"step '{step.name}' failed (exit {result.returncode}); "
                            f"fix the cause and rerun: finished steps are skipped")
        missing = [str(p) for p in step.output_paths() if not p.exists()]
        if missing:
            raise UserError(f"step '{step.name}' finished but did not write {missing[0]}")
        files.write_json(self._marker(step), {**step.record(), "seconds": round(seconds, 1)})
        self.timings.append((step.name, seconds, "ran"))
        log.info("%s: done in %.1f s", prefix, seconds)

    def run_all(self, steps):
        for step in steps:
            self.run(step)
        return self.timings
