"""dequantizer: restore JPEG-damaged photos with a GAN."""

from dequantizer.errors import DequantizerError

__all__ = ["DequantizerError"]
__version__ = "0.1.0"
