"""Training data: photo sources, the train/val/test split and the Lightning DataModule of JPEG pairs.

The DataModule is imported on first use, so that the photo sources (and `dequantizer download`) load without
Lightning.
"""

from dequantizer.data.sources import FlickrPhotos, FolderPhotos, SamplePhotos

__all__ = ["FlickrPhotos", "FolderPhotos", "JpegDataModule", "SamplePhotos"]


def __getattr__(name: str):
    if name == "JpegDataModule":
        from dequantizer.data.datamodule import JpegDataModule

        return JpegDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
