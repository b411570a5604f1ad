"""`python -m ilo.export.worker JOB`: export one bundle into the cache (export/parallel.py).

JOB/job.pkl holds (bundle maker, cache root, threads, force), pickled by the process that started this
one into its own private temporary folder: this is hand-over between two processes of one run,
not a file from outside, so unpickling it is as safe as the caller.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from pathlib import Path


def main(job: str) -> int:
    import torch

    from ilo.errors import IloError
    from ilo.export.artifacts import export_bundle
    from ilo.export.parallel import failure_cause

    try:
        with open(Path(job) / "job.pkl", "rb") as f:
            make, root, threads, force = pickle.load(f)
        torch.set_num_threads(threads)  # the exporter's checks and their ONNX Runtime sessions
        export_bundle(make(), root, force=force)
    except IloError as e:
        print(f"ilo-export-worker: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the caller shows one line; the traceback stays in the log
        traceback.print_exc()
        print(f"ilo-export-worker: error: {failure_cause(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
