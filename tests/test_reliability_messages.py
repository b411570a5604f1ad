"""Bad input that used to end in a traceback, a usage screen or a killed process, one named test
each: every one is now a single line on stderr with exit status 1, refused before the work, and
the output folder is left as it was (no run.json, no partial outputs)."""

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import folder_snapshot, run_fail, run_ok
from PIL import Image

FACES = Path(__file__).resolve().parents[1] / "examples" / "faces"
S = ["--steps", "5,2", "--restarts", "1", "--quiet"]
CLEAN_INPAINT = ["--clean", "--task", "inpaint", "--centre-box", "0.5"]


def _faces(folder: Path, n: int = 1, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for src in sorted(FACES.glob("generated_*.png"))[:n]:
        shutil.copy(src, folder / (f"{name}.png" if name else src.name))
    return folder


def _refused(capsys, tmp_path, *argv) -> str:
    """Run `ilo argv`; it must fail in one line and change nothing under tmp_path."""
    before = folder_snapshot(tmp_path)
    err = run_fail(capsys, *argv)
    assert "weights_only=False" not in err  # never pass on torch's advice to run a file's code
    assert folder_snapshot(tmp_path) == before
    return err


# --- names and folders the outputs need ------------------------------------------------------


def test_too_long_a_file_name_is_refused_before_the_solve(tmp_path, capsys):
    faces = _faces(tmp_path / "in", name="x" * 250)
    err = _refused(capsys, tmp_path, "restore", faces, *CLEAN_INPAINT, "--out", tmp_path / "out", *S)
    assert "too long a file name" in err and "the file system allows" in err


def test_the_longest_name_that_fits_is_restored(tmp_path, capsys):
    faces = _faces(tmp_path / "in", name="x" * 227)  # its record's temporary file: 255 bytes
    run_ok(capsys, "restore", faces, *CLEAN_INPAINT, "--out", tmp_path / "out", *S, "--backend", "torch")
    assert (tmp_path / "out" / ("x" * 227 + ".png")).is_file()


def test_a_file_named_records_in_out_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "records").write_text("mine")
    err = _refused(capsys, tmp_path, "restore", _faces(tmp_path / "in"), *CLEAN_INPAINT, "--out", out, *S)
    assert "records is a file where a folder belongs" in err


def test_run_json_that_is_not_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("[1, 2]\n")
    err = _refused(capsys, tmp_path, "restore", _faces(tmp_path / "in"), *CLEAN_INPAINT, "--out", out, *S)
    assert "holds a list, not run settings" in err


def test_a_record_that_is_not_a_record_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    faces = _faces(tmp_path / "in")
    run_ok(capsys, "restore", faces, *CLEAN_INPAINT, "--out", out, *S, "--backend", "torch")
    (out / "records" / "generated_90100.json").write_text("[1, 2]\n")
    err = _refused(capsys, tmp_path, "restore", faces, *CLEAN_INPAINT, "--out", out, *S)
    assert "not an image's record" in err


def test_a_folder_where_an_output_goes_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "a.png").mkdir(parents=True)
    faces = _faces(tmp_path / "in", name="a")
    err = _refused(capsys, tmp_path, "restore", faces, *CLEAN_INPAINT, "--out", out, *S)
    assert "a.png is a folder" in err and ".partial" not in err


# --- values of flags --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--steps", "abc"], "'abc' is not a whole number"),
        (["--steps", "1e9"], "write it in digits, e.g. 1000000000"),
        (["--seed", "99999999999999999999999"], "seeds run from 0 to"),
        (["--seed", "-1"], "seeds run from 0 to"),
        (["--op-seed", "99999999999999999999999"], "seeds run from 0 to"),
        (["--batch-size", "x"], "--batch-size"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
    ids=["steps abc", "steps 1e9", "seed too big", "seed negative", "op-seed too big", "batch-size x", "unknown flag"],
)
def test_a_value_a_flag_cannot_use_is_one_line_and_exit_1(tmp_path, capsys, flags, expected):
    argv = ["restore", _faces(tmp_path / "in"), *CLEAN_INPAINT, "--out", tmp_path / "out", *S, *flags]
    assert expected in _refused(capsys, tmp_path, *argv)


@pytest.mark.parametrize("spelling", [["--box", "-5,0,10,10"], ["--box=-5,0,10,10"]], ids=["space", "equals"])
def test_a_negative_box_is_read_either_way_and_refused(tmp_path, capsys, spelling):
    argv = [
        "restore",
        _faces(tmp_path / "in"),
        "--clean",
        "--task",
        "inpaint",
        *spelling,
        "--out",
        tmp_path / "out",
        *S,
    ]
    assert "--box -5,0,10,10 does not fit a 64px image" in _refused(capsys, tmp_path, *argv)


def test_a_negative_first_value_of_a_list_is_a_value(tmp_path, capsys):
    # --lr -0.1,0.01 reaches the solver's own check (not argparse's "expected one argument")
    argv = ["restore", _faces(tmp_path / "in"), *CLEAN_INPAINT, "--out", tmp_path / "out", *S, "--lr", "-0.1,0.01"]
    assert "expected one argument" not in _refused(capsys, tmp_path, *argv)


# --- compressed-sensing measurement files -----------------------------------------------------

M = round(0.1 * 3 * 64 * 64)  # measurements of the default model's 64px at --ratio 0.1


@contextlib.contextmanager
def _address_space(extra: int):
    """At most `extra` more bytes of address space for this process in the block: a refusal
    that must come before a big allocation is shown to, without ever allocating gigabytes."""
    import resource

    status = Path("/proc/self/status").read_text().splitlines()
    used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_cs_file_whose_header_claims_10_to_the_11_values_is_refused_from_its_header(tmp_path, capsys):
    folder = tmp_path / "cs"
    folder.mkdir()
    with open(folder / "huge.npy", "wb") as f:  # 100 bytes of data under a header of shape (10^11,)
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**11,)})
        f.write(bytes(100))
    with _address_space(1 << 30):
        err = _refused(capsys, tmp_path, "restore", folder, "--task", "cs", "--out", tmp_path / "out", *S)
    assert f"declares shape [100000000000] (100000000000 values) but --ratio 0.1 measurements at 64px are {M}" in err


def test_cs_measurement_of_3e38_is_refused_up_front(tmp_path, capsys):
    folder = tmp_path / "cs"
    folder.mkdir()
    y = np.zeros(M, np.float32)
    y[3] = 3e38
    np.save(folder / "big.npy", y)
    err = _refused(capsys, tmp_path, "restore", folder, "--task", "cs", "--out", tmp_path / "out", *S)
    assert "a measurement of 3e+38" in err and "stay below" in err


# --- hostile files ----------------------------------------------------------------------------


def _zip_bomb(path: Path, unpacked: int = 64 << 20) -> Path:
    """A genuine checkpoint re-zipped with deflate and one more record of `unpacked` zero bytes:
    a file of some kilobytes that declares tens of megabytes."""
    import zipfile

    fixture = Path(__file__).parent / "fixtures" / "stylegan2_rosinality_32px.pt"
    with zipfile.ZipFile(fixture) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
        prefix = src.infolist()[0].filename.split("/")[0]
        with dst.open(f"{prefix}/data/bomb", "w", force_zip64=True) as record:
            zeros = bytes(1 << 20)
            for _ in range(unpacked >> 20):
                record.write(zeros)
    return path


def test_zip_bomb_checkpoint_is_refused_from_its_central_directory(tmp_path, capsys, monkeypatch):
    import torch

    bomb = _zip_bomb(tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 2 << 20
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or pytest.fail("torch.load was reached"))
    err = _refused(capsys, tmp_path, "sample", "--model", bomb, "--n", "1", "-o", tmp_path / "x.png")
    assert "refusing to load" in err and "compression bomb" in err and not loads


SG2_32 = Path(__file__).parent / "fixtures" / "stylegan2_rosinality_32px.pt"


def test_sample_latents_that_would_run_code_never_pass_on_torchs_advice(tmp_path, capsys):
    import torch

    class Payload:  # a pickle that would call os.system on load
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    torch.save({"z": Payload()}, tmp_path / "evil.pt")
    err = _refused(capsys, tmp_path, "sample", "--latents", tmp_path / "evil.pt", "-o", tmp_path / "x.png")
    assert "refusing to load" in err and "nothing from the file was run" in err


def test_sample_latents_of_random_bytes(tmp_path, capsys):
    (tmp_path / "z.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    err = _refused(capsys, tmp_path, "sample", "--latents", tmp_path / "z.pt", "-o", tmp_path / "x.png")
    assert "not a tensor file torch can read" in err


def test_sample_latents_zip_bomb(tmp_path, capsys):
    bomb = _zip_bomb(tmp_path / "z.pt")
    err = _refused(capsys, tmp_path, "sample", "--latents", bomb, "-o", tmp_path / "x.png")
    assert "compression bomb" in err


def test_sample_latents_whose_header_claims_10_to_the_11_values(tmp_path, capsys):
    with open(tmp_path / "z.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 100)})
        f.write(bytes(100))
    with _address_space(1 << 30):
        err = _refused(capsys, tmp_path, "sample", "--latents", tmp_path / "z.npy", "-o", tmp_path / "x.png")
    assert "declares shape [1000000000, 100]" in err


def test_sample_noises_holding_an_object_array(tmp_path, capsys):
    np.savez(tmp_path / "n.npz", noise_0=np.array([1, "a", None], dtype=object))
    argv = ["sample", "--model", SG2_32, "--noises", tmp_path / "n.npz", "--n", "1", "-o", tmp_path / "x.png"]
    assert "'noise_0' is unreadable" in _refused(capsys, tmp_path, *argv)


def test_sample_n_that_cannot_fit_is_refused_before_drawing(tmp_path, capsys):
    with _address_space(1 << 30):
        err = _refused(capsys, tmp_path, "sample", "--n", "100000000", "-o", tmp_path / "x.png")
    assert "--n 100,000,000 samples of 64px hold" in err and "sample fewer at a time" in err


@pytest.mark.parametrize("columns, expected", [("0", "--columns must be at least 1"), ("100000000", "GiB at once")])
def test_sample_columns_out_of_range(tmp_path, capsys, columns, expected):
    err = _refused(capsys, tmp_path, "sample", "--n", "4", "--columns", columns, "-o", tmp_path / "x.png")
    assert expected in err


# --- images -----------------------------------------------------------------------------------


def test_fit_resize_of_a_1_by_1000000_strip_stays_small(tmp_path, capsys):
    strip = tmp_path / "in" / "strip.png"
    strip.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1, 1_000_000, 3), dtype=np.uint8)).save(strip)
    with _address_space(2 << 30):  # resized whole it would take 49 GB
        run_ok(capsys, "degrade", strip.parent, "--task", "sr", "--fit", "resize", "--out", tmp_path / "out")
    assert Image.open(tmp_path / "out" / "strip.png").size == (16, 16)


def test_fit_resize_keeps_ordinary_shapes_whole():
    import torch

    from ilo.engine.inputs.image_files import fit_to

    image = torch.rand(3, 80, 64) * 2 - 1  # within MAX_ASPECT: resized whole, exactly as before
    fitted, _ = fit_to(image, 32, "resize", "x")
    whole = torch.nn.functional.interpolate(image[None], size=(40, 32), mode="bicubic", antialias=True)[0]
    assert torch.equal(fitted, whole[:, 4:36].clamp(-1, 1))


# --- ilo bench --------------------------------------------------------------------------------


def test_bench_refuses_a_batch_over_the_memory_budget_before_any_work(tmp_path, capsys, monkeypatch):
    from ilo.engine.bench import latency

    monkeypatch.setattr(latency, "measure", lambda *a, **k: pytest.fail("the benchmark started"))
    argv = [
        "bench",
        "--model",
        SG2_32,
        "--backends",
        "torch",
        "--batch",
        "1,16",
        "--steps",
        "2",
        "--memory-budget",
        "10M",
        "--json",
        tmp_path / "bench.json",
    ]
    err = _refused(capsys, tmp_path, *argv)
    assert "--batch 16 cannot fit" in err and "the memory budget is 10.0 MiB" in err and "batches up to 5 fit" in err


def test_bench_writes_each_finished_batch_as_it_goes(tmp_path, capsys, monkeypatch):
    from ilo.engine.bench import latency
    from ilo.engine.cli.main import main

    step_times = latency._step_times

    def second_batch_dies(gen, batch, settings, device):
        if batch == 2:
            raise MemoryError("killed")
        return step_times(gen, batch, settings, device)

    monkeypatch.setattr(latency, "_step_times", second_batch_dies)
    argv = [
        "bench",
        "--model",
        SG2_32,
        "--backends",
        "torch",
        "--batch",
        "1,2",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--quiet",
        "--json",
        tmp_path / "bench.json",
    ]
    with pytest.raises(MemoryError):
        main([str(a) for a in argv])
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["complete"] is False and [r["batch"] for r in saved["rows"]] == [1]


# --- cases found by trying more hostile input -------------------------------------------------


def test_bench_threads_below_one(tmp_path, capsys):
    err = _refused(capsys, tmp_path, "bench", "--model", SG2_32, "--backends", "torch", "--threads", "-1")
    assert "--threads must be at least 1" in err


def test_sample_truncation_nan(tmp_path, capsys):
    err = _refused(
        capsys, tmp_path, "sample", "--model", SG2_32, "--truncation", "nan", "--n", "2", "-o", tmp_path / "x.png"
    )
    assert "truncation must be a finite number" in err


def test_sample_latents_that_overflow_write_nothing(tmp_path, capsys):
    np.save(tmp_path / "w.npy", np.full((1, 8, 64), 3e38, np.float32))
    argv = [
        "sample",
        "--model",
        SG2_32,
        "--latents",
        tmp_path / "w.npy",
        "--input-space",
        "wplus",
        "-o",
        tmp_path / "x.png",
    ]
    assert "hold NaN or inf values, so nothing was written" in _refused(capsys, tmp_path, *argv)


def test_ray_cpus_per_worker_nan(tmp_path, capsys):
    argv = [
        "restore",
        _faces(tmp_path / "in"),
        *CLEAN_INPAINT,
        "--out",
        tmp_path / "out",
        *S,
        "--ray",
        "--cpus-per-worker",
        "nan",
    ]
    assert "--cpus-per-worker must be positive" in _refused(capsys, tmp_path, *argv)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--ensemble", "99999999999999999999"], "--ensemble 99999999999999999999 holds at least"),
        (["--steps", "5,2", "--restarts", "100000000"], "--restarts 100000000 holds at least"),
    ],
    ids=["ensemble 1e20", "restarts 1e8"],
)
def test_ensemble_or_restarts_that_cannot_be_held_are_refused_before_the_run(tmp_path, capsys, flags, expected):
    base = S if "--restarts" not in flags else ["--quiet"]
    argv = ["restore", _faces(tmp_path / "in"), *CLEAN_INPAINT, "--out", tmp_path / "out", *base, *flags]
    assert expected in _refused(capsys, tmp_path, *argv)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"image": ""}', "'image' is empty"),
        (b'{"image": "AA==", "mask": ""}', "'mask' is empty"),
        (b'{"image": "AA==", "name": "a\\nb"}', "all printable"),
    ],
    ids=["deep nesting", "empty image", "empty mask", "newline in name"],
)
def test_serve_request_bodies_are_a_400_not_an_internal_error(body, message):
    from ilo.engine.fleet.http_api import HttpError, parse_restore

    with pytest.raises(HttpError) as e:
        parse_restore("application/json", {}, body, 1 << 20)
    assert e.value.status == 400 and message in e.value.message


def test_serve_negative_content_length():
    from ilo.engine.fleet.http_api import HttpError, check_length

    with pytest.raises(HttpError) as e:
        check_length("-5", 1000)
    assert e.value.status == 400 and "negative" in e.value.message


@pytest.mark.parametrize(
    "flags, expected",
    [(["--cache", "FILE"], "is a file, not a folder"), (["--jobs", "0"], "--jobs must be at least 1")],
    ids=["cache is a file", "jobs 0"],
)
def test_export_cache_or_jobs_that_cannot_work(tmp_path, capsys, flags, expected):
    (tmp_path / "file").write_text("mine")
    flags = [str(tmp_path / "file") if f == "FILE" else f for f in flags]
    assert expected in _refused(capsys, tmp_path, "export", "--model", SG2_32, *flags)


@pytest.mark.parametrize("where", ["restore --out", "sample -o", "an input", "a path over PATH_MAX"])
def test_a_name_the_file_system_cannot_hold_is_one_line(tmp_path, capsys, where):
    long = tmp_path / ("d" * 300)
    deep = tmp_path.joinpath(*["e" * 200] * 25)
    argv = {
        "restore --out": ["restore", _faces(tmp_path / "in"), *CLEAN_INPAINT, "--out", long, *S],
        "sample -o": ["sample", "--n", "1", "-o", long / "x.png"],
        "an input": ["restore", str(long) + ".png", *CLEAN_INPAINT, "--out", tmp_path / "out", *S],
        "a path over PATH_MAX": ["restore", _faces(tmp_path / "in"), *CLEAN_INPAINT, "--out", deep, *S],
    }[where]
    err = _refused(capsys, tmp_path, *argv)
    assert "allows" in err or "File name too long" in err


@pytest.mark.parametrize(
    "field, value",
    [("timeout_s", float("inf")), ("batch_wait_s", float("nan")), ("cpus_per_replica", float("inf"))],
    ids=["timeout inf", "batch wait nan", "cpus inf"],
)
def test_serve_settings_that_never_answer_are_refused(field, value):
    pytest.importorskip("ray")
    from ilo.engine.fleet.service import ServiceConfig
    from ilo.errors import InputError

    with pytest.raises(InputError):
        ServiceConfig(**{field: value})


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_serve_max_body_that_is_not_a_size(tmp_path, capsys, monkeypatch, value):
    pytest.importorskip("ray")
    from ilo.engine.fleet import service

    monkeypatch.setattr(service, "serve_forever", lambda *a, **k: pytest.fail("the service started"))
    err = _refused(capsys, tmp_path, "serve", "--task", "sr", "--max-body-mb", value)
    assert "--max-body-mb must be a positive number" in err


def test_sample_noises_zip_bomb(tmp_path, capsys):
    import zipfile

    # 64 MiB of zeros as noise_0
    with (
        zipfile.ZipFile(tmp_path / "n.npz", "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("noise_0.npy", "w", force_zip64=True) as member,
    ):
        member.write(
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (16777216,), }".ljust(127) + b"\n"
        )
        for _ in range(64):
            member.write(bytes(1 << 20))
    argv = ["sample", "--model", SG2_32, "--noises", tmp_path / "n.npz", "--n", "1", "-o", tmp_path / "x.png"]
    assert "compression bomb" in _refused(capsys, tmp_path, *argv)


def test_a_file_no_run_made_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "generated_90100.png").write_text("precious")  # the user's own file, where an output would go
    err = _refused(capsys, tmp_path, "restore", _faces(tmp_path / "in"), *CLEAN_INPAINT, "--out", out, *S)
    assert "generated_90100.png was not written by ilo" in err
