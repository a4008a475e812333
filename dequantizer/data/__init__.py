"""JPEG pair data: photo sources, the train/val split and the Lightning DataModule.

The DataModule is imported on first use: restoring and evaluating read images through this package without loading
Lightning.
"""

from dequantizer.data.images import jpeg_roundtrip, load_rgb
from dequantizer.data.sources import FlickrPhotos, FolderPhotos, SamplePhotos

__all__ = ["FlickrPhotos", "FolderPhotos", "JpegDataModule", "SamplePhotos", "jpeg_roundtrip", "load_rgb"]


def __getattr__(name: str):
    if name == "JpegDataModule":
        from dequantizer.data.datamodule import JpegDataModule

        return JpegDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
