"""The package as a user gets it: built from the checkout, installed into fresh virtualenvs.

``build_wheel`` runs ``python -m build --wheel`` (with build isolation, as pip would) on a copy
of the checkout: building writes ``build/`` and ``*.egg-info`` next to the sources (the sdist is
built and checked by scripts/check). ``make_venv`` installs requirements with their real
dependencies from the package index, through the test environment's pip (``pip --python``),
so a venv needs no pip of its own and pip's cache keeps it quick; ``--no-compile`` skips the
bytecode (a quarter of the time, and nothing the tests need).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Never part of a build: environments, caches, outputs.
IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "test-output",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "node_modules",
    ".*_cache",
    ".hypothesis",
)


def build_wheel(tmp: Path) -> Path:
    """Build this checkout's wheel into ``tmp/dist``; returns its path."""
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    dist = tmp / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("django_stream_llm-*.whl")
    return wheel


def scratch_folder() -> str | None:
    """A folder for virtualenvs: a tmpfs where there is one (writing the thousands of small
    files of an install was 3 times faster there than on this machine's disk), else None (the
    system's temporary folder)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def make_venv(path: Path, *requirements: str) -> Path:
    """A virtualenv at ``path`` holding ``requirements`` and their dependencies; its Python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    python = path / "bin" / "python"
    install = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python)),
            *("install", "-q", "--no-compile", *requirements),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def purelib(python: Path) -> Path:
    """The site-packages folder of ``python``'s environment."""
    return Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )


def site_packages_kb(python: Path) -> int:
    """The disk space of the environment's site-packages in KiB (``du -sk``)."""
    du = subprocess.run(
        ["du", "-sk", str(purelib(python))], capture_output=True, text=True, check=True
    )
    return int(du.stdout.split()[0])
