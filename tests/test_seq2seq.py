import random

import pytest
import torch

from caption import checkpoint
from caption.chardata import (batches, book_split, format_date, format_lines, generate, generate_dates,
                              length_groups, parse_line, read_pairs, to_tensors, DataError)
from caption.config import Seq2SeqConfig, Seq2SeqTrainConfig
from caption.seq2seq import InputError, Seq2Seq, Translator
from caption.seq2seq_train import build_model, evaluate, train


def tiny(pairs, **kw):
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(embed_dim=8, hidden_dim=16, **kw)
    model, vocab = build_model(pairs, [], cfg, torch.device("cpu"))
    return model, vocab


def test_book_split_is_numpy_seed_1984_last_tenth():
    pairs = [(f"s{i}", f"t{i}") for i in range(50)]
    train_pairs, test_pairs = book_split(pairs)
    assert len(train_pairs) == 45 and len(test_pairs) == 5
    np = pytest.importorskip("numpy")
    np.random.seed(1984)              # the book's own code, verbatim
    idx = np.arange(50)
    np.random.shuffle(idx)
    assert test_pairs == [pairs[i] for i in idx[45:]]
    assert sorted(train_pairs + test_pairs) == sorted(pairs)


def test_read_pairs_and_errors_name_the_line(tmp_path):
    f = tmp_path / "d.txt"
    f.write_text("september 27, 1994   _1994-09-27\n16+75  _91  \n")
    assert read_pairs(f) == [("september 27, 1994", "1994-09-27"), ("16+75", "91")]
    f.write_text("ok_1\nno separator here\n")
    with pytest.raises(DataError, match=r"d\.txt:2: no '_'"):
        read_pairs(f)
    with pytest.raises(DataError, match="no such file"):
        read_pairs(tmp_path / "missing.txt")


def test_generated_dates_follow_the_books_styles():
    import datetime as dt
    d = dt.date(1994, 9, 27)
    assert format_date(d, 0, 0) == "9/27/94"
    assert format_date(d, 1, 1) == "Sep 27, 1994"
    assert format_date(d, 2, 0) == "september 27, 1994"
    assert format_date(d, 3, 2) == "TUESDAY, SEPTEMBER 27, 1994"
    pairs = generate_dates(200, seed=3)
    assert pairs == generate_dates(200, seed=3) and pairs != generate_dates(200, seed=4)
    for src, tgt in pairs:     # the target is the ISO date the source names
        year, month, day = map(int, tgt.split("-"))
        assert 1970 <= year <= 2017 and str(day) in src
    add = generate("addition", 50, seed=0)
    assert all(int(t) == sum(map(int, s.split("+"))) for s, t in add)
    lines = format_lines(add)
    assert len({len(x) for x in lines}) == 1 and [parse_line(x) for x in lines] == add


def test_length_groups_cover_everything_once_without_padding():
    lengths = torch.tensor([3, 5, 3, 4, 5, 5, 3, 4])
    groups = length_groups(lengths, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert sorted(torch.cat(groups).tolist()) == list(range(8))
    assert all(len(set(lengths[g].tolist())) == 1 and len(g) <= 2 for g in groups)


def test_padding_does_not_change_the_result():
    """A source decodes the same alone and beside longer sources (masking, packing, reversal)."""
    pairs = generate_dates(64, seed=0)
    for kw in ({}, {"bidirectional": True}, {"reverse_source": False, "score": "additive"}):
        model, vocab = tiny(pairs, **kw)
        model.eval()
        data = to_tensors(pairs[:6], vocab)
        memory, state = model.encode(data.src, data.src_len)
        for i in range(6):
            L = int(data.src_len[i])
            m1, s1 = model.encode(data.src[i:i + 1, :L], data.src_len[i:i + 1])
            torch.testing.assert_close(m1[0][0], memory[0][i, :L], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(s1[0][:, 0], state[0][:, i], atol=1e-5, rtol=1e-5)


def test_beam_k1_equals_greedy_on_a_seq2seq_model():
    pairs = generate_dates(40, seed=1)
    model, vocab = tiny(pairs, score="additive")
    data = to_tensors(pairs, vocab)
    g = model.generate(data.src, data.src_len, vocab.start, vocab.end, beam_size=1)
    from caption import decoding
    memory, state = model.encode(data.src, data.src_len)
    b = decoding.beam_search(model.step, model.init_state(state), memory, len(pairs), vocab.start,
                             vocab.end, model.config.max_target_len, beam_size=1)
    assert [h.tokens for h in g] == [h.tokens for h in b]
    for x, y in zip(g, b):
        torch.testing.assert_close(x.attention, y.attention)


@pytest.mark.parametrize("kw", [{}, {"score": "additive", "bidirectional": True}, {"local": "local-p"}])
def test_tiny_model_overfits_a_few_examples(kw):
    pairs = generate_dates(8, seed=2)
    model, vocab = tiny(pairs, **kw)
    cfg = Seq2SeqTrainConfig(epochs=150, batch_size=8, lr=0.02, lr_final=1e-3, seed=0)
    history = train(model, vocab, pairs, pairs, cfg, progress=False, log=lambda s: None)
    assert history[0].correct < 8
    assert history[-1].correct == 8 and history[-1].loss < 0.05


def test_translator_checks_input_and_round_trips_a_checkpoint(tmp_path):
    pairs = generate_dates(16, seed=5)
    model, vocab = tiny(pairs)
    path = tmp_path / "m.pt"
    checkpoint.save(path, **Translator(model, vocab).checkpoint_fields())
    payload = torch.load(path, weights_only=True)       # no pickled modules
    t = Translator.from_checkpoint(checkpoint.load(path, kind="seq2seq"))
    sources = [s for s, _ in pairs]
    assert t.translate(sources) == Translator(model, vocab).translate(sources)
    assert payload["format_version"] == checkpoint.FORMAT_VERSION and payload["vocab"] == vocab.itos
    with pytest.raises(InputError, match="never seen"):
        t.check("septembre 27, 1994 ¤")
    with pytest.raises(InputError, match="longer than the model's maximum"):
        t.check("9" * (model.config.max_source_len + 1))
    text, att = t.translate([sources[0]], with_attention=True)[0]
    assert att.shape == (len(text), len(sources[0]))
    torch.testing.assert_close(att.sum(-1), torch.ones(len(text)))
    with pytest.raises(checkpoint.CheckpointError, match="expected 'caption'"):
        checkpoint.load(path, kind="caption")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="junk.pt"):
        checkpoint.load(tmp_path / "junk.pt")


def test_atomic_write_leaves_nothing_on_failure_and_replaces_on_success(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with checkpoint.atomic_write(target) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with checkpoint.atomic_write(target) as tmp:
        open(tmp, "wb").write(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1
    assert target.stat().st_mode & 0o777 == 0o666 & ~checkpoint_umask()


def checkpoint_umask():
    import os
    mask = os.umask(0)
    os.umask(mask)
    return mask
