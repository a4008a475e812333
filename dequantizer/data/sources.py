"""Where training photos come from. Each source lists photo files under a ``root`` (where the split is saved too);
``prepare`` makes them first where they are made (exported, downloaded), and is called by one process only.

- ``SamplePhotos``: scikit-image's bundled photos, written once as PNG under ``root``; works offline.
- ``FolderPhotos``: any directory tree of photos.
- ``FlickrPhotos``: the set made by ``dequantizer download`` + ``dequantizer prepare``; it carries its own split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from dequantizer.data.split import PARTS
from dequantizer.errors import DequantizerError
from dequantizer.images import IMAGE_EXTENSIONS, save_image_atomic

# scikit-image photos used as built-in training data: name -> area-downscale factor. The JPEG-born ones are
# downscaled 2x to erase most of their own compression history. Synthetic images (chessboard, text, logo) are left out.
SAMPLE_PHOTOS = {
    "astronaut": 1, "chelsea": 1, "coffee": 1, "motorcycle_left": 1, "motorcycle_right": 1,
    "immunohistochemistry": 1, "camera": 1, "moon": 1, "brick": 1, "grass": 1, "gravel": 1, "coins": 1,
    "rocket": 2, "hubble_deep_field": 2, "retina": 2,
}  # fmt: skip
# The two motorcycle photos are a stereo pair: they must land in the same split.
SAMPLE_GROUPS = {"motorcycle_left": "motorcycle", "motorcycle_right": "motorcycle"}


class FolderPhotos:
    """Every image file under ``root``, recursively (hidden folders and files are ignored)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def prepare(self) -> None:
        """Make the photos when this source makes them. Lightning calls it in one process (``prepare_data``)."""

    def photo_paths(self) -> list[Path]:
        if not self.root.is_dir():
            raise DequantizerError(
                f"photo folder {self.root} does not exist: set data.source.root to a folder of photos"
            )
        paths = sorted(
            path
            for path in self.root.rglob("*")
            if path.suffix.lower() in IMAGE_EXTENSIONS
            and path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(self.root).parts)
        )
        if not paths:
            raise DequantizerError(f"no photos ({', '.join(IMAGE_EXTENSIONS)}) found under {self.root}")
        return paths

    def group(self, path: Path) -> str:
        """Photos of one group always land in the same split."""
        return path.relative_to(self.root).with_suffix("").as_posix()

    def describe(self) -> str:
        """What these photos are, in words (exports record it as the model's training data)."""
        return f"the photos under {self.root.name}/"

    def saved_split(self) -> dict[str, list[str]] | None:
        """A split fixed by whoever made the data, or None to let the DataModule make and save one."""
        return None


class SamplePhotos(FolderPhotos):
    """scikit-image's bundled photos, exported once to ``root`` as PNG."""

    def prepare(self) -> None:
        import skimage.data

        for name, factor in SAMPLE_PHOTOS.items():
            path = self.root / f"{name}.png"
            if path.exists():
                continue
            if name.startswith("motorcycle_"):
                left, right, _ = skimage.data.stereo_motorcycle()
                pixels = left if name == "motorcycle_left" else right
            else:
                pixels = getattr(skimage.data, name)()
            image = Image.fromarray(np.asarray(pixels)).convert("RGB")
            if factor > 1:
                image = image.reduce(factor)  # box filter: an area downscale
            save_image_atomic(image, path)

    def photo_paths(self) -> list[Path]:
        missing = [name for name in SAMPLE_PHOTOS if not (self.root / f"{name}.png").is_file()]
        if missing:
            raise DequantizerError(f"the built-in photos are not exported to {self.root} yet ({missing[0]}.png): "
                                   "call prepare() first (train.py does)")
        return [self.root / f"{name}.png" for name in SAMPLE_PHOTOS]

    def group(self, path: Path) -> str:
        return SAMPLE_GROUPS.get(path.stem, path.stem)

    def describe(self) -> str:
        return "scikit-image's sample photos"


class FlickrPhotos(FolderPhotos):
    """The prepared Flickr set: ``root/images/*.png`` and ``root/split.json`` written by ``dequantizer prepare``.

    When it is missing and FLICKR_API_KEY is set, the paper's set (10 photos for each ILSVRC-2012 class, 96x96) is
    downloaded into ``root``'s parent and prepared first.
    """

    def prepare(self) -> None:
        import os

        from dequantizer.data import flickr

        if not (self.root / "split.json").is_file() and os.environ.get(flickr.API_KEY_ENV):
            client = flickr.FlickrClient(flickr.api_key_from_environment())
            flickr.download_dataset(client, flickr.imagenet_categories(), self.root.parent, per_category=10)
            flickr.prepare_dataset(self.root.parent, self.root, size=96)

    def photo_paths(self) -> list[Path]:
        if not (self.root / "split.json").is_file():
            raise DequantizerError(
                f"no prepared Flickr set at {self.root}: run `dequantizer download` and `dequantizer prepare` "
                "(see README, needs FLICKR_API_KEY), or train on other photos with data=samples or data=folder"
            )
        return super().photo_paths()

    def describe(self) -> str:
        return f"Flickr photos from `dequantizer download` ({self.root.parent.name}/: terms in its ATTRIBUTION.txt)"

    def saved_split(self) -> dict[str, list[str]]:
        split = json.loads((self.root / "split.json").read_text())
        return {part: split[part] for part in PARTS if part in split}
