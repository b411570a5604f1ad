"""An output folder of a restoration run: its settings, one record per finished image, and the
metric tables. An image is finished once its record exists; the record is written after the
image files, each atomically, so an interrupted run resumes without redoing or half-writing.

One run writes to a folder at a time (an advisory lock, held for the run), and a run that fails
before it has written anything leaves the folder as it found it."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Iterator

from ilo.atomic import atomic_write_bytes
from ilo.engine.runs.outputs import check_folder_path, check_name_length, check_not_in_the_way
from ilo.engine.runs.outputs import file_identity as _identity
from ilo.engine.problems.metrics import mean_and_std
from ilo.errors import IloError, InputError

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked against each other
    fcntl = None  # type: ignore[assignment]

SETTINGS_FILE = "run.json"
RECORDS_DIR = "records"
LOCK_FILE = ".ilo.lock"
TABLE_FILES = ("metrics.json", "metrics.csv")
TABLE_METRICS = ("psnr", "psnr_hole", "ssim", "lpips", "mse_observed", "measurement_mse", "held_out_loss", "seconds")
MEMBER_COLUMNS = ("member_rounds", "member_held_out_loss")  # an ensemble's, per member


def _dumps(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


class RunDir:
    def __init__(self, root: Path, settings_file: str = SETTINGS_FILE):
        self.root = Path(root)
        self.settings_file = settings_file  # run.json for a restore, degrade.json for `ilo degrade`
        self.written = False  # set once the run has written its settings

    def check_usable(self) -> None:
        """--out must be a folder, or a path where one can be made."""
        check_folder_path(self.root, "--out")

    @contextlib.contextmanager
    def open(self) -> Iterator["RunDir"]:
        """Hold the folder for one run: create it and take the lock. If the run fails before it
        wrote anything, the folder is left as it was (and removed if this run made it)."""
        created = _make_folders(self.root)
        try:
            with _exclusive_lock(self.root / LOCK_FILE, self.root):
                yield self
        except BaseException:
            if not self.written:
                for folder in reversed(created):
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only if empty: it never held anything but the lock
            raise

    def check(self, settings: dict, overwrite: bool = False, compared: tuple[str, ...] | None = None) -> None:
        """Refuse to mix runs: a folder holding another run's settings needs --overwrite.
        `compared`: the settings that must agree (default: all of them)."""
        path = self.root / self.settings_file
        if not path.exists() or overwrite:
            return
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: unreadable run settings ({e}); use another --out or --overwrite") from None
        if not isinstance(previous, dict):  # valid JSON, but not settings this program wrote
            raise InputError(
                f"{path}: holds a {type(previous).__name__}, not run settings; use another --out or --overwrite"
            )
        keys = set(previous) | set(settings) if compared is None else set(compared)
        changed = sorted(k for k in keys if previous.get(k) != settings.get(k))
        if changed:
            # a run begun from random starts, before the model had an encoder, resumes as it began
            began_at_random = "encoder" in changed and "encoder" not in previous
            hint = ", --encoder none to go on as it began from random starts" if began_at_random else ""
            raise InputError(
                f"{self.root} holds a run with other settings ({', '.join(changed)}); "
                f"use another --out{hint}, or --overwrite to redo every image"
            )

    def check_foreign(self, paths: list[Path], overwrite: bool = False) -> None:
        """Never write over a file no ilo run made: where the folder holds no settings of an
        earlier run, a file already at one of `paths` is the user's (a copy, a table kept from
        elsewhere), and only --overwrite may replace it."""
        if overwrite or (self.root / self.settings_file).exists():
            return
        for path in paths:
            if os.path.lexists(path):
                raise InputError(
                    f"{path} was not written by ilo (the folder holds no {self.settings_file} of an earlier run); "
                    "use another --out, or --overwrite to replace it"
                )

    def start(self, settings: dict, overwrite: bool = False, outputs: set[str] = frozenset()) -> None:
        """Record the settings (after `check` and every input check): from here on the folder is
        the run's. Drops the temporary files a killed run left (of `outputs` and the run's own
        files); --overwrite forgets the old run's records and tables."""
        self.check(settings, overwrite)
        names = {*outputs, self.settings_file, *TABLE_FILES} | {p.name for p in self._record_files()}
        remove_partials(self.root, names)
        if overwrite:
            for path in [*self._record_files(), *(self.root / name for name in TABLE_FILES)]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        atomic_write_bytes(self.root / self.settings_file, _dumps(settings))
        self.written = True

    def _record_files(self) -> list[Path]:
        folder = self.root / RECORDS_DIR
        # not the hidden temporary files of a record being written
        return sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")) if folder.is_dir() else []

    def record_path(self, stem: str) -> Path:
        return self.root / RECORDS_DIR / f"{stem}.json"

    def finished(self, stem: str, outputs: list[Path]) -> bool:
        return self.record_path(stem).is_file() and all(p.is_file() for p in outputs)

    def write_record(self, stem: str, record: dict) -> dict:
        """Write one finished image's record (last, after its files); returns it as stored."""
        record = _finite(record)
        atomic_write_bytes(self.record_path(stem), _dumps(record))
        return record

    def records(self) -> dict[str, dict]:
        """The finished images' records by stem, in file-name order."""
        out = {}
        for path in self._record_files():
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                raise InputError(f"{path}: unreadable record; delete it to redo that image") from None
            if not isinstance(record, dict):  # valid JSON, but not a record this program wrote
                raise InputError(
                    f"{path}: holds a {type(record).__name__}, not an image's record; delete it to redo that image"
                )
            out[path.stem] = record
        return out

    def fixed_files(self) -> list[Path]:
        return [self.root / self.settings_file, *(self.root / name for name in TABLE_FILES)]

    def write_tables(self, records: list[dict]) -> tuple[Path, Path]:
        """metrics.json (per image + mean/std) and metrics.csv (per image)."""
        summary = {}
        for key in TABLE_METRICS:
            values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
            if values:
                summary[key] = {**mean_and_std(values), "n": len(values)}
        json_path, csv_path = self.root / "metrics.json", self.root / "metrics.csv"
        atomic_write_bytes(json_path, _dumps({"images": records, "summary": summary}))
        columns = [
            "name",
            "input",
            "output",
            *[k for k in TABLE_METRICS if any(k in r for r in records)],
            "best_round",
            *[k for k in MEMBER_COLUMNS if any(k in r for r in records)],
            *(["chosen"] if any("chosen" in r for r in records) else []),
            *[f"estimated_error_{k}" for k in _estimated(records)],
        ]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in records:
            flat = {**r, **{f"estimated_error_{k}": v for k, v in (r.get("estimated_error") or {}).items()}}
            writer.writerow({k: _cell(flat.get(k)) for k in columns})
        atomic_write_bytes(csv_path, buffer.getvalue().encode())
        return json_path, csv_path


def _estimated(records: list[dict]) -> list[str]:
    """The candidates the choose method estimated, in the order first met (one CSV column each)."""
    return list(dict.fromkeys(k for r in records for k in (r.get("estimated_error") or {})))


def _cell(value) -> str | int | float:
    """A CSV cell: empty for none, a list (an ensemble's members) as space-separated values."""
    if value is None:
        return ""
    return " ".join(str(v) for v in value) if isinstance(value, list) else value


def _finite(record: dict) -> dict:
    """JSON has no inf or NaN: an exact reconstruction's PSNR, or an estimate that is not a number,
    is written as null (also inside a list or a mapping)."""

    def clean(v):
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {k: clean(v) for k, v in record.items()}


def check_output_layout(
    root: Path, outputs: dict[str, list[Path]], sources: dict[str, list[Path]], fixed: list[Path]
) -> None:
    """No output may overwrite an input, a mask or a ground truth (the output folder may not
    be a folder the inputs are in: outputs beside their inputs become inputs of the next run),
    and no two outputs may share a path (an input named `x.strip.png` beside `x.png`, with --strip)."""
    readers = {}
    for name, paths in sources.items():
        for path in paths:
            readers.setdefault(_identity(path), (name, path))
            folder = _identity(path.parent)
            if folder == _identity(root):
                raise InputError(
                    f"--out {root} is the folder of the input {path}; choose an output folder apart from the inputs"
                )
    claimed: dict[object, str] = {_identity(p): "the run's own files" for p in fixed}
    for path in fixed:
        check_not_in_the_way(path, "the run's file")
    for name, paths in outputs.items():
        for path in paths:
            what = f"the output of '{name if len(name) <= 48 else name[:48] + '...'}'"
            check_not_in_the_way(path, what)
            _check_no_link_between(root, path)
            check_name_length(path, what)
            key = _identity(path)
            if key in readers:
                owner, source = readers[key]
                raise InputError(
                    f"{path} would overwrite the input {source} (of '{owner}'); choose an --out folder apart from the inputs"
                )
            if key in claimed:
                raise InputError(
                    f"{path} would be written for both '{claimed[key]}' and '{name}'; rename one input or use another --out"
                )
            claimed[key] = name


def _check_no_link_between(root: Path, path: Path) -> None:
    """A link to a folder inside --out (records/, masks/) would take the run's files elsewhere,
    into an input folder say, where nothing else checks them. A link as the output file itself is
    harmless (the atomic rename replaces the link, not its target), and --out may be one."""
    folder = root
    for part in path.relative_to(root).parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            raise InputError(
                f"{folder} is a link (to {os.readlink(folder)}); ilo would write {path.name} through it, "
                "outside --out: remove the link or use another --out"
            )


_PARTIAL = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.partial")


def remove_partials(root: Path, names: set[str]) -> list[Path]:
    """Delete the temporary files (`.<name>.<random>.partial…`) that a killed write of one of
    `names` left behind; other programs' temporary files in the folder are left alone."""
    removed = []
    for folder in (root, root / RECORDS_DIR, root / "masks"):
        for path in folder.iterdir() if folder.is_dir() else ():
            match = _PARTIAL.match(path.name)
            if match and match["name"] in names and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def _make_folders(root: Path) -> list[Path]:
    """mkdir -p, returning the folders it made (outermost first)."""
    missing = [p for p in (root, *root.parents) if not p.exists()][::-1]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{root}: a file is in the way of the output folder") from None
    except OSError as e:
        raise IloError(f"cannot create the output folder {root} ({e.strerror or e})") from None
    return missing


@contextlib.contextmanager
def _exclusive_lock(path: Path, root: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a run that made the folder failed and removed it: make it again
            _make_folders(root)
            continue
        except OSError as e:
            raise IloError(f"cannot write to the output folder {root} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise IloError(
                    f"another ilo run is writing to {root}; wait for it to finish, or use another --out"
                ) from None
            raise
        # the holder before us may have removed the file after we opened it: lock the live one
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
