"""One settings convention: every field of every config dataclass (and DecodeOptions) carries its
help, choices and valid range in its own metadata; `check` refuses a value outside it with the
field's message; the commands take their decoding defaults from the presets in caption/search.py."""
import dataclasses
import inspect
import math
import typing

import pytest

from caption import config
from caption.classify import config as classify_config
from caption.cli import build_parser, main
from caption.cli.flags import decode_options
from caption.config import Range, check, option
from caption.errors import OptionError
from caption.search import COMPARE_COMMAND, IMAGE_COMMANDS, TEXT_COMMANDS, DecodeOptions

DATACLASSES = [c for module in (config, classify_config) for _, c in inspect.getmembers(module, inspect.isclass)
               if dataclasses.is_dataclass(c) and c.__module__ == module.__name__ and c is not Range]


def _numeric(hint) -> type | None:
    """int or float for `int`, `float | None`, ...; None for any other type (bool included)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if len(args) == 1 and args[0] in (int, float) else None


def unranged(cls) -> list[str]:
    """The int and float fields of `cls` without a Range, or with one that does not fit the type."""
    hints, bad = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        kind, valid = _numeric(hints[f.name]), f.metadata.get("range")
        if kind is None:
            continue
        if not isinstance(valid, Range):
            bad.append(f"{f.name}: no range")
        elif valid.whole != (kind is int) or valid.unset != (type(None) in typing.get_args(hints[f.name])):
            bad.append(f"{f.name}: {valid} does not fit {hints[f.name]}")
    return bad


def test_the_walk_covers_every_config_dataclass():
    assert {c.__name__ for c in DATACLASSES} == {"Seq2SeqConfig", "Seq2SeqTrainConfig", "CaptionConfig",
                                                 "CaptionTrainConfig", "ClassifierConfig", "ClassifierTrainConfig"}


@pytest.mark.parametrize("cls", DATACLASSES + [DecodeOptions], ids=lambda c: c.__name__)
def test_every_numeric_field_has_a_range_that_holds_its_default(cls):
    assert unranged(cls) == []
    for f in dataclasses.fields(cls):
        if f.metadata.get("range"):
            assert f.metadata["range"].ok(f.default), f.name
    check(cls()) if cls is not DecodeOptions else cls()


def test_a_numeric_field_without_a_range_is_found():
    @dataclasses.dataclass
    class Forgot:
        size: int = option(3, "a size")
        rate: float | None = option(None, "a rate", range=Range(0, 1, whole=False))
        ok: int = option(1, "fine", range=Range(1))
        name: str = option("a", "text needs none")
        flag: bool = option(True, "nor does a switch")
    assert unranged(Forgot) == ["size: no range", f"rate: {Range(0, 1, whole=False)} does not fit float | None"]


@pytest.mark.parametrize("make, message", [
    (lambda: config.Seq2SeqConfig(num_layers=17), "num_layers must be a whole number from 1 to 16, got 17"),
    (lambda: config.Seq2SeqConfig(decoder_dim=0), "decoder_dim must be a whole number from 1 to 8192 (or unset), "
                                                  "got 0"),
    (lambda: config.Seq2SeqConfig(max_source_len=0), "max_source_len must be a whole number from 1 to 100000, got 0"),
    (lambda: config.Seq2SeqTrainConfig(val_fraction=1.0), "val_fraction must be a number in (0, 1), got 1.0"),
    (lambda: config.Seq2SeqTrainConfig(weight_decay=-1e-3), "weight_decay must be a number in [0, inf), got -0.001"),
    (lambda: config.CaptionConfig(dropout=1.0), "dropout must be a number in [0, 1), got 1.0"),
    (lambda: config.CaptionConfig(hidden_dim=True), "hidden_dim must be a whole number from 1 to 8192, got True"),
    # attn_dim is no longer checked with the seq2seq field of that name, which may be unset
    (lambda: config.CaptionConfig(attn_dim=None), "attn_dim must be a whole number from 1 to 8192, got None"),
    (lambda: config.CaptionTrainConfig(lr=math.nan), "lr must be a number in (0, inf), got nan"),
    (lambda: config.CaptionTrainConfig(captions_per_image=2.0), "captions_per_image must be a whole number from 0 "
                                                                "to 1000 (or unset), got 2.0"),
    (lambda: config.CaptionTrainConfig(expected_prob=1.5), "expected_prob must be a number in [0, 1], got 1.5"),
])
def test_a_value_out_of_range_is_refused_with_the_fields_message(make, message):
    with pytest.raises(OptionError) as e:
        check(make())
    assert str(e.value) == message


@pytest.mark.parametrize("make, message", [
    (lambda: DecodeOptions(beam_size=101), "beam_size must be at most 100, got 101"),
    (lambda: DecodeOptions(beam_size=0), "beam_size must be at least 1, got 0"),
    (lambda: DecodeOptions(length_penalty=100.5), "length_penalty must be a number from 0 to 100.0, got 100.5"),
    (lambda: DecodeOptions(max_len=0), "max_len must be a whole number from 1 to 100000 (or None), got 0"),
])
def test_decode_options_read_their_bounds_from_the_metadata(make, message):
    with pytest.raises(OptionError) as e:
        make()
    assert str(e.value) == message


def test_a_flag_out_of_range_is_one_line_naming_the_flag(tmp_path, capsys):
    assert main(["seq2seq", "train", "--out", str(tmp_path / "m.pt"), "--num-layers", "0"]) == 1
    assert capsys.readouterr().err == "caption: error: --num-layers must be a whole number from 1 to 16, got 0\n"
    assert not (tmp_path / "m.pt").exists()


# the parsed defaults of every command that decodes, against the preset it names
COMMANDS = [
    (["predict", "a.png"], IMAGE_COMMANDS), (["visualize", "a.png", "--out", "f.png"], IMAGE_COMMANDS),
    (["demo"], IMAGE_COMMANDS), (["evaluate"], IMAGE_COMMANDS), (["explore"], IMAGE_COMMANDS),
    (["serve"], IMAGE_COMMANDS), (["compare", "a.png", "--out", "f.png"], COMPARE_COMMAND),
    (["seq2seq", "translate", "x"], TEXT_COMMANDS), (["seq2seq", "explore", "x"], TEXT_COMMANDS),
]


@pytest.mark.parametrize("argv, preset", COMMANDS, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_each_commands_decoding_defaults_are_its_preset(argv, preset):
    args = build_parser().parse_args(argv)
    assert decode_options(args) == preset
    if hasattr(args, "seed"):
        assert args.seed == preset.seed


def test_the_image_commands_seed_sample_mode_and_the_library_does_not():
    assert IMAGE_COMMANDS.seed == COMPARE_COMMAND.seed == 0 and DecodeOptions().seed is None
    assert dataclasses.replace(IMAGE_COMMANDS, seed=None) == DecodeOptions()
    assert dataclasses.replace(COMPARE_COMMAND, hard_mode="expected") == IMAGE_COMMANDS
    assert TEXT_COMMANDS == DecodeOptions(beam_size=1)
