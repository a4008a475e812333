"""The Flickr downloader against replayed responses (the `responses` library stands in for api.flickr.com and the
static image host): the code path is the one users run."""

import json
import re

import pytest
import responses
from PIL import Image

from dequantizer.cli import main
from dequantizer.data import JpegDataModule
from dequantizer.data.flickr import (
    API_URL,
    FlickrClient,
    FlickrError,
    InvalidApiKey,
    RateLimiter,
    download_dataset,
    imagenet_categories,
    prepare_dataset,
)
from dequantizer.data.sources import FlickrPhotos
from dequantizer.errors import DequantizerError
from helpers import jpeg_bytes, noise

KEY = "test-key-0123456789abcdef"
IMAGE_HOST = "https://live.staticflickr.com"


def photo_jpeg(seed, size=(200, 150)):
    """A photo as Flickr serves it: a q90 JPEG of seeded noise, ``size`` (width, height)."""
    return jpeg_bytes(noise(size[1], size[0], seed), quality=90)


def fake_client():
    return FlickrClient(KEY, calls_per_hour=1e9, retries=2, backoff=0, sleep=lambda seconds: None)


class FakeFlickr:
    """Answers flickr.photos.search and flickr.photos.getSizes, and serves the images."""

    def __init__(self, mock, photos_per_category=3, images=None):
        self.mock, self.photos_per_category = mock, photos_per_category
        self.images = images or {}
        mock.add_callback(responses.GET, API_URL, callback=self.api)
        mock.add_callback(responses.GET, re.compile(IMAGE_HOST + "/.*"), callback=self.image)

    def api(self, request):
        params = dict(re.findall(r"([^?&=]+)=([^&]*)", request.url))
        assert params["api_key"] == KEY
        if params["method"] == "flickr.photos.search":
            base = sum(map(ord, params["text"])) * 100
            # Owner i took photo i of every category: one owner's photos must stay in one part of the split.
            photos = [{"id": str(base + i), "owner": f"{10 + i}@N0", "ownername": f"Owner {i}", "license": "4",
                       "title": "t"} for i in range(self.photos_per_category)]
            return 200, {}, json.dumps({"stat": "ok", "photos": {"photo": photos}})
        photo_id = params["photo_id"]
        sizes = [{"label": "Small", "width": 320, "height": 240, "source": f"{IMAGE_HOST}/{photo_id}_s.jpg"},
                 {"label": "Medium 640", "width": 640, "height": 480, "source": f"{IMAGE_HOST}/{photo_id}_z.jpg"},
                 {"label": "Large", "width": 1024, "height": 768, "source": f"{IMAGE_HOST}/{photo_id}_b.jpg"}]
        return 200, {}, json.dumps({"stat": "ok", "sizes": {"size": sizes}})

    def image(self, request):
        photo_id = request.url.rsplit("/", 1)[1].split("_")[0]
        assert request.url.endswith("_z.jpg")  # the ~640 px size
        return 200, {"Content-Type": "image/jpeg"}, self.images.get(photo_id, photo_jpeg(int(photo_id)))


def test_happy_path_manifest_attribution_and_prepare(tmp_path):
    out = tmp_path / "flickr"
    with responses.RequestsMock() as mock:
        FakeFlickr(mock)
        stats = download_dataset(fake_client(), ["goldfish", "tench"], out, per_category=3, progress=False)
    assert stats.downloaded == 6
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["category"] for r in records} == {"goldfish", "tench"}
    assert all(re.fullmatch(r"images/\d+\.jpg", r["file"]) and (out / r["file"]).is_file() for r in records)
    assert all(len(r["sha256"]) == 64 and r["license"] == "4" and r["owner"].endswith("@N0") for r in records)
    assert "Owner 0 (10@N0)" in (out / "ATTRIBUTION.txt").read_text()

    summary = prepare_dataset(out, size=96, val_fraction=0.34, test_fraction=0.34)
    prepared = out / "prepared"
    split = json.loads((prepared / "split.json").read_text())
    assert summary["photos"] == 6 and summary["owners"] == 3 and split["group_by"] == "owner"
    owner = {f"images/{r['id']}.png": r["owner"] for r in records}
    parts = {part: {owner[name] for name in split[part]} for part in ("train", "val", "test")}
    assert [len(split[part]) for part in ("train", "val", "test")] == [2, 2, 2]
    assert all(len(owners) == 1 for owners in parts.values()) and len(set.union(*parts.values())) == 3
    for name in split["train"]:
        assert Image.open(prepared / name).size == (96, 96)
    datamodule = JpegDataModule(FlickrPhotos(prepared), quality=1, crop_size=96, batch_size=2, num_workers=0)
    datamodule.setup()
    jpeg, target, _ = next(iter(datamodule.train_dataloader()))
    assert jpeg.shape == (2, 3, 96, 96)
    assert datamodule.test_part == "test" and len(datamodule.test_set) == 2

    # a later download: the photos already split keep their part, a known owner's new photo joins its part
    with responses.RequestsMock() as mock:
        FakeFlickr(mock, photos_per_category=4)
        download_dataset(fake_client(), ["goldfish", "tench"], out, per_category=4, progress=False)
    prepare_dataset(out, size=96, val_fraction=0.34, test_fraction=0.34)
    grown = json.loads((prepared / "split.json").read_text())
    assert all(set(split[part]) <= set(grown[part]) for part in ("train", "val", "test"))
    assert sum(len(grown[part]) for part in ("train", "val", "test")) == 8


def test_the_download_happens_in_prepare_data_only(tmp_path, monkeypatch):
    """Lightning calls prepare_data in one process per node, setup in every one: only the first may download."""
    from dequantizer.data import flickr

    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    monkeypatch.setattr(flickr, "imagenet_categories", lambda: ["goldfish", "tench"])
    monkeypatch.setattr(flickr, "FlickrClient", lambda key: fake_client())
    datamodule = JpegDataModule(FlickrPhotos(tmp_path / "flickr" / "prepared"), quality=1, crop_size=96,
                                num_workers=0)
    with responses.RequestsMock() as mock:  # no response registered: any request would fail
        with pytest.raises(DequantizerError, match="no prepared Flickr set"):
            datamodule.setup()
        assert not mock.calls
    with responses.RequestsMock() as mock:
        FakeFlickr(mock)
        datamodule.prepare_data()
    datamodule.setup()
    assert len(datamodule.train_set) + len(datamodule.val_set) + len(datamodule.test_set) == 6


def test_rate_limit_then_success_honours_retry_after():
    waits = []
    client = FlickrClient(KEY, calls_per_hour=1e9, retries=3, backoff=0, sleep=waits.append)
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, API_URL, status=429, headers={"Retry-After": "7"})
        mock.add(responses.GET, API_URL, json={"stat": "ok", "photos": {"photo": []}})
        assert client.search("tench", 10) == []
    assert 7.0 in waits


def test_server_errors_exhaust_retries_with_one_clear_line():
    client = fake_client()
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, API_URL, status=503)
        with pytest.raises(FlickrError, match="answered HTTP 503 3 times: try again later"):
            client.search("tench", 10)
        assert len(mock.calls) == 3


def test_invalid_key_stops_the_run_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    with responses.RequestsMock() as mock:
        failure = {"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"}
        mock.add(responses.GET, API_URL, json=failure)
        with pytest.raises(InvalidApiKey, match="invalid API key"):
            download_dataset(fake_client(), ["tench", "goldfish"], tmp_path, progress=False)
        assert len(mock.calls) == 1
        code = main(["download", "--out", str(tmp_path), "--categories", str(write_lines(tmp_path, ["tench"])),
                     "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: flickr.photos.search: invalid API key") and "\n" not in err
    assert KEY not in err


def write_lines(folder, lines):
    path = folder / "categories.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_key_is_one_clear_line(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("FLICKR_API_KEY", raising=False)
    assert main(["download", "--out", str(tmp_path)]) == 2
    assert "set FLICKR_API_KEY" in capsys.readouterr().err


def test_corrupt_tiny_and_duplicate_images_are_skipped_and_counted(tmp_path):
    base = sum(map(ord, "tench")) * 100
    images = {str(base): b"\xff\xd8\xff\xe0 truncated", str(base + 1): photo_jpeg(1, size=(40, 30)),
              str(base + 3): photo_jpeg(base + 2)}  # same bytes as photo base+2
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        FakeFlickr(mock, photos_per_category=5, images=images)
        stats = download_dataset(fake_client(), ["tench"], tmp_path, per_category=5, progress=False)
    assert stats.downloaded == 2
    assert stats.skipped == {"corrupt or not an image": 1, "too small": 1, "duplicate bytes": 1}
    assert len(list((tmp_path / "images").iterdir())) == 2


def test_interrupted_download_resumes_without_duplicates_or_partial_files(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = FlickrClient.download

    def dying(self, url):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the user presses Ctrl-C in the middle
        return original(self, url)

    monkeypatch.setattr(FlickrClient, "download", dying)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        FakeFlickr(mock)
        with pytest.raises(KeyboardInterrupt):
            download_dataset(fake_client(), ["goldfish", "tench"], tmp_path, per_category=3, workers=1,
                             progress=False)
    before = len((tmp_path / "manifest.jsonl").read_text().splitlines())
    assert 3 <= before < 6  # goldfish complete, tench not
    monkeypatch.setattr(FlickrClient, "download", original)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        FakeFlickr(mock)
        stats = download_dataset(fake_client(), ["goldfish", "tench"], tmp_path, per_category=3, progress=False)
    assert stats.downloaded == 6 - before and stats.already_done == 1
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 6 and len({r["id"] for r in records}) == 6
    files = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert len(files) == 6 and not [name for name in files if name.startswith(".")]


def test_the_api_key_lands_in_no_file(tmp_path):
    with responses.RequestsMock() as mock:
        FakeFlickr(mock)
        download_dataset(fake_client(), ["goldfish"], tmp_path / "flickr", per_category=3, progress=False)
    prepare_dataset(tmp_path / "flickr")
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(files) > 5
    assert not [path for path in files if KEY.encode() in path.read_bytes()]


def test_ids_cannot_steer_paths(tmp_path):
    class Evil(FakeFlickr):
        def api(self, request):
            if "photos.search" in request.url:
                photo = {"id": "../../etc/passwd", "owner": "x", "ownername": "x", "license": "0"}
                return 200, {}, json.dumps({"stat": "ok", "photos": {"photo": [photo]}})
            return super().api(request)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        Evil(mock)
        stats = download_dataset(fake_client(), ["tench"], tmp_path, per_category=1, progress=False)
    assert stats.skipped == {"bad photo id": 1} and not (tmp_path / "images").exists()


def test_rate_limiter_spaces_calls():
    now, slept = [0.0], []
    limiter = RateLimiter(3600, clock=lambda: now[0], sleep=slept.append)
    for _ in range(3):
        limiter.wait()
    assert slept == [1.0, 2.0]  # one call a second, evenly spaced


def test_categories_are_the_1000_ilsvrc_names_and_distinct(tmp_path):
    names = imagenet_categories()
    assert len(names) == 1000 == len(set(names)) and names[0] == "tench"
    assert imagenet_categories(write_lines(tmp_path, ["crane", "crane", "kite"])) == ["crane", "crane 2", "kite"]
