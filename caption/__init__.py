"""caption: image captioning with soft and hard visual attention (Show, Attend and Tell), and the
same attention module on a character seq2seq path.

    import caption
    model = caption.load()                        # the shipped soft-attention scenes model
    result = model.caption("image.png", beam_size=3)
    caption.overlay("image.png", result, out="attention.png")
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `caption --help` and the text path do not pay for what they do not use.
    if name == "load":
        from .api import load
        return load
    if name == "overlay":
        from .overlay import overlay
        return overlay
    raise AttributeError(f"module 'caption' has no attribute {name!r}")
