"""`ilo serve --ui`'s page in a real browser: headless Chromium (Debian's chromium and
chromium-driver; .ci/run installs them) driven by Selenium against the real service on Ray Serve,
the embedded 64px face model and a tiny solver budget. Also the rounds streamed to plain HTTP
clients, batched together.

The page is one client of POST /restore among others, so what it shows is what the API answers:
each round's image as the solve goes, then the result; a refusal's one line."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="the [ray] extra (in the test extra) is not installed")
requests = pytest.importorskip("requests")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (in the test extra) is not installed")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from ilo.engine.api.restorer import RestorerSettings, method_config  # noqa: E402
from ilo.engine.problems.tasks import TaskSpec  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), "/usr/bin/chromedriver"
FACE = Path(__file__).parents[1] / "examples" / "faces" / "generated_90100.png"
SOLVER = method_config("ilo", steps=[12, 6], restarts=2)  # three rounds on the 64px model, a few seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from ray import serve

    from ilo.engine.fleet.service import ServiceConfig, start

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cache = tmp_path_factory.getbasetemp() / "ilo-cache"
    ray.init(
        address="local",  # a Ray of its own, beside test_fleet's in the other worker
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"ILO_CACHE_DIR": str(cache)}},
    )
    try:
        settings = RestorerSettings(model="default", task=TaskSpec("inpaint"), backend="torch", config=SOLVER)
        config = ServiceConfig(port=_free_port(), batch_wait_s=0.2, cpus_per_replica=1, ui=True)
        url, _ = start(settings, config)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or not os.path.exists(CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)  # no driver download
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _png(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    Image.open(FACE).convert("RGB").resize((size, size)).save(path)
    return path


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _wait(driver, what, seconds: float = 120):
    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(lambda d: what(d))


def _upload(driver, path: Path) -> None:
    driver.find_element(By.ID, "picture").send_keys(str(path))


def _draw_stroke(driver) -> None:
    canvas = driver.find_element(By.ID, "canvas")
    stroke = webdriver.ActionChains(driver).move_to_element_with_offset(canvas, -60, -20).click_and_hold()
    for _ in range(6):
        stroke = stroke.move_by_offset(20, 8)
    stroke.release().perform()
    assert driver.execute_script("return state.drawn"), "the stroke drew no hole"


def test_the_page_restores_a_picture_with_a_drawn_hole(service, browser, tmp_path):
    driver = browser
    driver.get(f"{service}/")
    _wait(driver, lambda d: "rounds" in d.find_element(By.ID, "served").text, 60)
    assert driver.find_element(By.ID, "task").text == "inpaint"
    assert driver.find_element(By.ID, "mask-tools").is_displayed()  # inpainting: the brush is offered

    _upload(driver, _png(tmp_path, "face.png", 64))
    _wait(driver, lambda d: d.execute_script("return state.picture !== null"), 30)
    _draw_stroke(driver)
    hole = driver.execute_script(
        "const d = mask.getContext('2d').getImageData(0, 0, 64, 64).data; let n = 0;"
        "for (let i = 0; i < d.length; i += 4) n += d[i] < 128; return n;"
    )
    assert 20 < hole < 64 * 64 // 2, hole

    driver.find_element(By.ID, "restore").click()
    _wait(driver, lambda d: d.find_element(By.ID, "result").is_displayed())
    rounds = driver.find_elements(By.CSS_SELECTOR, "#rounds figure")
    assert [r.text for r in rounds] == ["round 1 of 3", "round 2 of 3", "round 3 of 3"]
    assert driver.find_element(By.ID, "message").text == "restored"
    after = driver.find_element(By.ID, "after").get_attribute("src")
    download = driver.find_element(By.ID, "download")
    assert after.startswith("data:image/png;base64,") and download.get_attribute("href") == after
    assert download.get_attribute("download") == "face-restored.png"
    restored = Image.open(io.BytesIO(base64.b64decode(after.split(",", 1)[1])))
    assert restored.size == (64, 64) and np.asarray(restored).std() > 5  # a picture, not a blank
    assert "measurement MSE" in driver.find_element(By.ID, "metrics").text

    shot = tmp_path / "restored-page.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("ILO_UI_SCREENSHOT"):  # where a person wants to look at it
        shutil.copy(shot, os.environ["ILO_UI_SCREENSHOT"])


def test_a_picture_of_another_size_is_fitted_in_the_page_and_restored(service, browser, tmp_path):
    # the service takes only its own size (no --fit): the page sends the picture's centre square
    driver = browser
    driver.get(f"{service}/")
    _wait(driver, lambda d: "rounds" in d.find_element(By.ID, "served").text, 60)
    photo = tmp_path / "wide.png"
    Image.open(FACE).convert("RGB").resize((120, 80)).save(photo)
    _upload(driver, photo)
    _wait(driver, lambda d: d.execute_script("return state.picture !== null && canvas.width === 64"), 30)
    assert "scaled to 64x64" in driver.find_element(By.ID, "message").text
    assert driver.execute_script("return [canvas.height, mask.width, mask.height]") == [64, 64, 64]
    _draw_stroke(driver)
    driver.find_element(By.ID, "restore").click()
    _wait(driver, lambda d: d.find_element(By.ID, "result").is_displayed())
    assert driver.find_element(By.ID, "message").text == "restored"


def _mask_of(size: int):
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "mask.png"
        Image.fromarray(np.full((size, size), 255, np.uint8)).save(path)
        return path

    return make


@pytest.mark.parametrize(
    "make, mask, message",
    [
        (lambda p: _file(p / "notes.png", b"not a picture"), None, "not a readable image"),
        (
            lambda p: _png(p, "face.png", 64),
            _mask_of(50),
            "the mask of the uploaded picture is 50x50 but the uploaded picture is 64x64",
        ),
    ],
)
def test_a_refused_upload_shows_the_services_one_line_message(service, browser, tmp_path, make, mask, message):
    driver = browser
    driver.get(f"{service}/")
    _wait(driver, lambda d: "rounds" in d.find_element(By.ID, "served").text, 60)
    _upload(driver, make(tmp_path))
    if mask is not None:
        driver.find_element(By.ID, "mask-file").send_keys(str(mask(tmp_path)))
    _wait(driver, lambda d: d.find_element(By.ID, "restore").is_enabled(), 30)
    driver.find_element(By.ID, "restore").click()
    shown = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#message.error").text, 60)
    assert message in shown and "\n" not in shown, shown
    assert not driver.find_element(By.ID, "result").is_displayed()


def test_rounds_stream_to_each_request_of_a_batch(service):
    """Three clients at once: their requests share solves, and each stream carries its own image's
    rounds (as newline-delimited JSON), then the answer plain /restore gives."""
    faces = [_png_bytes(face) for face in sorted(FACE.parent.glob("generated_*.png"))]
    mask = np.full((64, 64), 255, np.uint8)
    mask[20:40, 20:40] = 0
    bodies = [
        {"image": base64.b64encode(png).decode(), "mask": base64.b64encode(_encode(mask)).decode()} for png in faces
    ]

    def one(i: int) -> list[dict]:
        body = {**bodies[i], "name": f"s{i}"}
        r = requests.post(f"{service}/restore?stream=rounds", json=body, stream=True, timeout=120)
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in r.iter_lines() if line]

    with futures.ThreadPoolExecutor(3) as pool:
        streams = list(pool.map(one, range(3)))
    for i, events in enumerate(streams):
        assert [e["event"] for e in events] == ["round"] * 3 + ["result"]
        assert [e["round"] for e in events[:3]] == [0, 1, 2] and {e["rounds"] for e in events[:3]} == {3}
        assert events[-1]["name"] == f"s{i}"
        best = events[events[-1]["metrics"]["best_round"]]["image_png"]  # its own image's rounds: the result
        assert best == events[-1]["image_png"]  # is its best round's image, and the faces differ
    assert len({events[-1]["image_png"] for events in streams}) == 3
    assert max(events[-1]["metrics"]["batch_size"] for events in streams) > 1  # they shared solves
    plain = requests.post(f"{service}/restore", json={**bodies[0], "name": "s0"}, timeout=120)  # as before: one answer
    assert plain.headers["content-type"] == "application/json" and set(plain.json()) == {"name", "image_png", "metrics"}
    alone, streamed = (_pixels(b64) for b64 in (plain.json()["image_png"], streams[0][-1]["image_png"]))
    # the same restoration (alone or in a batch of three, float sums differ in their last bits)
    assert np.abs(alone - streamed).mean() < 1
    r = requests.post(f"{service}/restore?stream=rounds&format=png", data=faces[0], timeout=60)
    assert r.status_code == 400 and "drop format=png" in r.json()["error"]


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64)))).astype(int)


def _encode(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_bytes(path: Path) -> bytes:
    return _encode(np.asarray(Image.open(path).convert("RGB").resize((64, 64))))
