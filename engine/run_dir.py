"""An output folder of a restoration run: its settings, one record per finished image, and the
metric tables. An image is finished once its record exists; the record is written after the
image files, each atomically, so an interrupted run resumes without redoing or half-writing."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ilo.atomic import atomic_write_bytes
from ilo.engine.metrics import mean_and_std
from ilo.errors import InputError

SETTINGS_FILE = "run.json"
RECORDS_DIR = "records"
TABLE_METRICS = ("psnr", "psnr_hole", "ssim", "lpips", "mse_observed", "measurement_mse", "seconds")


def _dumps(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)

    def check(self, settings: dict, overwrite: bool = False) -> None:
        """Refuse to mix runs: a folder holding another run's settings needs --overwrite."""
        path = self.root / SETTINGS_FILE
        if not path.exists() or overwrite:
            return
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: unreadable run settings ({e}); use another --out or --overwrite") from None
        changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        if changed:
            raise InputError(
                f"{self.root} holds a run with other settings ({', '.join(changed)}); "
                "use another --out, or --overwrite to redo every image"
            )

    def start(self, settings: dict, overwrite: bool = False) -> None:
        """Record the settings (after `check`); --overwrite forgets the old run's records."""
        self.check(settings, overwrite)
        if overwrite:
            for record in (self.root / RECORDS_DIR).glob("*.json"):
                record.unlink()
        atomic_write_bytes(self.root / SETTINGS_FILE, _dumps(settings))

    def record_path(self, stem: str) -> Path:
        return self.root / RECORDS_DIR / f"{stem}.json"

    def finished(self, stem: str, outputs: list[Path]) -> bool:
        return self.record_path(stem).is_file() and all(p.is_file() for p in outputs)

    def write_record(self, stem: str, record: dict) -> None:
        atomic_write_bytes(self.record_path(stem), _dumps(_finite(record)))

    def records(self) -> list[dict]:
        out = []
        for path in sorted((self.root / RECORDS_DIR).glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                raise InputError(f"{path}: unreadable record; delete it to redo that image") from None
        return out

    def write_tables(self, records: list[dict]) -> tuple[Path, Path]:
        """metrics.json (per image + mean/std) and metrics.csv (per image)."""
        summary = {}
        for key in TABLE_METRICS:
            values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
            if values:
                summary[key] = {**mean_and_std(values), "n": len(values)}
        json_path, csv_path = self.root / "metrics.json", self.root / "metrics.csv"
        atomic_write_bytes(json_path, _dumps({"images": records, "summary": summary}))
        columns = ["name", "input", "output", *[k for k in TABLE_METRICS if any(k in r for r in records)], "best_round"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
        atomic_write_bytes(csv_path, buffer.getvalue().encode())
        return json_path, csv_path


def _finite(record: dict) -> dict:
    """JSON has no inf: an exact reconstruction's PSNR is written as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
