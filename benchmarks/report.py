"""The harness every benchmark script shares: its command line (the output folder, a quick mode,
comma-separated lists), the machine line, and the result files (Markdown, JSON and figures), each
headed by the command that wrote it, the machine and the date.

    script = Script(__file__, __doc__, quick={"images": 2})
    script.parser.add_argument("--images", type=int, default=8)
    args = script.parse(argv)
    ...
    script.write("batch_rounding", text, data, machine_line())

A result that is one of several sections of a benchmark's table (another image set, a cold
start) is written with `script.write_section("export_cost", "Cold start (...)", text, data,
machine)`: the section of that name is replaced, the file's other sections and header kept.

`--quick` swaps in the script's smallest settings (arguments given on the command line still
win) and writes under /tmp unless `--out` says otherwise: a check that the script runs, which
never overwrites benchmarks/results.

A script whose figures can be drawn again from its JSON says so with `Script(..., redraw="stem")`:
`--redraw` then measures nothing, and the script draws from `script.saved()` (`<out>/<stem>.json`);
the figure's footnote names the measurement's machine and says it was redrawn, and by what.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = Path(tempfile.gettempdir()) / "ilo-benchmarks-quick"

# one colour per method across every figure (matplotlib's tab10, in this order)
METHOD_COLOURS = {
    "ilo": "C0",
    "ilo-auto": "C1",
    "csgm": "C2",
    "pulse": "C3",
    "bm3d": "C4",
    "tv": "C5",
    "wavelet": "C6",
    "torch": "C7",
    "onnxruntime": "C0",
    "tensorrt": "C2",
}


def in_method_order(panels: Mapping[str, Mapping[str, Mapping[str, float]]], order=tuple(METHOD_COLOURS)) -> dict:
    """Grouped bars' panels (panel -> category -> method -> value) with every category naming the
    methods in `order`, then any others, NaN (an empty slot) where one has no value: the bars take
    their order, and the legend its, from first appearance, which would put a method the first
    category lacks (bm3d, denoising only) after all the rest."""
    present = {m for categories in panels.values() for values in categories.values() for m in values}
    extra = [m for categories in panels.values() for values in categories.values() for m in values if m not in order]
    methods = [m for m in order if m in present] + list(dict.fromkeys(extra))
    return {
        panel: {c: {m: values.get(m, float("nan")) for m in methods} for c, values in categories.items()}
        for panel, categories in panels.items()
    }


def comma_list(text: str) -> list[str]:
    """An argument of comma-separated names: 'a,b' -> ['a', 'b']."""
    return [part for part in text.split(",") if part]


def comma_ints(text: str) -> list[int]:
    return [int(part) for part in comma_list(text)]


def machine_line(runtime: str = "torch eager", device: str = "cpu", **versions: str) -> str:
    """What ran: the card (on CUDA) or the CPU's architecture, threads and cores, torch's version
    and any other `versions` (e.g. ray=...), and `runtime` (what ran the generator). Imports
    torch: scripts that measure a process's memory call it once their children are done."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        where = torch.cuda.get_device_name(torch.device(device))
    else:
        where = f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads of {os.cpu_count()} cores"
    extra = "".join(f", {name} {version}" for name, version in versions.items())
    return f"{where}, torch {torch.__version__}{extra}, {runtime}"


class Script:
    """One benchmark script's arguments and result files.

    file, doc: the script's `__file__` and `__doc__` (the help text). quick: argument -> value,
    the settings `--quick` swaps in (no `--quick` flag without it). redraw: the stem of the JSON
    the script's figures can be redrawn from (no `--redraw` flag without it)."""

    def __init__(self, file: str, doc: str | None, quick: Mapping[str, Any] | None = None, redraw: str | None = None):
        self.name = Path(file).name
        self.parser = argparse.ArgumentParser(
            prog=f"python benchmarks/{self.name}",
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.parser.add_argument(
            "--out", type=Path, help="the folder results are written to (default: benchmarks/results)"
        )
        self.quick = dict(quick or {})
        if self.quick:
            settings = " ".join(f"--{k.replace('_', '-')} {_shown(v)}" for k, v in self.quick.items())
            self.parser.add_argument(
                "--quick", action="store_true", help=f"a check that the script runs: {settings}, results under /tmp"
            )
        self.redraw = redraw
        if redraw:
            self.parser.add_argument(
                "--redraw",
                action="store_true",
                help=f"measure nothing: draw the figures again from {redraw}.json in the output folder",
            )
        self.redrawn_from: tuple[str, dict] | None = None  # under --redraw: the JSON's name and record
        self.argv: list[str] = []
        self.args = argparse.Namespace()
        self.date = time.strftime("%Y-%m-%d")

    def add_list(self, flag: str, names, help: str | None = None) -> None:
        """A comma-separated list argument whose default is all of `names` (e.g. `--tasks`)."""
        listed = ", ".join(names).replace("%", "%%")  # argparse formats help with %: inpaint-10% would break it
        self.parser.add_argument(
            flag, type=comma_list, default=",".join(names), help=help or f"comma-separated subset of {listed}"
        )

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        self.argv = list(sys.argv[1:] if argv is None else argv)
        args = self.parser.parse_args(self.argv)
        if getattr(args, "quick", False):
            self.parser.set_defaults(**self.quick)
            args = self.parser.parse_args(self.argv)
        if args.out is None:
            args.out = QUICK_RESULTS / self.name.removesuffix(".py") if getattr(args, "quick", False) else RESULTS
        self.args = args
        return args

    @property
    def command(self) -> str:
        return shlex.join(["python", f"benchmarks/{self.name}", *self.argv])

    def header(self, machine: str) -> str:
        """The first line of every result: what wrote it, when, on what."""
        return f"`{self.command}` ({self.date}; {machine})."

    def write(self, stem: str, text: str, data: Mapping[str, Any] | list | None, machine: str) -> None:
        """Print the Markdown, and write `<stem>.md` (headed by `header`) and, unless `data` is
        None, `<stem>.json` (the command, date and machine beside `data`) under the output folder."""
        title, rest = text.split("\n", 1) if text.startswith("# ") else ("", text)  # the header under a title
        body = (f"{title}\n\n" if title else "") + f"{self.header(machine)}\n\n{rest.strip()}\n"
        print(body)
        write_atomically(self._folder() / f"{stem}.md", body)
        self.write_json(stem, data, machine)

    def write_section(
        self,
        stem: str,
        heading: str,
        text: str,
        data: Mapping[str, Any] | list | None,
        machine: str,
        json_stem: str | None = None,
    ) -> None:
        """Print the Markdown, and write it as the section `## <heading>` of `<stem>.md` (headed by
        `header`; `replace_section` says which section it replaces) and, unless `data` is None,
        `<json_stem>.json` (default: `<stem>.json`) as `write` does."""
        body = f"## {heading}\n\n{self.header(machine)}\n\n{text.strip()}\n"
        print(body)
        path = self._folder() / f"{stem}.md"
        write_atomically(path, replace_section(path.read_text() if path.is_file() else "", body))
        self.write_json(json_stem or stem, data, machine)

    def write_json(self, stem: str, data: Mapping[str, Any] | list | None, machine: str) -> None:
        """`<stem>.json`: the command, date and machine beside `data` (nothing where it is None)."""
        if data is None:
            return
        record = {"command": self.command, "date": self.date, "machine": machine}
        record.update(data if isinstance(data, Mapping) else {"rows": data})
        write_atomically(self._folder() / f"{stem}.json", json.dumps(record, indent=1) + "\n")

    def saved(self, stem: str | None = None) -> dict[str, Any]:
        """The record `write` left as `<stem>.json` (default: the `redraw` stem) in the output
        folder; figures saved after this say they were redrawn from it."""
        name = f"{stem or self.redraw}.json"
        path = self._folder() / name
        if not path.is_file():
            raise SystemExit(f"{self.name}: nothing to redraw from: {path} is missing (run the benchmark first)")
        record = json.loads(path.read_text())
        self.redrawn_from = name, record
        return record

    def save_figure(self, figure, name: str, machine: str) -> Path:
        """A matplotlib Figure or a PIL image as `<name>` in the output folder, the command, date
        and machine in its PNG text fields (and, on a chart, as a footnote)."""
        path = self._folder() / name
        metadata = {"Software": self.command, "Creation Time": self.date, "Source": machine}
        if hasattr(figure, "savefig"):
            from ilo.engine.runs.figures import save_png

            figure.get_layout_engine().set(rect=(0, 0.025, 1, 0.975))  # room for the footnote
            figure.text(0.995, 0.004, self._footnote(machine), ha="right", va="bottom", fontsize=6, color="0.5")
            save_png(figure, path, metadata)
        else:
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            for key, value in metadata.items():
                info.add_text(key, value)
            figure.save(path, pnginfo=info)
        return path

    def _footnote(self, machine: str) -> str:
        if self.redrawn_from is None:
            return f"{self.command} ({self.date}; {machine})"
        # a redraw's command and date are not the measurement's: the JSON's own, where it holds them
        name, record = self.redrawn_from
        measured = (
            f"{record['command']} ({record.get('date', 'undated')}; {machine})" if "command" in record else machine
        )
        return f"measured: {measured}; redrawn from {name} by {self.command} ({self.date})"

    def _folder(self) -> Path:
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        return out


def section_name(heading: str) -> str:
    """What names a section: its heading up to any remark in brackets, which may change from
    run to run (`Cold start (`--cold-start 256`)` is the section `Cold start`)."""
    return heading.removeprefix("## ").split(" (", 1)[0].strip()


def replace_section(markdown: str, section: str) -> str:
    """`markdown` with `section` (a `## heading` line and what follows it) in place of the
    section of the same name, or after the last section where there is none; the text before
    the first `## ` heading (the file's header) and every other section as they were."""
    name = section_name(section.split("\n", 1)[0])
    lines = markdown.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")] + [len(lines)]
    for start, end in zip(starts, starts[1:]):
        if section_name(lines[start].rstrip("\n")) == name:
            after = "".join(lines[end:])
            return "".join(lines[:start]) + section.rstrip("\n") + "\n" + ("\n" + after if after else "")
    before = markdown.rstrip("\n")
    return (before + "\n\n" if before else "") + section.rstrip("\n") + "\n"


def write_atomically(path: Path, text: str) -> None:
    """`text` as `path`, by way of a file beside it renamed over it: an interrupted run leaves
    the old file whole, never half of the new one."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(text)
    os.chmod(f.name, 0o644)  # as a file written in place would be, not the temporary file's 0600
    os.replace(f.name, path)


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return shlex.quote(value) if isinstance(value, str) else str(value)
