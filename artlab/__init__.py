"""artlab: how convolutional networks pretrained on photographs transfer to artworks."""

__version__ = "0.1.0"
