"""i2i: image-to-image translation GANs — train, export, serve."""

__version__ = "0.1.0"
