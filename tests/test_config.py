"""Configs and the flags made from them: help, types and choices written once, in config.py."""
import argparse
from dataclasses import fields

import pytest

from caption.cli import build_parser
from caption.cli.flags import add_config_flags, add_decode_flags, config_from, decode_options
from caption.config import CaptionConfig, CaptionTrainConfig, Seq2SeqConfig, Seq2SeqTrainConfig, from_dict
from caption.search import HARD_MODES, DecodeOptions

CONFIGS = (CaptionConfig, CaptionTrainConfig, Seq2SeqConfig, Seq2SeqTrainConfig)


def _parser(cls):
    p = argparse.ArgumentParser()
    add_config_flags(p, cls)
    return p


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_with_help_is_a_flag_and_no_other(cls):
    p = _parser(cls)
    flags = {a.dest: a for a in p._actions if a.dest != "help"}
    documented = {f.name for f in fields(cls) if f.metadata.get("help")}
    assert set(flags) == documented
    for f in fields(cls):
        if f.name in flags:
            help = f.metadata["help"]         # a help that names its default says it once
            family = f.metadata.get("family")          # and one that a model family alone reads names it
            if family and not help.startswith(family):
                help = f"{family}: {help}"
            assert flags[f.name].help == (help if "default" in help else f"{help} (default: {f.default})")
            assert flags[f.name].choices == f.metadata.get("choices")


def test_flags_parse_to_the_field_types_and_only_given_ones_override():
    p = _parser(CaptionTrainConfig)
    cfg = config_from(CaptionTrainConfig, p.parse_args(["--lr", "0.01", "--captions-per-image", "0",
                                                       "--threads", "2", "--precision", "bf16", "--reward", "to-go"]))
    assert (cfg.lr, cfg.captions_per_image, cfg.threads, cfg.precision, cfg.reward) == (0.01, 0, 2, "bf16", "to-go")
    assert cfg.epochs == CaptionTrainConfig.epochs and cfg.seed == 0            # untouched fields keep defaults
    assert isinstance(cfg.lr, float) and isinstance(cfg.threads, int)      # from `float`, `int | None`
    model = config_from(Seq2SeqConfig, _parser(Seq2SeqConfig).parse_args(["--no-bidirectional", "--local",
                                                                            "local-m", "--decoder-dim", "32"]))
    assert (model.bidirectional, model.local, model.decoder_dim) == (False, "local-m", 32)
    with pytest.raises(SystemExit):
        _parser(CaptionConfig).parse_args(["--attention", "sometimes"])       # choices come from config.py


def test_decode_flags_are_the_options_fields_with_each_commands_defaults():
    p = argparse.ArgumentParser()
    add_decode_flags(p, DecodeOptions(beam_size=3, hard_mode="argmax", seed=0))
    args = p.parse_args([])
    assert decode_options(args) == DecodeOptions(beam_size=3, hard_mode="argmax", seed=0)
    assert decode_options(p.parse_args(["--beam", "5", "--hard-mode", "sample", "--seed", "7"])) == \
        DecodeOptions(beam_size=5, hard_mode="sample", seed=7)
    hard = next(a for a in p._actions if a.dest == "hard_mode")
    assert tuple(hard.choices) == HARD_MODES and hard.help.endswith("(default: argmax)")
    only_beam = argparse.ArgumentParser()
    add_decode_flags(only_beam, DecodeOptions(beam_size=1, seed=5), names=("beam_size",))
    assert [a.dest for a in only_beam._actions] == ["help", "beam"]
    # the fields without a flag here come from the preset
    assert decode_options(only_beam.parse_args(["--beam", "2"])) == DecodeOptions(beam_size=2, seed=5)


def test_every_flag_of_every_command_has_help():
    stack = [build_parser()]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if action.option_strings and action.dest not in ("help", "version"):
                assert action.help, f"{p.prog} {action.option_strings} has no help"
            if isinstance(getattr(action, "choices", None), dict):
                stack += list(action.choices.values())


def test_from_dict_rebuilds_and_refuses_unknown_fields():
    from dataclasses import asdict
    cfg = CaptionConfig(attention="hard", max_len=12)
    assert from_dict(CaptionConfig, asdict(cfg)) == cfg
    assert from_dict(CaptionConfig, {"attention": "none"}).hidden_dim == CaptionConfig.hidden_dim
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\]"):
        from_dict(CaptionConfig, {"colour": "red"})
