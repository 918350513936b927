"""Machine facts every benchmark records next to its figures."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def append_table_rows(path: Path, section: str, section_header: str, lines: list[str],
                      before: str | None = None) -> None:
    """Insert markdown table ``lines`` after the last row of the table under ``section`` (a
    ``## name`` line) in ``path``, adding the section (``section_header``) if missing: in front of
    the ``before`` section when the file has it (``## gpu`` must stay last: bench/gpu.py appends at
    the file's end), else at the end."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    existing = text.splitlines()
    if section not in existing and before is not None and before in existing:
        at = existing.index(before)
        existing[at:at] = section_header.rstrip("\n").splitlines() + [""]
        text = "\n".join(existing) + "\n"
    elif section not in existing:
        text = text.rstrip("\n") + "\n\n" + section_header
    rows = text.splitlines()
    start = rows.index(section)
    end = next((i for i in range(start + 1, len(rows)) if rows[i].startswith("## ")), len(rows))
    last_row = max(i for i in range(start, end) if rows[i].startswith("|"))
    rows[last_row + 1:last_row + 1] = lines
    path.write_text("\n".join(rows) + "\n")
