"""caption: image captioning with soft and hard attention (Show, Attend and Tell), and the same
attention module in a character seq2seq."""
__version__ = "0.1.0"
