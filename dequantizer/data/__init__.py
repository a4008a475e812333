"""JPEG pair data: photo sources, the train/val split and the Lightning DataModule."""

from dequantizer.data.datamodule import JpegDataModule
from dequantizer.data.images import jpeg_roundtrip, load_rgb
from dequantizer.data.sources import FlickrPhotos, FolderPhotos, SamplePhotos

__all__ = ["FlickrPhotos", "FolderPhotos", "JpegDataModule", "SamplePhotos", "jpeg_roundtrip", "load_rgb"]
