"""The paper's data: the newest Flickr photos for each ILSVRC-2012 class name, downloaded and prepared.

Flickr REST API (https://www.flickr.com/services/api/), JSON format, API key from FLICKR_API_KEY:
- ``flickr.photos.search``: text=<class name>, sort=date-posted-desc, content_types=0 (photos only), media=photos,
  safe_search=1, optional license=<ids>, extras=owner_name,license, per_page.
- ``flickr.photos.getSizes``: photo_id -> the list of static sizes; we take the smallest one at least 640 px on its
  long side (else the largest), then download its ``source`` URL from Flickr's static image host.

Resumable and safe: every photo gets a line in ``manifest.jsonl`` (id, category, owner, license, source URL, sha256,
file); a rerun skips categories and photos already done; files are written to a temporary name and renamed; photos
with the same id or the same bytes are kept once; file names come from the numeric photo id only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image

from dequantizer.errors import DequantizerError
from dequantizer.files import atomic_write
from dequantizer.images import read_image

log = logging.getLogger(__name__)

API_URL = "https://api.flickr.com/services/rest/"
API_KEY_ENV = "FLICKR_API_KEY"
TARGET_SIDE = 640
MIN_SIDE = 96  # smaller images cannot give a 96x96 crop
INVALID_KEY_CODES = {100}  # "Invalid API Key"
FLICKR_ERRORS = {
    100: "invalid API key: check FLICKR_API_KEY (get one at https://www.flickr.com/services/apps/create/)",
    105: "Flickr's service is unavailable right now: try again later",
    112: "Flickr does not know this method",
    116: "bad URL: Flickr rejected the request",
}


class FlickrError(DequantizerError):
    """A Flickr API failure, as one line."""


class InvalidApiKey(FlickrError):
    """The key is wrong: nothing else can work, the run stops at once."""


def api_key_from_environment() -> str:
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise DequantizerError(
            f"set {API_KEY_ENV} to your Flickr API key (https://www.flickr.com/services/apps/create/) to download"
        )
    return key


def imagenet_categories(path: str | Path | None = None) -> list[str]:
    """The 1000 ILSVRC-2012 class names (from torchvision's weights metadata, offline), or one name a line from
    ``path``. Repeated names are made distinct with a numeric suffix."""
    if path is None:
        from torchvision.models import ResNet50_Weights

        names = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    else:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    seen: Counter[str] = Counter()
    distinct = []
    for name in names:
        seen[name] += 1
        distinct.append(name if seen[name] == 1 else f"{name} {seen[name]}")
    return distinct


class RateLimiter:
    """At most ``calls_per_hour`` API calls, evenly spaced, shared by all threads."""

    def __init__(self, calls_per_hour: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval = 3600.0 / calls_per_hour
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.next_time = 0.0

    def wait(self) -> None:
        with self.lock:
            now = self.clock()
            delay = self.next_time - now
            self.next_time = max(now, self.next_time) + self.interval
        if delay > 0:
            self.sleep(delay)


class FlickrClient:
    """Flickr REST calls and image downloads over one ``requests.Session``, with timeouts, a rate limit and retries
    (exponential backoff with jitter on connection errors, 429 and 5xx; ``Retry-After`` honoured)."""

    def __init__(self, api_key: str, calls_per_hour: float = 3000, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 1.0, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.api_key = api_key
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = "dequantizer (+https://github.com/dequantizer)"
        self.timeout, self.retries, self.backoff, self.sleep = timeout, retries, backoff, sleep
        self.limiter = RateLimiter(calls_per_hour, sleep=sleep)

    def _get(self, url: str, params: dict | None = None) -> requests.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self.session.get(url, params=params, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as error:
                if attempt == self.retries:
                    raise FlickrError(
                        f"cannot reach {url.split('/')[2]} ({type(error).__name__}): check your connection"
                    ) from None
                self.sleep(self.backoff * 2**attempt * (1 + random.random()))
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if attempt == self.retries:
                    raise FlickrError(f"{url.split('/')[2]} answered HTTP {response.status_code} "
                                      f"{self.retries + 1} times: try again later")
                retry_after = response.headers.get("Retry-After", "")
                backoff = self.backoff * 2**attempt * (1 + random.random())
                self.sleep(float(retry_after) if retry_after.isdigit() else backoff)
                continue
            if response.status_code != 200:
                raise FlickrError(f"{url.split('/')[2]} answered HTTP {response.status_code}")
            return response
        raise AssertionError("unreachable")

    def call(self, method: str, **params) -> dict:
        """One API call; Flickr's own error payloads become one clear line each."""
        self.limiter.wait()
        query = {"method": method, "api_key": self.api_key, "format": "json", "nojsoncallback": 1, **params}
        response = self._get(API_URL, query)
        try:
            payload = response.json()
        except ValueError:
            raise FlickrError(f"{method}: Flickr answered something that is not JSON") from None
        if payload.get("stat") != "ok":
            code = int(payload.get("code", 0))
            message = FLICKR_ERRORS.get(code, f"{payload.get('message', 'unknown error')} (code {code})")
            raise (InvalidApiKey if code in INVALID_KEY_CODES else FlickrError)(f"{method}: {message}")
        return payload

    def search(self, text: str, count: int, licenses: str | None = None) -> list[dict]:
        """The newest photos matching ``text``: id, owner, ownername, license, title."""
        params = {"text": text, "sort": "date-posted-desc", "content_types": 0, "media": "photos", "safe_search": 1,
                  "extras": "owner_name,license", "per_page": min(count, 500), "page": 1}
        if licenses:
            params["license"] = licenses
        return self.call("flickr.photos.search", **params)["photos"]["photo"]

    def image_url(self, photo_id: str) -> str:
        sizes = self.call("flickr.photos.getSizes", photo_id=photo_id)["sizes"]["size"]
        sizes = [size for size in sizes if size.get("media", "photo") == "photo" and size.get("source")]
        if not sizes:
            raise FlickrError(f"photo {photo_id} has no downloadable size")
        side = lambda size: max(int(size.get("width") or 0), int(size.get("height") or 0))  # noqa: E731
        large_enough = [size for size in sizes if side(size) >= TARGET_SIDE]
        chosen = min(large_enough, key=side) if large_enough else max(sizes, key=side)
        return chosen["source"]

    def download(self, url: str) -> bytes:
        if not url.startswith("https://"):
            raise FlickrError(f"refusing a non-https image URL {url!r}")
        return self._get(url).content


@dataclass
class DownloadStats:
    downloaded: int = 0
    already_done: int = 0
    skipped: Counter = None

    def __post_init__(self):
        self.skipped = Counter()


def check_photo(data: bytes) -> str | None:
    """Why these bytes are not a usable photo, or None."""
    try:
        image = read_image(io.BytesIO(data), "download")
    except DequantizerError as error:
        bomb = isinstance(error.__cause__, Image.DecompressionBombError)
        return "decompression bomb" if bomb else "corrupt or not an image"
    if image.format not in ("JPEG", "PNG", "WEBP", "GIF"):
        return "not a photo format"
    if min(image.size) < MIN_SIDE:
        return "too small"
    return None


class Manifest:
    """``manifest.jsonl``: one JSON object a line, appended and fsynced under a lock (a killed run loses at most the
    photo in flight, whose file is then re-downloaded)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.records: list[dict] = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that photo is simply fetched again
        self.ids = {record["id"] for record in self.records}
        self.hashes = {record["sha256"] for record in self.records}

    def per_category(self) -> Counter:
        return Counter(record["category"] for record in self.records)

    def add(self, record: dict, data: bytes) -> str | None:
        """Write the photo's file, then its line; or say why not (same id or same bytes already there)."""
        with self.lock:
            if record["id"] in self.ids:
                return "duplicate id"
            if record["sha256"] in self.hashes:
                return "duplicate bytes"
            atomic_write(self.path.parent / record["file"], data)
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")
                file.flush()
                os.fsync(file.fileno())
            self.records.append(record)
            self.ids.add(record["id"])
            self.hashes.add(record["sha256"])
            return None


def write_attribution(manifest: Manifest, out: Path) -> Path:
    lines = ["Photos downloaded from Flickr by `dequantizer download`. Each photo belongs to its owner; see its",
             "license (Flickr license id, https://www.flickr.com/services/api/flickr.photos.licenses.getInfo.html).",
             "", "file\tphoto id\towner\tlicense\tsource"]
    for record in manifest.records:
        lines.append(f"{record['file']}\t{record['id']}\t{record['owner_name']} ({record['owner']})\t"
                     f"{record['license']}\thttps://www.flickr.com/photos/{record['owner']}/{record['id']}")
    return atomic_write(out / "ATTRIBUTION.txt", "\n".join(lines) + "\n")


def download_dataset(client: FlickrClient, categories: Iterable[str], out: str | Path, per_category: int = 10,
                     licenses: str | None = None, workers: int = 4, progress: bool = True) -> DownloadStats:
    """Download ``per_category`` photos for each category into ``out/images``; resumable."""
    from tqdm import tqdm

    out = Path(out)
    manifest = Manifest(out / "manifest.jsonl")
    stats = DownloadStats()
    done = manifest.per_category()
    categories = list(categories)
    stats_lock = threading.Lock()

    def skip(why: str) -> None:
        with stats_lock:
            stats.skipped[why] += 1

    def fetch(category: str, photo: dict) -> None:
        photo_id = str(photo.get("id", ""))
        if not photo_id.isdigit():
            skip("bad photo id")
            return
        try:
            data = client.download(client.image_url(photo_id))
        except InvalidApiKey:
            raise
        except FlickrError as error:
            log.warning("photo %s: %s", photo_id, error)
            skip("download failed")
            return
        problem = check_photo(data)
        if problem:
            skip(problem)
            return
        record = {"id": photo_id, "category": category, "owner": str(photo.get("owner", "")),
                  "owner_name": str(photo.get("ownername", "")), "license": str(photo.get("license", "")),
                  "source": f"https://www.flickr.com/photos/{photo.get('owner', '')}/{photo_id}",
                  "sha256": hashlib.sha256(data).hexdigest(), "file": f"images/{photo_id}.jpg"}
        duplicate = manifest.add(record, data)
        if duplicate:
            skip(duplicate)
        else:
            with stats_lock:
                stats.downloaded += 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for category in tqdm(categories, unit="category", disable=not progress):
            missing = per_category - done.get(category, 0)
            if missing <= 0:
                stats.already_done += 1
                continue
            # Ask for spares: some photos are skipped (corrupt, tiny, duplicates).
            candidates = [p for p in client.search(category, per_category * 2, licenses)
                          if str(p.get("id")) not in manifest.ids]
            while missing > 0 and candidates:
                batch, candidates = candidates[:missing], candidates[missing:]
                for future in [pool.submit(fetch, category, photo) for photo in batch]:
                    future.result()  # re-raises InvalidApiKey: stop at once
                missing = per_category - manifest.per_category().get(category, 0)
    write_attribution(manifest, out)
    return stats


def prepare_dataset(source: str | Path, out: str | Path | None = None, size: int = 96, val_fraction: float = 0.2,
                    seed: int = 1234, test_fraction: float = 0.1) -> dict:
    """Centre square crop + resize to ``size`` (Lanczos), stored as PNG; split into train / val / test by owner,
    seeded, into split.json. By owner: one owner's photos (often bursts of near-identical shots) stay in one part.
    A rerun keeps the part of every photo already split by owner and places the new ones."""
    from dequantizer.data.split import PARTS, split_names
    from dequantizer.images import load_rgb, save_image_atomic, square_resize

    source = Path(source)
    out = Path(out) if out else source / "prepared"
    manifest = Manifest(source / "manifest.jsonl")
    if not manifest.records:
        raise DequantizerError(f"no downloaded photos in {source} (no manifest.jsonl): run `dequantizer download`")
    owners, skipped = {}, Counter()
    for record in manifest.records:
        name = f"images/{record['id']}.png"
        if not (out / name).is_file():
            try:
                rgb = load_rgb(source / record["file"])
            except DequantizerError:  # corrupt after download, deleted...
                skipped["unreadable"] += 1
                continue
            save_image_atomic(Image.fromarray(square_resize(rgb, size)), out / name)
        owners[name] = record.get("owner") or f"photo {record['id']}"  # no owner recorded: a group of its own
    split_file = out / "split.json"
    saved = json.loads(split_file.read_text()) if split_file.is_file() else None
    if saved is not None and saved.get("group_by") != "owner":
        log.warning("%s was split photo by photo: splitting again by owner", split_file)
        saved = None
    parts = split_names(owners, saved, val_fraction, test_fraction, seed)
    split = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction, "size": size,
             "group_by": "owner", **{part: sorted(name for name in parts[part] if name in owners) for part in PARTS}}
    atomic_write(split_file, json.dumps(split, indent=1) + "\n")
    per_category = Counter(record["category"] for record in manifest.records)
    return {"photos": len(owners), **{part: len(split[part]) for part in PARTS}, "owners": len(set(owners.values())),
            "skipped": dict(skipped), "categories": len(per_category),
            "photos_per_category": dict(Counter(per_category.values())), "out": str(out)}
