"""Figures drawn with Pillow: attention over images and text attention heat maps, each written in
the format its file name's suffix asks for (PNG, JPEG, PDF, WebP, TIFF; PNG without one)."""
