"""The vocabulary and the tokenizer shared by both paths."""
import pytest

from caption.vocab import PAD_ID, SPECIALS, Vocab, tokenize


def test_tokenizer_and_vocabulary_from_captions():
    assert tokenize("A Red circle, left of two stars.") == ["a", "red", "circle", ",", "left", "of", "two", "stars", "."]
    vocab = Vocab.build([tokenize("a red star"), tokenize("a blue star"), tokenize("a red circle")], min_count=2)
    assert vocab.itos == ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "star"]
    assert vocab.encode(tokenize("a blue star")) == [4, vocab.unk, 6]


def test_specials_come_first_so_padding_is_id_0():
    vocab = Vocab.build([["b", "a", "b"]])
    assert vocab.itos[:4] == list(SPECIALS) and vocab.pad == PAD_ID == 0
    assert (vocab.start, vocab.end, vocab.unk) == (1, 2, 3) and vocab.itos[4:] == ["b", "a"]   # most frequent first
    with pytest.raises(ValueError, match="must begin with"):
        Vocab(["a", "<pad>", "<start>", "<end>", "<unk>"])
    with pytest.raises(ValueError, match="must not repeat"):
        Vocab(list(SPECIALS) + ["a", "a"])


def test_decode_stops_at_end_and_drops_specials_encode_maps_unknowns():
    vocab = Vocab(list(SPECIALS) + ["red", "star"])
    assert vocab.decode([vocab.start, 4, vocab.pad, 5, vocab.end, 4]) == ["red", "star"]
    assert vocab.encode(["red", "blue"]) == [4, vocab.unk]
    with pytest.raises(KeyError):
        vocab.encode(["blue"], unknown_ok=False)
    assert "red" in vocab and "blue" not in vocab and len(vocab) == 6
