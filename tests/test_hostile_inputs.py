"""Bad input, table-driven: every case exits with status 1, says what is wrong in one line, and
leaves the output folder exactly as it was (or absent, if it was absent), inputs included."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_fail
from PIL import Image

FACES = Path(__file__).resolve().parents[1] / "examples" / "faces"
FAST = ["--steps", "2,1", "--end-stage", "1", "--restarts", "1", "--quiet"]
CLEAN_INPAINT = ["--clean", "--task", "inpaint", "--centre-box", "0.5"]


def _faces(root: Path, n: int = 2) -> Path:
    folder = root / "in"
    folder.mkdir()
    for src in sorted(FACES.glob("generated_*.png"))[:n]:
        shutil.copy(src, folder / src.name)
    return folder


def _png(path: Path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def _npy(path: Path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def _snapshot(*folders: Path) -> dict:
    """Every file under the folders with its bytes (None for a folder that does not exist)."""
    state = {}
    for folder in folders:
        if not folder.exists():
            state[str(folder)] = None
            continue
        for path in sorted(folder.rglob("*")):
            state[str(path)] = path.read_bytes() if path.is_file() else "dir"
    return state


class _Npz:  # writes an .npz archive where an .npy array belongs
    pass


def _npz(y):
    return _Npz()


def _cs_inputs(tmp: Path, bad) -> Path:
    n = 3 * 64 * 64
    good = np.zeros(round(0.1 * n), dtype=np.float32)
    _npy(tmp / "cs" / "a.npy", good)
    made = bad(good.copy())
    if isinstance(made, _Npz):
        with open(tmp / "cs" / "b.npy", "wb") as f:
            np.savez(f, y=good)
    else:
        _npy(tmp / "cs" / "b.npy", made)
    return tmp / "cs"


# Each case: (name, build(tmp) -> argv, the out folder, what the error line must say)
def _cases():
    out = lambda t: t / "out"  # noqa: E731

    def restore(*extra, inputs=None):
        return lambda t: (["restore", str(inputs(t) if inputs else _faces(t)), "--out", str(out(t)), *extra], out(t))

    def nan_measurement(y):
        y[7] = np.nan
        return y

    def bomb(t):  # 80 KB of PNG declaring 9000x9000 pixels
        return ["restore", str(_bomb(t / "in" / "bomb.png")), *CLEAN_INPAINT, "--fit", "resize", "--out", str(out(t)), *FAST], out(t)

    def black_mask(t):
        faces = _faces(t, 1)
        mask = _png(t / "masks" / "generated_90100.png", np.zeros((64, 64), dtype=np.uint8))
        return ["restore", str(faces), "--task", "inpaint", "--mask", str(mask), "--out", str(out(t)), *FAST], out(t)

    def tiny_padded(t):
        image = _png(t / "in" / "tiny.png", np.full((1, 1, 3), 200))
        return ["restore", str(image), *CLEAN_INPAINT, "--fit", "pad", "--out", str(out(t)), *FAST], out(t)

    def same_folder_restore(t):
        faces = _faces(t)
        return ["restore", str(faces), *CLEAN_INPAINT, "--out", str(faces), *FAST], faces

    def same_folder_degrade(t):
        faces = _faces(t)
        return ["degrade", str(faces), "--task", "inpaint", "--centre-box", "0.5", "--out", str(faces)], faces

    def strip_collision(t):
        faces = _faces(t, 1)
        shutil.copy(faces / "generated_90100.png", faces / "generated_90100.strip.png")
        return ["restore", str(faces), *CLEAN_INPAINT, "--strip", "--out", str(out(t)), *FAST], out(t)

    def mask_dir_is_out(t):
        faces = _faces(t, 1)
        _png(t / "out" / "masks" / "generated_90100.png", np.full((64, 64), 255))
        return ["restore", str(faces), "--task", "inpaint", "--mask-dir", str(t / "out" / "masks"), "--save-degraded",
                "--out", str(out(t)), *FAST], out(t)  # fmt: skip

    def out_is_file(t):
        (t / "file").write_text("not a folder")
        return ["restore", str(_faces(t)), *CLEAN_INPAINT, "--out", str(t / "file"), *FAST], t / "file"

    def out_below_file(t):
        (t / "file").write_text("not a folder")
        return ["restore", str(_faces(t)), *CLEAN_INPAINT, "--out", str(t / "file" / "out"), *FAST], t / "file"

    def read_only_out(t):
        return ["restore", str(_faces(t)), *CLEAN_INPAINT, "--out", "/sys/ilo-test-out", *FAST], Path("/sys/ilo-test-out")

    def convert_onto_source(t):
        model = t / "g.pt"
        shutil.copy(Path(__file__).parent / "fixtures" / "stylegan2_rosinality_32px.pt", model)
        return ["convert", str(model), str(model)], out(t)

    def sample_over_latents(t):
        _npy(t / "z.npy", np.zeros((1, 100), np.float32))
        return ["sample", "--latents", str(t / "z.npy"), "--save-array", str(t / "z.npy")], out(t)

    def sample_twice(t):
        return ["sample", "--n", "1", "-o", str(t / "x"), "--save-array", str(t / "x")], out(t)

    def sample_into_folder(t):
        (t / "out").mkdir()
        return ["sample", "--n", "1", "-o", str(t / "out")], out(t)

    def evil_backbone(t):
        import pickle

        class Payload:  # a pickle that would call os.system on load
            def __reduce__(self):
                import os

                return (os.system, ("echo pwned",))

        with open(t / "evil.pt", "wb") as f:
            pickle.dump({"features.0.weight": Payload()}, f)
        return ["restore", str(_faces(t)), *CLEAN_INPAINT, "--lpips-backbone", str(t / "evil.pt"), "--out", str(out(t)), *FAST], out(t)

    return [
        ("out is the input folder (restore)", same_folder_restore, "is the folder of the input"),
        ("out is the input folder (degrade)", same_folder_degrade, "is the folder of the input"),
        ("convert onto its source", convert_onto_source, "is also an input of this command"),
        ("sample over its latents", sample_over_latents, "is also an input of this command"),
        ("sample -o and --save-array one file", sample_twice, "name the same file"),
        (".npz under a .npy name", restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, _npz)), "b.npy: holds a NpzFile"),
        ("x.strip.png beside x.png with --strip", strip_collision, "would be written for both"),
        ("--save-degraded masks over --mask-dir", mask_dir_is_out, "would overwrite the input"),
        ("--steps 0", restore(*CLEAN_INPAINT, "--steps", "0", "--restarts", "1"), "steps per round"),
        ("--steps -3", restore(*CLEAN_INPAINT, "--steps", "-3"), "steps per round"),
        ("--steps 5,0", restore(*CLEAN_INPAINT, "--steps", "5,0"), "steps per round"),
        ("--restarts 0", restore(*CLEAN_INPAINT, "--restarts", "0"), "restarts must be"),
        ("--end-stage 99", restore(*CLEAN_INPAINT, "--end-stage", "99"), "--end-stage 99 does not exist"),
        ("--end-stage -1", restore(*CLEAN_INPAINT, "--end-stage", "-1"), "end_stage must be"),
        ("--l1-radius nan", restore(*CLEAN_INPAINT, "--l1-radius", "none,nan"), "l1 radii must be positive"),
        ("--l1-radius -1", restore(*CLEAN_INPAINT, "--l1-radius", "-1"), "l1 radii must be positive"),
        ("--factor 0 (restore)", restore("--clean", "--task", "sr", "--factor", "0", *FAST), "--factor"),
        ("--factor -1 (degrade)", lambda t: (["degrade", str(_faces(t)), "--task", "sr", "--factor", "-1", "--out", str(out(t))], out(t)), "--factor"),
        ("--factor with --task denoise", restore("--clean", "--task", "denoise", "--factor", "2", *FAST), "--factor belongs to --task sr"),
        ("--mask with --centre-box", lambda t: restore(*CLEAN_INPAINT, "--mask", str(_png(t / "m.png", np.full((64, 64), 255))), *FAST)(t), "not both"),
        ("--clean with --truth-dir", restore(*CLEAN_INPAINT, "--truth-dir", str(FACES), *FAST), "drop --truth-dir"),
        ("--fit pad for denoising", restore("--clean", "--task", "denoise", "--fit", "pad", *FAST), "--fit pad"),
        ("all-black mask", black_mask, "leaves no pixel of the image observed"),
        ("1x1 image padded into the hole", tiny_padded, "leaves no pixel of the image observed"),
        ("NaN in a CS measurement file", restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, nan_measurement)), "b.npy: 1 of its measurements are NaN"),
        ("inf in a CS measurement file", restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, lambda y: y + np.inf)), "b.npy"),
        ("string-dtype .npy", restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, lambda y: y.astype(str))), "b.npy: holds <U"),
        ("complex .npy", restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, lambda y: y + 1j)), "b.npy: holds complex numbers"),
        ("decompression bomb", bomb, "megapixels, over the limit"),
        ("--out is a file", out_is_file, "is a file, not a folder"),
        ("--out below a file", out_below_file, "is a file, not a folder"),
        ("--out on a read-only file system", read_only_out, "cannot create the output folder /sys/ilo-test-out"),
        ("sample -o a folder", sample_into_folder, "is a folder; give a file name"),
        ("--lpips-backbone that would run code", evil_backbone, "refusing to load"),
    ]


CASES = _cases()


def _bomb(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (9000, 9000)).save(path)
    return path


@pytest.mark.parametrize("build, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, build, expected):
    argv, out = build(tmp_path)
    before = _snapshot(tmp_path, out)
    err = run_fail(capsys, *argv)
    assert expected in err, err
    assert "weights_only=False" not in err  # never pass on torch's advice to run a file's code
    assert _snapshot(tmp_path, out) == before
