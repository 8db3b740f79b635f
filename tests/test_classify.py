"""The bi-GRU attention classifier: its maths, its padding, the readers on the published layouts,
the built-in set's deciding words and the shipped model."""
import json

import pytest
import torch

from caption.checkpoint import default_checkpoint
from caption.classify.config import ClassifierConfig, ClassifierTrainConfig
from caption.classify.data import Example, read_imdb, read_labelled, read_table, to_tensors
from caption.classify.model import AttentionClassifier
from caption.classify.synthetic import NEGATIVE, POSITIVE, generate_reviews
from caption.classify.train import build_classifier, load_classifier, score, split_validation, train_classifier
from caption.cli import main
from caption.errors import DataError
from caption.vocab import tokenize


def small(labels=("neg", "pos"), **kw):
    torch.manual_seed(0)
    return AttentionClassifier(ClassifierConfig(embed_dim=6, hidden_dim=5, attn_dim=4, labels=labels, **kw), 20).eval()


def test_padding_gets_exactly_zero_weight_and_changes_no_output():
    model = small()
    tokens = torch.randint(4, 20, (3, 7))
    lengths = torch.tensor([7, 4, 2])
    tokens[1, 4:], tokens[2, 2:] = 0, 0
    with torch.no_grad():
        out = model(tokens, lengths)
        more = model(torch.cat([tokens, torch.zeros(3, 5, dtype=torch.long)], 1), lengths)   # 5 more pads
        alone = [model(tokens[i:i + 1, :n], lengths[i:i + 1]) for i, n in enumerate(lengths.tolist())]
    assert out.alpha[1, 4:].eq(0).all() and out.alpha[2, 2:].eq(0).all() and more.alpha[:, 7:].eq(0).all()
    torch.testing.assert_close(out.alpha.sum(1), torch.ones(3))
    torch.testing.assert_close(more.logits, out.logits, atol=1e-6, rtol=1e-6)
    for i, a in enumerate(alone):
        torch.testing.assert_close(a.logits, out.logits[i:i + 1], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(a.alpha[0], out.alpha[i, :lengths[i]], atol=1e-6, rtol=1e-6)


def test_the_pooling_is_the_seeds_formula():
    """alpha = softmax(u^T tanh(W h_t + b)), s = sum alpha_t h_t, y = sigmoid(w^T s + c)."""
    model = small()
    tokens, lengths = torch.randint(4, 20, (2, 6)), torch.tensor([6, 6])
    with torch.no_grad():
        out = model(tokens, lengths)
        h = model.rnn(model.embed(tokens))[0]                                      # (2, 6, 10)
        a = model.attention
        e = torch.tanh(h @ a.key_proj.weight.T + a.key_proj.bias) @ a.v.weight.view(-1)
        alpha = torch.softmax(e, -1)
        y = model.out((alpha.unsqueeze(-1) * h).sum(1))
    torch.testing.assert_close(out.alpha, alpha, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, y, atol=1e-6, rtol=1e-5)
    p = model.probabilities(out.logits)
    torch.testing.assert_close(p[:, 1], torch.sigmoid(y[:, 0]))
    assert model.out.out_features == 1 and small(("a", "b", "c")).out.out_features == 3


def test_the_built_in_sets_deciding_words_are_where_the_generator_says():
    reviews = generate_reviews(300, seed=5)
    assert {r.label for r in reviews} == {"neg", "pos"}
    assert 0.35 < sum(r.label == "pos" for r in reviews) / 300 < 0.65
    for r in reviews:
        tokens = tokenize(r.text)
        assert tokens == r.text.split()                       # the tokenizer gives back the generator's tokens
        own, other = (POSITIVE, NEGATIVE) if r.label == "pos" else (NEGATIVE, POSITIVE)
        assert 1 <= len(r.deciding) <= 3
        assert r.deciding == tuple(i for i, t in enumerate(tokens) if t in own)
        assert not any(t in other for t in tokens)
    assert generate_reviews(5, seed=5) == reviews[:5]


def write_imdb(root, reviews):
    for (split, label, name), text in reviews.items():
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


GOOD = {("train", "pos", "0_9.txt"): "A great film.<br /><br />Loved it", ("train", "pos", "1_8.txt"): "superb",
        ("train", "neg", "0_2.txt"): "Dull<br />and slow", ("test", "pos", "0_10.txt"): "wonderful",
        ("test", "neg", "0_1.txt"): "awful"}


def test_the_imdb_reader_on_the_published_layout(tmp_path):
    root = write_imdb(tmp_path / "aclImdb", GOOD)
    (root / "train" / "unsup").mkdir()
    (root / "train" / "labeledBow.feat").write_text("0 0:1\n")
    train = read_imdb(root, "train")
    assert [(e.label, e.text) for e in train] == [("neg", "Dull and slow"), ("pos", "A great film.  Loved it"),
                                                  ("pos", "superb")]
    assert [e.label for e in read_labelled(root, "test")] == ["neg", "pos"]


@pytest.mark.parametrize("change, message", [
    ({("train", "neg", "5_1.txt"): ""}, "5_1.txt:1: an empty review"),
    ({("train", "neg", "5_1.txt"): "fine\nstill fine\nbad \xff".encode("latin-1")}, "5_1.txt:3: not UTF-8 text (byte 5"),
    ({("train", "neg", "5_1.txt"): " <br /> "}, "5_1.txt:1: an empty review"),
])
def test_the_imdb_reader_names_the_bad_file_and_line(tmp_path, change, message):
    root = write_imdb(tmp_path / "aclImdb", {**GOOD, **change})
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_imdb(root, "train")


def test_a_missing_label_folder_and_a_link_out_of_the_folder_are_refused(tmp_path):
    root = write_imdb(tmp_path / "aclImdb", {k: v for k, v in GOOD.items() if k[1] != "neg" or k[0] != "test"})
    with pytest.raises(DataError, match=r"aclImdb/test/neg: no such folder; the aclImdb layout"):
        read_imdb(root, "test")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "train" / "pos" / "9_9.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(DataError, match="9_9.txt: leads outside the data folder"):
        read_imdb(root, "train")


def test_the_table_reader(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("id\tlabel\ttext\n1\tpos\tgood one\n\n2\tneg\tbad<br />one\n")
    assert read_table(tsv) == [Example("good one", "pos"), Example("bad one", "neg")]
    csv = tmp_path / "d.csv"
    csv.write_text('text,label\n"a, quoted ""text""",x\nplain,y\nthird,z\n')
    assert [(e.text, e.label) for e in read_table(csv)] == [('a, quoted "text"', "x"), ("plain", "y"), ("third", "z")]
    for body, message in [("label,body\n1,a\n", r"d.csv:1: no text column"), ("", "d.csv: an empty file"),
                          ("text,label\na,x\nb\n", r"d.csv:3: 1 fields, the header has 2"),
                          ("text,label\na,x\n,y\n", r"d.csv:3: an empty text"),
                          ("text,label\n", "d.csv: no rows below the header")]:
        csv.write_text(body)
        with pytest.raises(DataError, match=message):
            read_table(csv)
    csv.write_bytes(b"text,label\nok,x\n\xfe,y\n")
    with pytest.raises(DataError, match=r"d.csv:3: not UTF-8 text \(byte 1 of the line\)"):
        read_table(csv)
    with pytest.raises(DataError, match="not a .tsv or .csv file"):
        read_table(tmp_path / "d.json")


def test_three_labels_train_with_a_softmax(tmp_path):
    words = {"a": "apple", "b": "banana", "c": "cherry"}
    examples = [Example(f"i ate one {words[k]} today", k) for k in "abc" for _ in range(30)]
    model, vocab = build_classifier(examples, ClassifierConfig(embed_dim=8, hidden_dim=8, attn_dim=8, dropout=0.0))
    assert model.config.labels == ("a", "b", "c") and model.out.out_features == 3
    history, test = train_classifier(model, vocab, examples, examples[::5], ClassifierTrainConfig(
        epochs=30, batch_size=16, lr=0.02), out=tmp_path / "m.pt", progress=False, log=lambda s: None, test=examples)
    assert test.accuracy == 1.0
    again, vocab2, meta = load_classifier(tmp_path / "m.pt")
    assert again.config.labels == ("a", "b", "c") and meta["test"]["accuracy"] == 1.0
    data = to_tensors(examples, vocab2, again.config.labels, again.config.max_len)
    assert score(again, data, examples).correct == len(examples)


def test_split_validation_is_seeded_and_disjoint():
    examples = [Example(str(i), "x") for i in range(50)]
    train, val = split_validation(examples, 0.1, seed=3)
    assert len(val) == 5 and not set(train) & set(val) and set(train) | set(val) == set(examples)
    assert split_validation(examples, 0.1, seed=3) == (train, val)


def test_the_command_trains_on_the_aclimdb_layout_and_the_model_is_used(tmp_path, capsys):
    reviews = {("train", label, f"{i}_5.txt"): f"the film was {word} to me" for label, word in
               [("pos", "great"), ("neg", "awful")] for i in range(12)}
    reviews.update({("test", label, f"{i}_5.txt"): f"it was {word}" for label, word in
                    [("pos", "great"), ("neg", "awful")] for i in range(3)})
    root = write_imdb(tmp_path / "aclImdb", reviews)
    out = tmp_path / "imdb.pt"
    assert main(["classify", "train", "--data", str(root), "--out", str(out), "--epochs", "2", "--hidden-dim", "8",
                 "--embed-dim", "8", "--attn-dim", "8", "--batch-size", "8", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "22 train / 2 validation / 6 test texts, labels neg, pos" in printed and "saved to" in printed
    assert main(["classify", "predict", "--model", str(out), "--json", "so great", ""]) == 1
    io = capsys.readouterr()
    [line] = io.out.splitlines()
    row = json.loads(line)
    assert row["tokens"] == ["so", "great"] and abs(sum(row["alpha"]) - 1) < 1e-4
    assert set(row["probabilities"]) == {"neg", "pos"} and "text 2: an empty text" in io.err
    assert main(["classify", "evaluate", "--model", str(out), "--data", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 6
    assert main(["classify", "train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pt")]) == 1
    assert "nowhere: no such file or folder" in capsys.readouterr().err


def test_predict_colours_and_brackets(capsys):
    from caption.classify.show import SHADES, terminal
    assert terminal(["a", "b", "c"], [0.1, 0.6, 0.29], colour=False) == "a [b] c"
    shaded = terminal(["a", "b"], [0.0, 1.0])
    assert f"\x1b[48;5;{SHADES[0]}m" in shaded and f"\x1b[48;5;{SHADES[-1]}m" in shaded


SHIPPED = default_checkpoint("reviews.pt")


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped review model")
def test_the_shipped_model_is_right_and_looks_at_the_deciding_words(tmp_path, capsys):
    """The done-when of issue 24, on 1,000 new built-in test reviews."""
    assert main(["classify", "evaluate", "--n", "1000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] >= 0.95 and result["times_chance"] >= 3, result
    page = tmp_path / "p.html"
    assert main(["classify", "explore", "--n", "5", "--out", str(page)]) == 0
    from caption.explorer.page import read_data
    data = read_data(page.read_text())
    assert data["kind"] == "classify" and len(data["texts"]) == 5
    assert all(t["deciding"] and t["label"] in ("neg", "pos") for t in data["texts"])
    assert "http" not in page.read_text().split("<script")[0].replace("http-equiv", "")


def test_one_label_or_too_few_texts_is_one_line(tmp_path, capsys):
    table = tmp_path / "one.csv"
    table.write_text("text,label\n" + "".join(f"text {i},same\n" for i in range(20)))
    assert main(["classify", "train", "--data", str(table), "--out", str(tmp_path / "m.pt")]) == 1
    assert "a classifier needs two labels or more" in capsys.readouterr().err
    assert main(["classify", "train", "--n", "1", "--out", str(tmp_path / "m.pt")]) == 1
    assert "two labels or more" in capsys.readouterr().err


def test_deciding_words_cut_off_by_max_len_are_not_counted():
    examples = [Example("a b great c", "pos", (2,)), Example("a b c d awful", "neg", (4,))]
    model, vocab = build_classifier(examples, ClassifierConfig(embed_dim=4, hidden_dim=4, attn_dim=4, max_len=3))
    s = score(model, to_tensors(examples, vocab, model.config.labels, 3), examples)
    assert s.total == 2 and s.chance == pytest.approx(1 / 3)        # the second text's word was cut: left out
    cut = score(model, to_tensors(examples, vocab, model.config.labels, 2), examples)
    assert cut.mass is None


def test_an_unknown_test_label_names_its_file_and_an_unreadable_folder_is_one_line(tmp_path, monkeypatch):
    from caption.classify.data import check_labels
    with pytest.raises(DataError, match=r"t.tsv: label maybe is not one the model knows \(neg, pos\)"):
        check_labels([Example("x", "maybe")], ("neg", "pos"), "t.tsv")
    root = write_imdb(tmp_path / "aclImdb", GOOD)
    from pathlib import Path

    def refused(self):          # what chmod 000 gives a user other than root
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(Path, "iterdir", refused)
    with pytest.raises(DataError, match=r"aclImdb/train/neg: cannot read the folder \(Permission denied\)"):
        read_imdb(root, "train")


def test_a_token_never_writes_a_control_character_to_the_terminal():
    from caption.classify.show import terminal
    assert "\x1b[2J" not in terminal(["ok", "\x1b[2J"], [0.5, 0.5], colour=False)
