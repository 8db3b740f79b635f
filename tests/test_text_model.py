"""The seq2seq model, its translator and its training."""
import pytest
import torch

from caption import checkpoint, search
from caption.config import Seq2SeqConfig, Seq2SeqTrainConfig
from caption.errors import InputError
from caption.search import DecodeOptions
from caption.text.data import generate_dates, to_tensors
from caption.text.stack import ResidualStack
from caption.text.train import build_translator, exact_matches, train_translator
from caption.text.translator import Translator


def tiny(pairs, **kw):
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(embed_dim=8, hidden_dim=16, **kw)
    model, vocab = build_translator(pairs, cfg, torch.device("cpu"))
    return model, vocab


def test_padding_does_not_change_the_result():
    """A source decodes the same alone and beside longer sources (masking, packing, reversal)."""
    pairs = generate_dates(64, seed=0)
    for kw in ({}, {"bidirectional": True}, {"reverse_source": False, "score": "additive"},
               {"cell": "gru", "decoder_dim": 24}):
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
    g = model.generate(data.src, data.src_len, vocab.start, vocab.end, DecodeOptions(beam_size=1))
    memory, state = model.encode(data.src, data.src_len)
    b = search.beam_search(model.step, model.init_state(state), memory, len(pairs), vocab.start,
                             vocab.end, model.config.max_target_len, beam_size=1)
    assert [h.tokens for h in g] == [h.tokens for h in b]
    for x, y in zip(g, b):
        torch.testing.assert_close(x.alpha, y.alpha)


@pytest.mark.parametrize("kw", [{}, {"score": "additive", "bidirectional": True}, {"local": "local-p"},
                                {"cell": "gru"}])
def test_tiny_model_overfits_a_few_examples(kw):
    pairs = generate_dates(8, seed=2)
    model, vocab = tiny(pairs, **kw)
    cfg = Seq2SeqTrainConfig(epochs=150, batch_size=8, lr=0.02, lr_final=1e-3, seed=0)
    history, _ = train_translator(model, vocab, pairs, pairs, cfg, progress=False, log=lambda s: None)
    assert history[0].correct < 8
    assert history[-1].correct == 8 and history[-1].loss < 0.05


def test_translator_checks_input_and_round_trips_a_checkpoint(tmp_path):
    pairs = generate_dates(16, seed=5)
    model, vocab = tiny(pairs)
    path = tmp_path / "m.pt"
    checkpoint.save(path, "seq2seq", model, vocab.itos)
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


def test_exact_matches_counts_what_the_translator_outputs():
    pairs = generate_dates(12, seed=6)
    model, vocab = tiny(pairs)
    data = to_tensors(pairs, vocab)
    correct, outputs = exact_matches(model, data, vocab, batch_size=5)
    assert outputs == Translator(model, vocab).translate([s for s, _ in pairs])
    assert correct == sum(o == t for o, t in zip(outputs, data.targets))


def test_the_epoch_is_chosen_on_validation_and_the_test_set_is_decoded_once(tmp_path, monkeypatch):
    """Vocabulary and lengths from the training part alone (a test character it never saw is <unk>);
    the kept model is the best validation epoch's, and the test set is decoded exactly once."""
    import caption.text.train as train_mod
    from caption.text.data import validation_split
    pairs = generate_dates(60, seed=3)
    train_pairs, val_pairs = validation_split(pairs[:50], 0.2)
    assert len(val_pairs) == 10 and train_pairs + val_pairs == pairs[:50]
    test_pairs = [("¤" + s, t) for s, t in pairs[50:]]                     # '¤' only in the test sources
    model, vocab = tiny(train_pairs)
    assert "¤" not in vocab and vocab.itos == tiny(train_pairs + val_pairs[:0])[1].itos
    assert model.config.max_source_len == max(len(s) for s, _ in train_pairs)
    decoded = []
    real = train_mod.exact_matches
    monkeypatch.setattr(train_mod, "exact_matches", lambda m, data, *a, **k: decoded.append(data.targets) or real(m, data, *a, **k))
    cfg = Seq2SeqTrainConfig(epochs=4, batch_size=8, lr=0.02, lr_final=1e-3, seed=0)
    path = tmp_path / "m.pt"
    history, test = train_translator(model, vocab, train_pairs, val_pairs, cfg, out=path, progress=False,
                                     log=lambda s: None, test_pairs=test_pairs)
    targets = [t for _, t in test_pairs]
    assert [d == targets for d in decoded] == [False] * 4 + [True]          # 4 validation decodes, 1 test
    best = max(history, key=lambda r: r.correct)                          # the first of equals
    assert test.epoch == best.epoch and test.total == 10
    meta = checkpoint.load(path, kind="seq2seq")["meta"]
    assert meta["epoch"] == best.epoch and meta["test_correct"] == test.correct
    assert meta["val_correct"] == best.correct and meta["val_total"] == 10
    assert test.correct == real(Translator.from_checkpoint(checkpoint.load(path, kind="seq2seq")).model,
                                to_tensors(test_pairs, vocab), vocab)[0]


def test_the_gru_cell_is_the_written_out_equations():
    """torch.nn.GRU, as the model runs it, against the gates written out (the form in text/model.py:
    the reset gate scales U_n h + c_n)."""
    torch.manual_seed(4)
    model, _ = tiny(generate_dates(8, seed=3), cell="gru", bidirectional=False)
    gru = model.decoder
    x, h = torch.randn(3, 8), torch.randn(3, model.decoder.hidden_size)
    W, U, b, c = gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    (Wr, Wz, Wn), (Ur, Uz, Un) = W.chunk(3), U.chunk(3)
    (br, bz, bn), (cr, cz, cn) = b.chunk(3), c.chunk(3)
    r = torch.sigmoid(x @ Wr.T + br + h @ Ur.T + cr)
    z = torch.sigmoid(x @ Wz.T + bz + h @ Uz.T + cz)
    n = torch.tanh(x @ Wn.T + bn + r * (h @ Un.T + cn))
    expected = (1 - z) * n + z * h
    with torch.no_grad():
        out, last = gru(x.unsqueeze(1), h.unsqueeze(0))
    torch.testing.assert_close(out[:, 0], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(last[0], expected, atol=1e-6, rtol=1e-5)


def test_a_gru_model_round_trips_a_checkpoint_and_an_old_lstm_file_reads_as_an_lstm(tmp_path):
    pairs = generate_dates(16, seed=6)
    model, vocab = tiny(pairs, cell="gru", num_layers=2, decoder_dim=24)
    assert model.state_parts == 1 and isinstance(model.encoder, torch.nn.GRU)
    checkpoint.save(tmp_path / "g.pt", "seq2seq", model, vocab.itos)
    loaded = Translator.from_checkpoint(checkpoint.load(tmp_path / "g.pt", kind="seq2seq"))
    sources = [p[0] for p in pairs[:5]]
    assert loaded.translate(sources, beam_size=3) == Translator(model, vocab).translate(sources, beam_size=3)
    lstm, lstm_vocab = tiny(pairs)
    checkpoint.save(tmp_path / "l.pt", "seq2seq", lstm, lstm_vocab.itos)
    payload = torch.load(tmp_path / "l.pt", weights_only=True)
    payload["format_version"] = 4
    for k in ("model", "cell", "heads", "model_dim", "ff_dim"):
        del payload["config"][k]
    torch.save(payload, tmp_path / "l.pt")
    old = Translator.from_checkpoint(checkpoint.load(tmp_path / "l.pt", kind="seq2seq"))
    assert old.model.config.cell == "lstm" and isinstance(old.model.encoder, torch.nn.LSTM)
    assert old.translate(sources) == Translator(lstm, lstm_vocab).translate(sources)


def test_a_residual_stack_is_its_formula():
    """GNMT's stacks (text/stack.py), layer by layer by hand: x2 = BiRNN_1(x1) with both directions
    joined, x3 = RNN_2(x2), then x^{i+1} = RNN_i(x^i) + x^i; and the final states are each layer's."""
    for cell in ("lstm", "gru"):
        torch.manual_seed(1)
        stack = ResidualStack(cell, 5, 8, 4, bidirectional_bottom=True).eval()
        x = torch.randn(3, 7, 5)
        with torch.no_grad():
            out, state = stack(x)
            h = stack.layers[0](x)[0]                                       # (3, 7, 8): 4 forward + 4 backward
            h = stack.layers[1](h)[0]
            finals = []
            for layer in stack.layers[2:]:
                y, last = layer(h)
                h = y + h
                finals.append(last if cell == "gru" else last[0])
        torch.testing.assert_close(out, h)
        hn = state if cell == "gru" else state[0]
        assert hn.shape == (4, 3, 8)
        torch.testing.assert_close(hn[2:], torch.cat(finals))
        bottom = stack.layers[0](x)[1]
        bottom = bottom if cell == "gru" else bottom[0]
        torch.testing.assert_close(hn[0], torch.cat([bottom[0], bottom[1]], -1))   # forward half, backward half
        assert not torch.allclose(out, stack.layers[3](stack.layers[2](stack.layers[1](stack.layers[0](x)[0])[0])[0])[0])


def test_a_residual_model_ignores_padding_and_round_trips(tmp_path):
    pairs = generate_dates(32, seed=2)
    model, vocab = tiny(pairs, residual=True, num_layers=3, cell="gru", decoder_dim=32)
    model.eval()
    data = to_tensors(pairs[:6], vocab)
    with torch.no_grad():
        batch = model(data.src, data.src_len, data.tgt[:, :-1])[0]
        for i in range(6):
            n = int(data.src_len[i])
            alone = model(data.src[i:i + 1, :n], data.src_len[i:i + 1], data.tgt[i:i + 1, :-1])[0]
            torch.testing.assert_close(batch[i:i + 1], alone, atol=1e-5, rtol=1e-4)
    path = tmp_path / "r.pt"
    checkpoint.save(path, "seq2seq", model, vocab.itos)
    again = Translator.from_checkpoint(checkpoint.load(path, kind="seq2seq")).model
    assert again.config.residual and isinstance(again.encoder, ResidualStack)
    src = data.src[:2]
    assert [h.tokens for h in again.generate(src, data.src_len[:2], vocab.start, vocab.end)] == \
        [h.tokens for h in model.generate(src, data.src_len[:2], vocab.start, vocab.end)]




def test_residual_needs_three_layers_and_the_bidirectional_bottom():
    from caption.config import check
    from caption.errors import OptionError
    with pytest.raises(OptionError, match="--num-layers 3"):
        check(Seq2SeqConfig(residual=True, num_layers=2))
    with pytest.raises(OptionError, match="bidirectional"):
        check(Seq2SeqConfig(residual=True, num_layers=4, bidirectional=False))


def test_the_bahdanau_gru_is_the_seminars_equations():
    """--cell gru-bahdanau against Bahdanau et al. (2015, A.1.1) written out: the reset before the
    recurrent product, z weighting the candidate; and a padded sequence ends as it would alone."""
    from caption.text.gru import BahdanauGRU
    torch.manual_seed(5)
    gru = BahdanauGRU(4, 6, num_layers=1).eval()
    layer = gru.layers[0]
    (Wr, Wz, W), (br, bz, b) = layer.input_proj.weight.chunk(3), layer.input_proj.bias.chunk(3)
    (Ur, Uz), U = layer.gate_proj.weight.chunk(2), layer.cand_proj.weight
    x, h = torch.randn(3, 5, 4), torch.randn(3, 6)
    expected, s = [], h
    for t in range(5):
        r = torch.sigmoid(x[:, t] @ Wr.T + s @ Ur.T + br)
        z = torch.sigmoid(x[:, t] @ Wz.T + s @ Uz.T + bz)
        candidate = torch.tanh(x[:, t] @ W.T + (r * s) @ U.T + b)
        s = (1 - z) * s + z * candidate
        expected.append(s)
    with torch.no_grad():
        out, last = gru(x, h.unsqueeze(0))
    torch.testing.assert_close(out, torch.stack(expected, 1))
    torch.testing.assert_close(last[0], expected[-1])
    both = BahdanauGRU(4, 6, bidirectional=True, num_layers=2).eval()
    lengths = torch.tensor([5, 3, 1])
    with torch.no_grad():
        out, last = both(x, lengths=lengths)
        for i, n in enumerate(lengths.tolist()):
            alone, last_alone = both(x[i:i + 1, :n])
            torch.testing.assert_close(out[i:i + 1, :n], alone)
            torch.testing.assert_close(last[:, i:i + 1], last_alone)
            assert out[i, n:].eq(0).all()


def test_a_bahdanau_gru_model_decodes_padded_sources_as_alone():
    pairs = generate_dates(16, seed=2)
    for kw in ({}, {"residual": True, "num_layers": 3}):
        model, vocab = tiny(pairs, cell="gru-bahdanau", decoder_dim=24, **kw)
        model.eval()
        data = to_tensors(pairs[:4], vocab)
        with torch.no_grad():
            batch = model(data.src, data.src_len, data.tgt[:, :-1])[0]
            for i in range(4):
                n = int(data.src_len[i])
                alone = model(data.src[i:i + 1, :n], data.src_len[i:i + 1], data.tgt[i:i + 1, :-1])[0]
                torch.testing.assert_close(batch[i:i + 1], alone, atol=1e-5, rtol=1e-4)
        hyps = model.generate(data.src, data.src_len, vocab.start, vocab.end)
        assert len(hyps) == 4 and all(h.alpha.shape[-1] == data.src.shape[1] for h in hyps)
