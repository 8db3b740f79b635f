"""Image-caption data: image sets, readers, batches, and the built-in synthetic scenes."""
