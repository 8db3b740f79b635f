"""caption: image captioning with soft and hard visual attention (Show, Attend and Tell) and a
Transformer decoder, and the same attention module on a character seq2seq path.

    import caption
    model = caption.load()                        # the shipped soft-attention scenes model
    result = model.caption("image.png", beam_size=3)
    caption.overlay("image.png", result, out="attention.png")

Shape letters, one meaning across the package (comments such as `# (N, T, V)` use them):
    B       images, or text sources (of a batch, or of a whole set)
    N       rows that run together: the captions of a batch's images (training), B * K beams (search)
    M       every caption of a data set
    T       decoder steps: words, or characters
    S       source length of the text path
    L       annotation locations, gh * gw; gh, gw the height and width of the annotation grid
    D       annotation size (the attention's keys and values)
    E, H    embedding size, LSTM hidden size
    A, Q    attention size of the additive score, query size
    V, K    vocabulary size, beam size
    P, C    image side in pixels, image channels (or object labels)
    R       entries of the reward-to-go baseline, one per number of words left
    F, h    a Transformer's model size and its attention heads (each head F / h wide); Y its layers
"""
__version__ = "0.2.0"   # checkpoint format 5 (caption/checkpoint.py)

__all__ = ["CaptionModel", "DecodeOptions", "explore", "load", "overlay", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `caption --help` and the text path do not pay for what they do not use.
    if name == "load":
        from .api import load
        return load
    if name == "explore":
        from .api import explore
        return explore
    if name == "CaptionModel":
        from .api import CaptionModel
        return CaptionModel
    if name == "DecodeOptions":
        from .search import DecodeOptions
        return DecodeOptions
    if name == "overlay":
        from .viz.overlay import overlay
        return overlay
    raise AttributeError(f"module 'caption' has no attribute {name!r}")
