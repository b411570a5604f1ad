"""What the benchmark scripts write the same way: the machine line and a result's files."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def machine_line(runtime: str = "CPU (torch eager)") -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, {runtime}"


def write_result(out: Path, stem: str, text: str, data: dict) -> None:
    """Print the Markdown and write `<stem>.md` and `<stem>.json` under `out`."""
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
