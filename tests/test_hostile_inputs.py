"""Bad input, table-driven: every case exits with status 1, says what is wrong in one line, and
leaves the output folder exactly as it was (or absent, if it was absent), inputs included."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import folder_snapshot, run_fail
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
        return [
            "restore",
            str(_bomb(t / "in" / "bomb.png")),
            *CLEAN_INPAINT,
            "--fit",
            "resize",
            "--out",
            str(out(t)),
            *FAST,
        ], out(t)

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
        return [
            "restore",
            str(faces),
            "--task",
            "inpaint",
            "--mask-dir",
            str(t / "out" / "masks"),
            "--save-degraded",
            "--out",
            str(out(t)),
            *FAST,
        ], out(t)

    def out_is_file(t):
        (t / "file").write_text("not a folder")
        return ["restore", str(_faces(t)), *CLEAN_INPAINT, "--out", str(t / "file"), *FAST], t / "file"

    def out_below_file(t):
        (t / "file").write_text("not a folder")
        return ["restore", str(_faces(t)), *CLEAN_INPAINT, "--out", str(t / "file" / "out"), *FAST], t / "file"

    def read_only_out(t):
        return ["restore", str(_faces(t)), *CLEAN_INPAINT, "--out", "/sys/ilo-test-out", *FAST], Path(
            "/sys/ilo-test-out"
        )

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
        return [
            "restore",
            str(_faces(t)),
            *CLEAN_INPAINT,
            "--lpips-backbone",
            str(t / "evil.pt"),
            "--out",
            str(out(t)),
            *FAST,
        ], out(t)

    return [
        ("out is the input folder (restore)", same_folder_restore, "is the folder of the input"),
        ("out is the input folder (degrade)", same_folder_degrade, "is the folder of the input"),
        ("convert onto its source", convert_onto_source, "is also an input of this command"),
        ("sample over its latents", sample_over_latents, "is also an input of this command"),
        ("sample -o and --save-array one file", sample_twice, "name the same file"),
        (
            ".npz under a .npy name",
            restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, _npz)),
            "b.npy: holds a NpzFile",
        ),
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
        (
            "--factor -1 (degrade)",
            lambda t: (["degrade", str(_faces(t)), "--task", "sr", "--factor", "-1", "--out", str(out(t))], out(t)),
            "--factor",
        ),
        (
            "--factor with --task denoise",
            restore("--clean", "--task", "denoise", "--factor", "2", *FAST),
            "--factor belongs to --task sr",
        ),
        (
            "--mask with --centre-box",
            lambda t: restore(*CLEAN_INPAINT, "--mask", str(_png(t / "m.png", np.full((64, 64), 255))), *FAST)(t),
            "not both",
        ),
        ("--clean with --truth-dir", restore(*CLEAN_INPAINT, "--truth-dir", str(FACES), *FAST), "drop --truth-dir"),
        ("--fit pad for denoising", restore("--clean", "--task", "denoise", "--fit", "pad", *FAST), "--fit pad"),
        ("all-black mask", black_mask, "leaves no pixel of the image observed"),
        ("1x1 image padded into the hole", tiny_padded, "leaves no pixel of the image observed"),
        (
            "NaN in a CS measurement file",
            restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, nan_measurement)),
            "b.npy: 1 of its measurements are NaN",
        ),
        (
            "inf in a CS measurement file",
            restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, lambda y: y + np.inf)),
            "b.npy",
        ),
        (
            "string-dtype .npy",
            restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, lambda y: y.astype(str))),
            "b.npy: holds <U",
        ),
        (
            "complex .npy",
            restore("--task", "cs", *FAST, inputs=lambda t: _cs_inputs(t, lambda y: y + 1j)),
            "b.npy: holds complex numbers",
        ),
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
    before = folder_snapshot(tmp_path, out)
    err = run_fail(capsys, *argv)
    assert expected in err, err
    assert "weights_only=False" not in err  # never pass on torch's advice to run a file's code
    assert folder_snapshot(tmp_path, out) == before


# --- third pass: lost data, silently wrong reads, unclear messages -------------------------------

S = ["--steps", "5,2", "--restarts", "1", "--quiet"]


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG of a few dozen bytes whose header declares width x height (nothing else is read)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def _bad_running_var(path: Path) -> Path:
    import torch

    from ilo.generators.checkpoints.dcgan import to_dcgan_state
    from ilo.generators.checkpoints.files import load_generator

    state = to_dcgan_state(load_generator("default"))
    state["main.1.running_var"] = -state["main.1.running_var"].abs() - 1
    torch.save(state, path)
    return path


def _third_pass_cases():
    out = lambda t: t / "out"  # noqa: E731

    def foreign_files(t):
        faces = _faces(t, 1)
        (t / "out").mkdir()
        shutil.copy(sorted(FACES.glob("generated_*.png"))[1], t / "out" / "generated_90100.png")
        (t / "out" / "metrics.csv").write_text("precious\n")
        return ["restore", str(faces), "--task", "denoise", "--out", str(out(t)), *S], out(t)

    def foreign_files_degrade(t):
        faces = _faces(t, 1)
        (t / "out").mkdir()
        (t / "out" / "generated_90100.png").write_text("precious\n")
        return ["degrade", str(faces), "--task", "denoise", "--out", str(out(t))], out(t)

    def negative_running_var(t):
        model = _bad_running_var(t / "bad.pt")
        return ["sample", "--model", str(model), "--n", "1", "-o", str(out(t) / "g.png")], out(t)

    def int32_tiff(t):
        (t / "in").mkdir()
        values = np.linspace(0, 1e6, 64 * 64).reshape(64, 64).astype(np.int32)
        Image.fromarray(values, mode="I").save(t / "in" / "a.tif")
        return ["restore", str(t / "in" / "a.tif"), "--task", "denoise", "--out", str(out(t)), *S], out(t)

    def animated(suffix):
        def build(t):
            (t / "in").mkdir()
            frames = [Image.new("RGB", (64, 64), (v, v, v)) for v in (0, 120, 240)]
            frames[0].save(t / "in" / f"a{suffix}", save_all=True, append_images=frames[1:])
            return ["restore", str(t / "in" / f"a{suffix}"), "--task", "denoise", "--out", str(out(t)), *S], out(t)

        return build

    def fifo(t):
        import os

        (t / "in").mkdir()
        os.mkfifo(t / "in" / "a.png")
        return ["restore", str(t / "in" / "a.png"), "--task", "denoise", "--out", str(out(t)), *S], out(t)

    def fifo_mask(t):
        import os

        os.mkfifo(t / "m.png")
        faces = _faces(t, 1)
        mask = str(t / "m.png")
        return ["restore", str(faces), "--task", "inpaint", "--mask", mask, "--out", str(out(t)), *S], out(t)

    def restore_dev_zero(t):
        return ["restore", "/dev/zero", "--task", "denoise", "--out", str(out(t)), *S], out(t)

    def huge_header(t):
        png = _png_header_only(t / "in" / "a.png", 30000, 30000)
        return ["restore", str(png), "--task", "denoise", "--out", str(out(t)), *S], out(t)

    def records_link(t):
        faces = _faces(t, 1)
        (t / "out").mkdir()
        (t / "out" / "records").symlink_to(faces, target_is_directory=True)
        return ["restore", str(faces), "--task", "denoise", "--out", str(out(t)), *S], out(t)

    def masks_link(t):
        faces = _faces(t, 1)
        (t / "out").mkdir()
        (t / "elsewhere").mkdir()  # a folder of the user's, outside --out
        (t / "out" / "masks").symlink_to(t / "elsewhere", target_is_directory=True)
        return ["degrade", str(faces), *CLEAN_INPAINT[1:], "--out", str(out(t))], out(t)

    def int32_tiff_8bit(t):  # 8-bit values in 32-bit integers: taken for 16-bit they read as black
        (t / "in").mkdir()
        Image.fromarray(np.full((64, 64), 200, np.int32), mode="I").save(t / "in" / "a.tif")
        return ["restore", str(t / "in" / "a.tif"), "--task", "denoise", "--out", str(out(t)), *S], out(t)

    def fifo_in_mask_dir(t):
        import os

        faces = _faces(t, 1)
        (t / "masks").mkdir()
        os.mkfifo(t / "masks" / "generated_90100.png")
        masks = str(t / "masks")
        return ["restore", str(faces), "--task", "inpaint", "--mask-dir", masks, "--out", str(out(t)), *S], out(t)

    def records_is_a_file(t):
        faces = _faces(t, 1)
        (t / "out").mkdir()
        (t / "out" / "records").write_text("a file where ilo keeps its records\n")
        return ["restore", str(faces), "--task", "denoise", "--out", str(out(t)), *S], out(t)

    return [
        ("files ilo did not write in --out (restore)", foreign_files, "was not written by ilo"),
        ("out/records is a file", records_is_a_file, "records is a file where a folder belongs"),
        ("32-bit integer TIFF of 8-bit values", int32_tiff_8bit, "32-bit"),
        ("a FIFO in --mask-dir", fifo_in_mask_dir, "not a regular file"),
        ("files ilo did not write in --out (degrade)", foreign_files_degrade, "was not written by ilo"),
        ("checkpoint with a negative running_var", negative_running_var, "main.1.running_var"),
        ("32-bit integer TIFF", int32_tiff, "32-bit"),
        ("animated GIF", animated(".gif"), "has 3 frames"),
        ("animated WebP", animated(".webp"), "has 3 frames"),
        ("a FIFO as input", fifo, "not a regular file"),
        ("/dev/zero as input", restore_dev_zero, "not a regular file"),
        ("a FIFO as --mask", fifo_mask, "not a regular file"),
        ("30000x30000 PNG header", huge_header, "30000x30000"),
        ("out/records links into the inputs", records_link, "is a link"),
        ("out/masks links out of --out (degrade)", masks_link, "is a link"),
    ]


THIRD = _third_pass_cases()


@pytest.mark.parametrize("build, expected", [c[1:] for c in THIRD], ids=[c[0] for c in THIRD])
def test_third_pass_bad_input(tmp_path, capsys, build, expected):
    argv, out = build(tmp_path)
    before = folder_snapshot(tmp_path, out)
    err = run_fail(capsys, *argv)
    assert expected in err, err
    assert folder_snapshot(tmp_path, out) == before


def test_fit_crop_too_small_suggests_only_what_the_task_takes(tmp_path, capsys):
    image = _png(tmp_path / "in" / "a.png", np.full((1, 1, 3), 200))
    err = run_fail(capsys, "restore", image, "--task", "denoise", "--fit", "crop", "--out", tmp_path / "out", *S)
    assert "--fit resize" in err and "pad" not in err, err


def test_convert_into_a_folder_suggests_a_checkpoint_name(tmp_path, capsys):
    model = Path(__file__).parent / "fixtures" / "stylegan2_rosinality_32px.pt"
    err = run_fail(capsys, "convert", model, tmp_path)
    assert ".png" not in err and str(tmp_path / "model.pt") in err, err


def test_huge_header_names_size_and_limit(tmp_path, capsys):
    png = _png_header_only(tmp_path / "in" / "a.png", 30000, 30000)
    err = run_fail(capsys, "restore", png, "--task", "denoise", "--out", tmp_path / "out", *S)
    assert "30000x30000" in err and "--max-pixels" in err and "64" in err, err


def test_exif_orientation_is_honoured(tmp_path):
    from ilo.engine.inputs.image_files import read_picture

    stored = np.zeros((40, 64, 3), dtype=np.uint8)
    stored[:, :8] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the band is on top
    Image.fromarray(stored).save(tmp_path / "a.jpg", exif=exif, quality=100)
    picture = read_picture(tmp_path / "a.jpg")
    assert picture.size == (40, 64) and picture.pixels.shape == (64, 40, 3)
    assert picture.pixels[:8].mean() > 200 and picture.pixels[-8:].mean() < 50


def test_transparent_mask_pixels_are_missing(tmp_path, capsys):
    from ilo.engine.inputs.image_files import mask_tensor, read_picture
    from ilo.engine.cli.main import build_parser

    rgba = np.full((64, 64, 4), 255, dtype=np.uint8)
    rgba[16:48, 16:48, 3] = 0  # the hole drawn as transparency over white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "m.png")
    mask = mask_tensor(read_picture(tmp_path / "m.png"))
    assert mask[0, 16:48, 16:48].sum() == 0 and mask.sum() == 64 * 64 - 32 * 32
    palette = Image.fromarray(np.where(rgba[..., 3] == 0, 0, 1).astype(np.uint8), mode="P")
    palette.putpalette([255, 255, 255, 255, 255, 255])
    palette.save(tmp_path / "p.png", transparency=0)
    assert mask_tensor(read_picture(tmp_path / "p.png")).sum() == 64 * 64 - 32 * 32
    with pytest.raises(SystemExit):
        build_parser().parse_args(["restore", "--help"])
    assert "transparent" in capsys.readouterr().out


def test_a_gif_is_an_input_in_a_folder_too(tmp_path):
    from ilo.engine.inputs.image_files import list_inputs

    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "in" / "a.gif")
    assert [p.name for p in list_inputs([str(tmp_path / "in")])] == ["a.gif"]


def test_resume_redoes_a_truncated_output(tmp_path, capsys):
    from conftest import run_ok

    faces = _faces(tmp_path, 1)
    out = tmp_path / "out"
    run_ok(capsys, "restore", faces, "--task", "denoise", "--out", out, *S)
    png = out / "generated_90100.png"
    png.write_bytes(png.read_bytes()[:200])
    said = run_ok(capsys, "restore", faces, "--task", "denoise", "--out", out, *S)
    assert "restored 1 image(s)" in said, said
    with Image.open(png) as im:
        im.load()


def test_degrade_refuses_a_folder_of_other_settings(tmp_path, capsys):
    from conftest import run_ok

    faces = _faces(tmp_path, 1)
    out = tmp_path / "out"
    run_ok(capsys, "degrade", faces, "--task", "denoise", "--out", out, "--quiet")
    before = folder_snapshot(out)
    err = run_fail(capsys, "degrade", faces, "--task", "denoise", "--sigma", "0.3", "--out", out, "--quiet")
    assert "other settings" in err and "--overwrite" in err, err
    assert folder_snapshot(out) == before
    run_ok(capsys, "degrade", faces, "--task", "denoise", "--sigma", "0.3", "--out", out, "--quiet", "--overwrite")


def test_an_output_name_taken_by_a_folder_is_refused_before_the_solve(tmp_path, capsys):
    from conftest import run_ok

    faces = _faces(tmp_path, 1)
    out = tmp_path / "out"
    run_ok(capsys, "restore", faces, "--task", "denoise", "--out", out, *S)
    (out / "generated_90100.png").unlink()
    (out / "generated_90100.png").mkdir()
    before = folder_snapshot(out)
    err = run_fail(capsys, "restore", faces, "--task", "denoise", "--out", out, *S)
    assert "generated_90100.png is a folder" in err and ".partial" not in err, err
    assert folder_snapshot(out) == before


def test_a_broken_exif_block_is_read_as_stored_without_a_warning(tmp_path):
    import warnings

    from ilo.engine.inputs.image_files import read_picture

    pixels = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    Image.fromarray(pixels).save(tmp_path / "a.png", exif=b"Exif\x00\x00MM\x00*garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would reach the user's terminal as lines of noise
        picture = read_picture(tmp_path / "a.png")
    assert (picture.pixels == pixels).all()


def test_a_wrong_size_suggests_only_the_fits_the_task_takes(tmp_path, capsys):
    faces = _faces(tmp_path, 1)  # 64x64, where super-resolution by 4 reads 16x16
    err = run_fail(capsys, "restore", faces, "--task", "sr", "--out", tmp_path / "out", *S)
    assert "crop|resize|pad" not in err and "--fit crop|resize" in err, err


@pytest.mark.parametrize("flag", ["--mask-dir", "--truth-dir"])
def test_a_file_given_as_a_folder_of_masks_or_truths_says_so(tmp_path, capsys, flag):
    faces = _faces(tmp_path, 1)
    mask = _png(tmp_path / "m.png", np.full((64, 64), 255))
    task = ["--task", "inpaint"] if flag == "--mask-dir" else ["--task", "denoise"]
    err = run_fail(capsys, "restore", faces, *task, flag, mask, "--out", tmp_path / "out", *S)
    assert f"{flag} {mask} is a file, not a folder" in err, err


@pytest.mark.parametrize("kind", ["pil", "array", "bytes"])
def test_transparency_in_a_mask_handed_over_in_memory_is_missing_too(tmp_path, kind):
    import io

    from ilo.engine.inputs.in_memory import picture_pixels

    rgba = np.full((64, 64, 4), 255, dtype=np.uint8)
    rgba[16:48, 16:48, 3] = 0
    image = Image.fromarray(rgba, mode="RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    obj = {"pil": image, "array": rgba, "bytes": buffer.getvalue()}[kind]
    pixels, _ = picture_pixels(obj, "mask", mask=True)
    assert pixels.tensor.sum() == 64 * 64 - 32 * 32


def test_an_interrupted_degrade_can_be_run_again(tmp_path, capsys, monkeypatch):
    from conftest import run_ok

    import ilo.engine.runs.result_files as result_files
    from ilo.engine.cli.main import main

    faces = _faces(tmp_path, 2)
    out = tmp_path / "out"
    write, calls = result_files.write_degraded, []

    def interrupted(*args, **kwargs):  # Ctrl-C after the first image's files
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write(*args, **kwargs)

    monkeypatch.setattr(result_files, "write_degraded", interrupted)
    assert main(["degrade", str(faces), "--task", "denoise", "--out", str(out), "--quiet"]) == 130
    monkeypatch.setattr(result_files, "write_degraded", write)
    run_ok(capsys, "degrade", faces, "--task", "denoise", "--out", out, "--quiet")
