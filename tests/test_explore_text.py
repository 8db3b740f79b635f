"""`caption seq2seq explore` and caption.explorer.text: the page's alignment data is what the
translator returns, local windows are where the attention put them, bad input is one line."""
import io
import sys

import pytest
import torch

from caption import checkpoint
from caption.checkpoint import default_checkpoint
from caption.cli import main
from caption.config import Seq2SeqConfig
from caption.errors import InputError
from caption.explorer.maps import dequantise
from caption.explorer.page import read_data, write_page
from caption.explorer.text import MAX_SOURCES, text_report
from caption.search import DecodeOptions
from caption.text.data import encode_sources, generate_dates
from caption.text.train import build_translator
from caption.text.translator import Translator

PAIRS = generate_dates(48, seed=3)
SHIPPED = default_checkpoint("date.pt")


def tiny(specials: bool = False, **kw) -> Translator:
    """An untrained model: its weights are spread out and its windows land anywhere. Unless
    `specials`, it never writes <pad> or <start> (as a trained model), which translate's text drops."""
    torch.manual_seed(0)
    model, vocab = build_translator(PAIRS, Seq2SeqConfig(embed_dim=8, hidden_dim=16, **kw), torch.device("cpu"))
    if not specials:
        with torch.no_grad():
            model.out.bias[[vocab.pad, vocab.start]] = -1e4
    return Translator(model, vocab)


def sources(n=6):
    """Sources of different lengths (each decodes in its own group), one with a trailing space."""
    by_len = {}
    for s, _ in PAIRS:
        by_len.setdefault(len(s), s)
    out = list(by_len.values())[:n]
    return out[:-1] + [out[-1] + "  "]


def page_data(translator, srcs, tmp_path, **kw):
    out = write_page(tmp_path / "t.html", text_report(translator, srcs, "tiny", **kw))
    return read_data(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("kw,beam", [({}, 1), ({"reverse_source": False, "score": "additive"}, 3)])
def test_page_holds_what_translate_returns(kw, beam, tmp_path):
    t = tiny(**kw)
    srcs = sources()
    data = page_data(t, srcs, tmp_path, options=DecodeOptions(beam_size=beam))
    assert data["kind"] == "text" and data["schema"] == "caption-explore/1"
    assert data["model"]["beam_size"] == beam and data["model"]["local"] is None
    expected = t.translate(srcs, with_attention=True, beam_size=beam)
    assert [r["output"] for r in data["sources"]] == [text for text, _ in expected] == t.translate(srcs, beam_size=beam)
    for s, rec, (_, att) in zip(srcs, data["sources"], expected):
        assert rec["source"] == s.rstrip(" ") and rec["error"] is None and rec["window"] is None
        got = dequantise(rec["weights"], rec["scales"], (len(rec["source"]),))
        assert got.shape == att.shape == (len(rec["output"]), len(rec["source"]))
        step = torch.tensor(rec["scales"]).unsqueeze(1) / 510          # half a quantisation step per row
        assert ((got - att).abs() <= step + 1e-7).all()


def test_a_row_per_generated_token_even_a_special_one(tmp_path):
    """A model that writes <pad> or <start> still gets one output character per matrix row, in the
    page as in translate (both show a special token as '?')."""
    t = tiny(specials=True)
    srcs = sources(3)
    data = page_data(t, srcs, tmp_path)
    written = 0
    for s, rec, (text, att) in zip(srcs, data["sources"], t.translate(srcs, with_attention=True)):
        src, src_len = encode_sources([s.rstrip(" ")], t.vocab)
        [h] = t.model.generate(src, src_len, t.vocab.start, t.vocab.end)
        special = [i in (t.vocab.pad, t.vocab.start) for i in h.tokens]
        written += sum(special)
        assert len(rec["output"]) == len(text) == att.shape[0] == len(h.tokens) == len(rec["scales"])
        assert [c for c, sp in zip(rec["output"], special) if sp] == ["?"] * sum(special)
        assert rec["output"] == text
    assert written > 0       # the case is exercised


def centres(t: Translator, source: str) -> tuple[str, torch.Tensor]:
    """Decode one source, then recompute each step's window centre from the decoder states as
    Luong eq. 9 defines it: local-m p_t = t, local-p p_t = S sigmoid(v_p^T tanh(W_p h_t)); turned
    into reading order (character S - 1 - p) when the model reads the source reversed."""
    m, S = t.model, len(source)
    src, src_len = encode_sources([source], t.vocab)
    [h] = m.generate(src, src_len, t.vocab.start, t.vocab.end)
    with torch.no_grad():
        _, state = m.encode(src, src_len)
        tgt_in = torch.tensor([[t.vocab.start] + h.tokens[:-1]]) if h.tokens else torch.zeros(1, 0, dtype=torch.long)
        hidden, _ = m.decoder(m.tgt_embed(tgt_in), state)                   # (1, T, H)
        T = hidden.shape[1]
        if m.config.local == "local-m":
            p = torch.arange(T, dtype=torch.float64)
        else:
            p = S * torch.sigmoid(m.attention.pos_proj(hidden).squeeze(-1)[0].double())
    return t.text(h.tokens), (S - 1) - p if m.config.reverse_source else p


@pytest.mark.parametrize("local", ["local-m", "local-p"])
@pytest.mark.parametrize("reverse", [True, False])
def test_local_windows_are_where_the_attention_put_them(local, reverse, tmp_path):
    t = tiny(local=local, window=2, reverse_source=reverse, score="dot", bidirectional=False, decoder_dim=None)
    data = page_data(t, sources(), tmp_path)
    assert data["model"]["local"] == local and data["model"]["window"] == 2
    for rec in data["sources"]:
        text, p = centres(t, rec["source"])
        assert rec["output"] == text and len(text) > 0
        win = rec["window"]
        assert win["half"] == 2
        torch.testing.assert_close(torch.tensor(win["center"], dtype=torch.float64), p, atol=1e-4, rtol=0)
        # the weights lie inside each row's window, in the same (reading order) columns
        w = dequantise(rec["weights"], rec["scales"], (len(rec["source"]),))
        dist = (torch.arange(len(rec["source"])).unsqueeze(0) - torch.tensor(win["center"]).unsqueeze(1)).abs()
        assert (w[dist > 2 + 1e-3] == 0).all() and (w.sum(1) > 0).any()


def test_local_centre_does_not_change_the_output():
    """The centre is reported alongside: decoding gives the same tokens, weights and scores."""
    t = tiny(local="local-p")
    src, src_len = encode_sources(sources(3)[:1] * 2, t.vocab)
    for beam in (1, 3):
        hyps = t.model.generate(src, src_len, t.vocab.start, t.vocab.end, DecodeOptions(beam_size=beam))
        for h in hyps:
            assert h.center.shape == (len(h.tokens),) and h.alpha.shape[0] == len(h.tokens)
        logits, alpha = t.model(src, src_len, torch.tensor([[t.vocab.start] + hyps[0].tokens[:-1]] * 2))
        if beam == 1:     # greedy's weights are the teacher-forced ones on its own tokens
            torch.testing.assert_close(hyps[0].alpha, alpha[0, :len(hyps[0].tokens)])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    t = tiny()
    path = tmp_path_factory.mktemp("m") / "tiny.pt"
    checkpoint.save(path, "seq2seq", t.model, t.vocab.itos)
    return path


def test_cli_reports_a_bad_source_in_one_line_and_writes_the_rest(model_file, tmp_path, capsys):
    good = sources(2)
    out = tmp_path / "dates.html"
    assert main(["seq2seq", "explore", good[0], "bad ¤", good[1], "--model", str(model_file), "--out", str(out)]) == 1
    got = capsys.readouterr()
    assert got.err == "caption: error: 'bad ¤': character(s) '¤' never seen in training\n"
    t = Translator.from_checkpoint(checkpoint.load(model_file, kind="seq2seq"))
    expected = t.translate(good)
    assert got.out.splitlines() == [expected[0], "", expected[1], f"wrote {out}"]
    recs = read_data(out.read_text(encoding="utf-8"))["sources"]
    assert [r["output"] for r in recs] == [expected[0], None, expected[1]]
    assert recs[1] == {"source": None, "output": None, "error": "'bad ¤': character(s) '¤' never seen in training"}


def test_cli_stdin_names_the_bad_line(model_file, tmp_path, capsys, monkeypatch):
    good = sources(2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{good[0]}\n{'9' * 200_000}\n{good[1]}\r\n"))
    out = tmp_path / "stdin.html"
    assert main(["seq2seq", "explore", "-", "--model", str(model_file), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == "caption: error: line 2: more than 100,000 characters on one line; a source is one short line\n"
    recs = read_data(out.read_text(encoding="utf-8"))["sources"]
    assert [r["source"] for r in recs] == [good[0], None, good[1].rstrip(" ")]


def test_cli_refuses_an_out_that_is_an_input_or_not_a_page(model_file, tmp_path, capsys):
    before = model_file.read_bytes()
    assert main(["seq2seq", "explore", sources(1)[0], "--model", str(model_file), "--out", str(model_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("caption: error: ") and err.count("\n") == 1 and "input" in err
    assert model_file.read_bytes() == before
    notes = tmp_path / "notes.html"
    notes.write_text("plain notes, not a page\n")
    assert main(["seq2seq", "explore", sources(1)[0], "--model", str(model_file), "--out", str(notes)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("caption: error: ") and err.count("\n") == 1
    assert notes.read_text() == "plain notes, not a page\n"


def test_help_explains_every_flag(capsys):
    assert main(["seq2seq", "explore", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--out", "--beam", "SOURCE", "standard input", "explore-text.html"):
        assert flag in text


def test_too_many_sources_is_one_error():
    with pytest.raises(InputError, match=f"at most {MAX_SOURCES:,}"):
        text_report(tiny(), ["1/2/03"] * (MAX_SOURCES + 1), "tiny")


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped date model not built")
def test_shipped_model_by_default(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["seq2seq", "explore", "June 1, 2001"]) == 0
    assert capsys.readouterr().out.splitlines() == ["2001-06-01", "wrote explore-text.html"]
    data = read_data((tmp_path / "explore-text.html").read_text(encoding="utf-8"))
    assert data["model"]["name"] == "date.pt" and data["sources"][0]["output"] == "2001-06-01"
