"""Figures as PNG files, drawn with Pillow: attention over images and text attention heat maps."""
