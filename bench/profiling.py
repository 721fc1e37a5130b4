"""py-spy on a server during one phase: collapsed stacks to a file and the top frames.

Sampling is non-blocking (the server is never paused) and runs on the load generator's core,
but it still costs the server a little: figures from a profiled run are marked as such.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["Profiler", "summarize"]

RATE = 250
TOP = 12
# "function (path/to/file.py:123)" -> "function (file.py)": lines of one function add up.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
# Frames under which everything runs (start-up, the CLI, the loop's entry): they say nothing in
# an inclusive ranking. Self time in Runner.run stays: it is the event loop's own C code.
_BOILERPLATE = re.compile(
    r"<frozen runpy>|click/core\.py|uvicorn/(__main__|main|server|_compat)\.py"
    r"|asyncio/runners\.py|Thread\.(_bootstrap|_bootstrap_inner|run) \("
)


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({Path(match['path']).name})"


def summarize(path: Path, top: int = TOP) -> dict[str, Any]:
    """Top frames of a py-spy ``--format raw`` file: self time and inclusive time, in %.

    Idle samples (the loop waiting in epoll) are not recorded by py-spy, so the shares are of
    the time the server was busy.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames if not _BOILERPLATE.search(f)}:
            inclusive[frame] += count
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [[frame, 100 * n / total] for frame, n in own.most_common(top)],
        "inclusive": [[frame, 100 * n / total] for frame, n in inclusive.most_common(top * 2)],
    }


class Profiler:
    """``py-spy record`` attached to ``pid`` until ``stop()``."""

    def __init__(self, pid: int, output: Path) -> None:
        self.output = output
        command = [
            _py_spy(), "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking", "--gil",
            "--format", "raw", "--output", str(output),
        ]  # fmt: skip
        self.popen = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def stop(self) -> dict[str, Any]:
        """Stop sampling (py-spy writes its file on SIGINT) and summarize it."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        if not self.output.exists():
            log = self.popen.stdout.read().decode(errors="replace") if self.popen.stdout else ""
            return {"error": f"py-spy wrote nothing: {log[-500:]}"}
        return {"file": str(self.output), **summarize(self.output)}
