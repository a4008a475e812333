"""`dequantizer app`: its work on files, and the page end to end in a real headless browser (Debian's Chromium
driven by chromedriver; `make test` installs both where missing)."""

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from dequantizer import dequantize
from dequantizer.app import ZOOM_SIDE, Failed, Restored, detect, is_quality_aware, prune, restore_files, start, zoom
from dequantizer.cli import main
from dequantizer.errors import DequantizerError


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {"jpeg": folder / "cat.jpg", "broken": folder / "broken.jpg", "clean": folder / "clean.png",
             "large": folder / "large.jpg"}
    Image.fromarray(skimage.data.chelsea()[:200, :264]).save(paths["jpeg"], quality=30)
    paths["broken"].write_bytes(b"not a jpeg")
    Image.fromarray(skimage.data.astronaut()[:96, :96]).save(paths["clean"])
    Image.fromarray(skimage.data.coffee()).save(paths["large"], quality=20)  # 600x400: two tiles of 512
    return paths


def test_detect_names_the_quality_and_where_it_was_read(photos):
    rows = detect([photos["jpeg"], photos["broken"]])
    assert rows[0] == ["cat.jpg", "q30", "the tables", ""]
    assert rows[1][0] == "broken.jpg" and rows[1][3].startswith("error: cannot read it as an image")
    assert str(photos["broken"].parent) not in rows[1][3]  # named as the user knows it, not by its folder


def test_restore_files_writes_what_dequantize_gives(photos, tmp_path):
    steps = []
    results = restore_files([photos["large"], photos["broken"], photos["jpeg"]], tmp_path,
                            progress=lambda fraction, text: steps.append((fraction, text)))
    large, broken, cat = results
    assert isinstance(broken, Failed) and broken.error.startswith("cannot read it as an image")
    assert isinstance(large, Restored) and large.done == "restored as q20 (from the tables)"
    assert large.after == tmp_path / "0" / "large.png"
    for result, source in ((large, photos["large"]), (cat, photos["jpeg"])):
        assert np.array_equal(np.asarray(Image.open(result.after)), np.asarray(dequantize(source)))
        assert np.array_equal(np.asarray(Image.open(result.before)), np.asarray(Image.open(source).convert("RGB")))
    # The large photo takes two tiles and reports each; the fractions climb to 1 over all three files.
    assert [text for _, text in steps[:3]] == [f"large.jpg (1 of 3): tile {n} of 2" for n in range(3)]
    fractions = [fraction for fraction, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_strength_overrides_the_detected_quality(photos, tmp_path):
    (strong,) = restore_files([photos["jpeg"]], tmp_path, quality=5)
    assert strong.done == "restored as q5 (from the user)"
    assert np.array_equal(np.asarray(Image.open(strong.after)), np.asarray(dequantize(photos["jpeg"], quality=5)))


def test_every_kind_of_photo_is_shown_as_it_is_restored(tmp_path):
    """The JPEG view beside a restoration is the input as the restorer reads it: upright, 8-bit, grey kept grey,
    alpha kept, no CMYK profile on RGB pixels; and a photo named like the view never overwrites its restoration."""

    rgb = skimage.data.chelsea()[:64, :96]
    Image.fromarray(rgb).save(tmp_path / "before.jpg", quality=30)
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    rotated.save(tmp_path / "rotated.jpg", quality=30, exif=exif)
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "rgba.png")
    grey16 = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    grey16.save(tmp_path / "grey16.png")
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=30, icc_profile=b"not an RGB profile")
    names = ["before.jpg", "rotated.jpg", "rgba.png", "grey16.png", "cmyk.jpg"]
    results = restore_files([tmp_path / name for name in names], tmp_path / "out", model="blind_v1")
    for result in results:
        before, after = Image.open(result.before), Image.open(result.after)
        assert result.before != result.after and before.size == after.size, result.name
        assert before.mode == after.mode and "icc_profile" not in before.info, result.name
    assert np.array_equal(np.asarray(Image.open(results[0].after)), np.asarray(dequantize(tmp_path / "before.jpg",
                                                                                          model="blind_v1")))
    assert Image.open(results[1].before).size == (64, 96)  # upright
    assert Image.open(results[2].before).mode == "RGBA"
    assert np.array_equal(np.asarray(Image.open(results[3].before)), rgb[..., 0])  # 16 bits scaled, not clipped


def test_a_model_not_told_the_quality_has_no_strength(photos):
    assert is_quality_aware() and not is_quality_aware("beta")
    assert detect([photos["jpeg"]], "beta") == [["cat.jpg", "q30", "the tables",
                                                 "this model restores without being told a quality"]]


def test_old_restorations_are_deleted(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    os.utime(tmp_path / "old", (0, 0))
    prune(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["new"]


def test_zoom_shows_the_same_square_of_both_at_full_size(photos, tmp_path):
    (result,) = restore_files([photos["large"]], tmp_path)
    before, after, corner = zoom(result, (10, 390))  # near the bottom-left corner: the square stays inside
    assert before.shape == after.shape == (ZOOM_SIDE, ZOOM_SIDE, 3)
    assert corner == (0, 400 - ZOOM_SIDE)
    assert np.array_equal(after, np.asarray(Image.open(result.after))[400 - ZOOM_SIDE :, :ZOOM_SIDE])
    assert not np.array_equal(before, after)


def test_cli_app_says_what_to_install_without_gradio(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_gradio(name, *args, **kwargs):
        if name == "gradio" or name.startswith("gradio."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    assert main(["app"]) == 2
    assert capsys.readouterr().err.strip() == "error: the app needs Gradio: pip install 'dequantizer[app]'"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_taken_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DequantizerError, match=f"cannot serve on 127.0.0.1:{port} .*choose another --port"):
            start(port=port)


@pytest.fixture(scope="module")
def page():
    page = start(port=free_port())
    assert page.local_url.startswith("http://127.0.0.1:")  # this computer only
    yield page
    page.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "the browser test needs Debian's chromium and chromium-driver (`make test` has them)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,2000"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    browser = webdriver.Chrome(service=Service(driver), options=options)
    yield browser
    browser.quit()


@pytest.mark.slow  # Chromium: `make test` installs it, `make test-fast` needs none
def test_in_a_browser_upload_restore_download(page, browser, downloads, photos):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 120)
    browser.get(page.local_url)
    upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#photos input[type=file]"))
    upload.send_keys(f"{photos['jpeg']}\n{photos['broken']}")
    # The quality each photo will be restored for, and where it was read, before anything is restored.
    found = wait.until(lambda b: b.find_element(By.ID, "detected-table").text if "q30" in
                       b.find_element(By.ID, "detected-table").text else None)
    assert "the tables" in found and "cannot read it as an image" in found
    browser.find_element(By.ID, "restore").click()
    link = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#downloads a[download]"))
    assert [a.get_attribute("download") for a in link] == ["cat.png"]  # the broken file is refused, not restored
    results = browser.find_element(By.ID, "results-table").text
    assert "restored as q30 (from the tables)" in results and "cannot read it as an image" in results
    link[0].click()
    target = downloads / "cat.png"
    deadline = time.monotonic() + 60
    while not target.exists() and time.monotonic() < deadline:  # Chromium writes cat.png.crdownload first
        time.sleep(0.2)
    assert np.array_equal(np.asarray(Image.open(target)), np.asarray(dequantize(photos["jpeg"])))
    # Before and after, side by side at 100%: the photo (smaller than the zoom square), its pixels never scaled.
    views = [browser.find_element(By.CSS_SELECTOR, f"#{name} img") for name in ("before-zoom", "after-zoom")]
    sizes = [(view.get_property("naturalWidth"), view.get_property("naturalHeight")) for view in views]
    assert sizes == [(264, 200)] * 2
    assert [view.size for view in views] == [{"width": 264, "height": 200}] * 2  # a click's point is the pixel's
