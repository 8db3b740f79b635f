"""The character seq2seq path: data in the book's format, the model, a translator, training."""
