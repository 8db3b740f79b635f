"""Character data in the book's format: reading, the book's split, generators, length groups."""
import pytest
import torch

from caption.errors import DataError
from caption.text.data import (
    book_split,
    format_date,
    format_lines,
    generate,
    generate_dates,
    length_groups,
    parse_line,
    read_pairs,
)


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
    f.write_bytes(b"september 27, 1994   _1994-09-27\r\n16+75  _91  \r\n")        # a Windows file
    assert read_pairs(f) == [("september 27, 1994", "1994-09-27"), ("16+75", "91")]
    f.write_text("ok_1\nno separator here\n")
    with pytest.raises(DataError, match=r"d\.txt:2: no '_'"):
        read_pairs(f)
    with pytest.raises(DataError, match="missing.txt: no such data file"):
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
