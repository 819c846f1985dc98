"""Shared helpers for benchmark scripts: machine description and docs/benchmarks.md sections.

Each benchmark owns one section of ``docs/benchmarks.md`` delimited by
``<!-- BEGIN name -->`` / ``<!-- END name -->`` and rewrites only that section, so
scripts can be re-run independently.
"""

from __future__ import annotations

import fcntl
import logging
import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
FIG_DIR = ROOT / "docs" / "figures"

HEADER = """# Benchmarks

Every number on this page was written by a script in `benchmarks/`; re-run the script
named in a section to reproduce it. Machine and spread are given per section.
"""


def machine() -> str:
    """One line describing the machine (CPU model, cores, memory, Python)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def cores(results: dict) -> int:
    """The core count of the machine a results dict was measured on (from its ``machine`` line; default: this one's).

    >>> cores({"machine": "AMD EPYC, 2 cores, 24 GiB RAM, Python 3.11.7"})
    2
    """
    m = re.search(r"(\d+) cores", results.get("machine", ""))
    return int(m.group(1)) if m else (os.cpu_count() or 1)


def versions(packages: tuple[str, ...], missing: str | None = None) -> dict[str, str | None]:
    """The installed version of each of ``packages`` (``missing`` for one that is not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = missing
    return out


def cpu_flags(*wanted: str) -> list[str]:
    """Which of ``wanted`` CPU feature flags ``/proc/cpuinfo`` lists (as lscpu shows them), in order.

    >>> set(cpu_flags("avx512_bf16", "amx_bf16")) <= {"avx512_bf16", "amx_bf16"}
    True
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in wanted if f in have]
    return []


_NOISY = ("faiss", "numba", "sentence_transformers", "urllib3", "filelock", "bm25s")


def setup_logging() -> None:
    """INFO logs with times for a benchmark's main process; chatty libraries at WARNING, transformers at ERROR."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # survives transformers' own logger set-up


def update_section(name: str, markdown: str, doc: Path | None = None) -> Path:
    """Replace (or append) the ``name`` section of docs/benchmarks.md (or ``doc``) with ``markdown``."""
    DOC = doc or globals()["DOC"]  # noqa: N806
    DOC.parent.mkdir(parents=True, exist_ok=True)
    lock = DOC.with_suffix(".lock")
    with open(lock, "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        text = DOC.read_text() if DOC.exists() else HEADER
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        block = f"{begin}\n{markdown.rstrip()}\n{end}"
        pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        text = pat.sub(lambda _m: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block + "\n"
        tmp = DOC.with_suffix(".md.tmp")
        tmp.write_text(text)
        os.replace(tmp, DOC)
    lock.unlink(missing_ok=True)
    return DOC


def macro_f1_figure(rows: list, baseline: dict, colors: list[str], title: str):
    """Bar chart of test macro-F1 (mean ± std) per arm, with the majority-class line.

    ``rows``: dicts with ``arm`` and ``eval`` (an ``evaluate_model`` result); returns the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    means = [r["eval"]["results"]["all"]["macro_f1"]["mean"] for r in rows]
    stds = [r["eval"]["results"]["all"]["macro_f1"]["std"] for r in rows]
    ax.bar([r["arm"] for r in rows], means, yerr=stds, capsize=6, color=colors)
    ax.axhline(baseline["macro_f1"], color="k", ls=":", lw=1, label="majority class")
    lo = min(m - s for m, s in zip(means, stds))
    ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(means) + max(stds) + 0.03))
    ax.set_ylabel("test macro-F1 (mean ± std)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    plt.xticks(fontsize=8)
    fig.tight_layout()
    return fig


def run_capped(cmd: list[str], log: Path, max_seconds: float, cwd: Path = ROOT) -> tuple[int | None, float, bool]:
    """Run ``cmd`` as a child in its own session, output to ``log``, killed after ``max_seconds``.

    Returns ``(exit code or None when killed, peak RSS of the child in GB (ru_maxrss from os.wait4),
    timed_out)``.
    """
    import signal
    import subprocess
    import time

    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(cwd))
    t0 = time.perf_counter()
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > max_seconds:
            os.killpg(p.pid, signal.SIGKILL)  # the child's own session (started above)
            _pid, status, ru = os.wait4(p.pid, 0)
            return None, ru.ru_maxrss * 1024 / 1e9, True
        time.sleep(0.1)
    return os.waitstatus_to_exitcode(status), ru.ru_maxrss * 1024 / 1e9, False


def publish(md: str, fig, figure_name: str, section: str, write: bool) -> None:
    """Print ``md``; when ``write``, save ``fig`` as docs/figures/``figure_name`` and update ``section``."""
    print(md)
    if write:
        FIG_DIR.mkdir(parents=True, exist_ok=True)
        fig.savefig(FIG_DIR / figure_name, dpi=120)
        update_section(section, md)
