"""What a checkpoint is (`caption info`): kind, attention, sizes, parameter count, vocabulary, the
data it was trained on and its recorded scores, format version and model card.

Everything comes from the file: the config, the state_dict, the vocabulary and meta (what training
recorded). What a file does not record is left out, never filled in. The parameter count is that of
the model the config builds, built on torch's "meta" device (shapes only, no memory, no weights
file read), so buffers (batch-norm statistics, the hard model's baselines) are not counted and a
backbone of any size costs nothing to count.
"""
from __future__ import annotations

import math
import os
from dataclasses import replace

from . import checkpoint
from .cards import FIELDS
from .errors import CheckpointError
from .fileio import shown
from .safe_read import clip

TRUNK = checkpoint.TRUNK
CARD_CHARS = 2000     # of one field of a card: a paragraph, not a file
# the validation figures shown first, in this order; any other recorded number follows
FIRST_SCORES = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "spice")


def read(path: str | os.PathLike) -> dict:
    """describe() of the checkpoint at `path`; CheckpointError (one line) when it is not one."""
    payload = checkpoint.load(path)
    return describe(payload, shown(path), stored_version(path))


def stored_version(path: str | os.PathLike) -> int | None:
    """The format version as written in the file (checkpoint.load gives the payload migrated to the
    current one). Read again memory-mapped, so the tensors are not read twice; None if that fails."""
    import torch
    try:
        version = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("format_version")
    except Exception:     # noqa: BLE001 - checkpoint.load has already read the file; this is a detail
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def describe(payload: dict, name: str, stored: int | None = None) -> dict:
    """A checkpoint payload (as checkpoint.load returns it) -> a JSON-ready dict. `stored`: the
    version the file holds, when known (default: the payload's own)."""
    kind = payload.get("kind")
    if kind == "captioner":
        info = _captioner(payload, name)
    elif kind == "seq2seq":
        info = _seq2seq(payload, name)
    elif kind == "classifier":
        info = _classifier(payload, name)
    else:
        raise CheckpointError(f"{name}: a {kind!r:.40} checkpoint, not one caption writes")
    meta = payload.get("meta") or {}
    info = {"file": name, "kind": kind, **info, "vocabulary": len(payload.get("vocab", []))}
    info.update(_training(meta, kind))
    info["format_version"] = {"stored": stored if stored is not None else payload.get("format_version"),
                              "current": checkpoint.FORMAT_VERSION}
    card = meta.get("card")
    info["card"] = ({str(k): clip(v, CARD_CHARS) for k, v in card.items() if isinstance(v, str)}
                    if isinstance(card, dict) else None)
    return _plain(info)


def _built(model_cls, config_cls, payload: dict, name: str, **changes):
    """(config, the model on the meta device or None when it cannot be built there)."""
    import torch
    config, vocab = checkpoint.parts(payload, config_cls, name)
    config = replace(config, **changes)
    try:
        with torch.device("meta"):
            return config, model_cls(config, len(vocab))
    except (RuntimeError, ValueError, TypeError, NotImplementedError):
        return config, None


def _count(model, state: dict) -> tuple[int, int]:
    """(the model's parameters, those of them the file holds). Without a model: the file's
    floating-point tensors, for both."""
    if model is None:
        n = sum(v.numel() for v in state.values() if getattr(v, "is_floating_point", lambda: False)())
        return n, n
    names = dict(model.named_parameters())
    held = sum(p.numel() for k, p in names.items() if k in state)
    return sum(p.numel() for p in names.values()), held


def _captioner(payload: dict, name: str) -> dict:
    from .config import CaptionConfig
    from .image.captioner import Captioner
    # the weights file is not read: the shapes are the same without it
    config, model = _built(Captioner, CaptionConfig, payload, name, encoder_weights=None)
    c = payload["config"]
    total, held = _count(model, payload["state_dict"])
    sizes = {"encoder": config.encoder, "image_size": config.image_size,
             "grid": list(model.grid) if model is not None else ([config.grid] * 2 if config.grid else None),
             "feature_dim": model.encoder.dim if model is not None else config.feature_dim,
             "embed_dim": config.embed_dim, "hidden_dim": config.hidden_dim,
             "attn_dim": config.attn_dim if config.attention != "none" else None, "max_len": config.max_len,
             "position": config.position, "selector": config.selector and config.attention != "none"}
    if config.decoder == "transformer":     # none of the LSTM's sizes apply
        for k in ("embed_dim", "hidden_dim", "attn_dim", "selector"):
            del sizes[k]
        sizes.update(decoder="transformer", layers=config.layers, heads=config.heads, model_dim=config.model_dim,
                     ff_dim=config.ff_dim)
    info = {"attention": config.attention, "sizes": sizes, "parameters": total, "parameters_in_file": held}
    external = payload.get("external") or {}
    if external:     # a frozen backbone read from a weights file stays in that file
        trunk = sum(p.numel() for k, p in model.named_parameters() if k.startswith(TRUNK)) if model else None
        info["backbone"] = {"encoder": config.encoder, "parameters": trunk, "carried": False,
                            "file": external.get("trunk"), "sha256": external.get("sha256")}
    elif config.encoder != "cnn":
        info["backbone"] = {"encoder": config.encoder, "carried": True, "fine_tuned": bool(c.get("fine_tune"))}
    return info


def _seq2seq(payload: dict, name: str) -> dict:
    from .config import Seq2SeqConfig
    from .text.transformer import build_seq2seq
    config, model = _built(build_seq2seq, Seq2SeqConfig, payload, name)
    total, held = _count(model, payload["state_dict"])
    attention = {"score": config.score, "scope": config.local or "global"}
    if config.local:
        attention["window"] = config.window
    sizes = {"embed_dim": config.embed_dim, "hidden_dim": config.hidden_dim, "decoder_dim": config.decoder_dim,
             "num_layers": config.num_layers, "bidirectional": config.bidirectional, "cell": config.cell,
             "residual": config.residual, "reverse_source": config.reverse_source,
             "attn_dim": config.attn_dim if config.score == "additive" else None,
             "max_source_len": config.max_source_len, "max_target_len": config.max_target_len}
    if config.model == "transformer":     # none of the LSTM's sizes apply
        attention = {"score": f"{config.heads}-head scaled dot-product", "scope": "global"}
        sizes = {"model": "transformer", "num_layers": config.num_layers, "heads": config.heads,
                 "model_dim": config.model_dim, "ff_dim": config.ff_dim, "reverse_source": config.reverse_source,
                 "max_source_len": config.max_source_len, "max_target_len": config.max_target_len}
    return {"attention": attention, "sizes": sizes, "parameters": total, "parameters_in_file": held}


def _classifier(payload: dict, name: str) -> dict:
    from .classify.config import ClassifierConfig
    from .classify.model import AttentionClassifier
    config, model = _built(AttentionClassifier, ClassifierConfig, payload, name)
    total, held = _count(model, payload["state_dict"])
    sizes = {k: getattr(config, k) for k in ("embed_dim", "hidden_dim", "attn_dim", "max_len", "labels")}
    return {"attention": {"score": "additive pooling", "scope": "global"}, "sizes": sizes, "parameters": total,
            "parameters_in_file": held}


def _training(meta: dict, kind: str) -> dict:
    """What training recorded: the epoch kept, the training config, the scores, the data."""
    out: dict = {}
    if isinstance(meta.get("epoch"), int):
        out["epoch"] = meta["epoch"]
    if isinstance(meta.get("train"), dict):
        out["training"] = meta["train"]
    scores = {}
    if kind == "captioner":
        val = meta.get("val")
        history = meta.get("history")
        if not isinstance(val, dict) and isinstance(history, list) and history and isinstance(history[-1], dict):
            val = history[-1]      # a resumable state: the last epoch's record
        if isinstance(val, dict):
            scores["validation"] = {k: v for k, v in val.items() if isinstance(v, (int, float))}
    elif kind == "classifier":
        for split, what in (("val", "validation"), ("test", "test")):
            if isinstance(meta.get(split), dict):
                scores[what] = {k: v for k, v in meta[split].items() if isinstance(v, (int, float))}
    else:
        for split, what in (("val", "validation"), ("test", "test")):
            right, total = meta.get(f"{split}_correct"), meta.get(f"{split}_total")
            if isinstance(right, int) and isinstance(total, int) and total > 0:
                scores[what] = {"correct": right, "total": total, "accuracy": right / total}
    if scores:
        out["scores"] = scores
    if "optimizer" in meta:
        out["resumable"] = True
    return out


def _plain(value):
    """Only what JSON writes strictly: a number that is not finite becomes None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def lines(info: dict) -> list[str]:
    """describe()'s dict as readable text, one fact a line (long ones wrapped and indented)."""
    out = [f"{info['file']}: {_what(info)}"]
    out += _wrap("sizes", _sizes(info))
    out += _wrap("parameters", _parameters(info))
    unit = "symbols" if info["kind"] == "seq2seq" else "words"
    out.append(f"  vocabulary: {info['vocabulary']:,} {unit}")
    out += _wrap("training", _training_line(info))
    out += _scores(info)
    card = info.get("card") or {}
    out += _wrap("data", card.get("data") or "not recorded in this file (no model card)")
    v = info["format_version"]
    out.append(f"  format: version {v['stored']} as stored" + ("" if v["stored"] == v["current"] else
                                                                 f", read as version {v['current']}")
               + f" (this caption writes {v['current']})")
    if card:
        out.append("  model card:")
        for k in [*FIELDS, *sorted(set(card) - set(FIELDS))]:
            if k in card and k != "data":
                out += _wrap(k.replace("_", " "), card[k], indent=4)
    else:
        out.append("  model card: none")
    return out


def _parameters(info: dict) -> str:
    text, backbone = f"{info['parameters']:,}", info.get("backbone") or {}
    if backbone and not backbone.get("carried"):
        trunk = backbone.get("parameters")
        return (text + f" ({info['parameters_in_file']:,} in this file: the frozen {backbone['encoder']} backbone"
                + (f", {trunk:,} of them," if trunk is not None else "") + " is not carried, it is read from "
                f"{shown(str(backbone.get('file')))}, sha256 {str(backbone.get('sha256'))[:12]}...)")
    if backbone:
        tuned = "fine-tuned" if backbone.get("fine_tuned") else "frozen"
        return text + f" ({backbone['encoder']} backbone included, {tuned})"
    return text


def _what(info: dict) -> str:
    a = info["attention"]
    if info["kind"] == "captioner":
        if info["sizes"].get("decoder") == "transformer":
            return "an image captioner with a Transformer decoder (multi-head soft attention)"
        return ("an image captioner without attention (the ablation)" if a == "none"
                else f"an image captioner with {a} attention")
    if info["kind"] == "classifier":
        return f"a text classifier: bi-GRU with attention pooling, labels {', '.join(info['sizes']['labels'])}"
    scope = a["scope"] + (f", window {a['window']}" if "window" in a else "")
    return f"a character seq2seq with {a['score']} attention ({scope})"


def _sizes(info: dict) -> str:
    s = info["sizes"]
    if info["kind"] == "captioner":
        encoder = "built-in CNN" if s["encoder"] == "cnn" else s["encoder"]
        grid = "x".join(map(str, s["grid"])) if s["grid"] else "?"
        text = f"{encoder} encoder, {s['image_size']} px images, a {grid} grid of {s['feature_dim']}-d annotations; "
        if s.get("decoder") == "transformer":
            return text + (f"{s['layers']} decoder layers of model size {s['model_dim']}, {s['heads']} heads, "
                           f"feed-forward {s['ff_dim']}; captions of at most {s['max_len']} words")
        text += f"word embedding {s['embed_dim']}, LSTM {s['hidden_dim']}"
        if s["attn_dim"] is not None:
            text += f", attention {s['attn_dim']}"
        return text + f"; captions of at most {s['max_len']} words"
    if info["kind"] == "classifier":
        return (f"word embedding {s['embed_dim']}, GRU {s['hidden_dim']} per direction, attention {s['attn_dim']}; "
                f"texts cut to {s['max_len']} tokens")
    limits = f"; sources up to {s['max_source_len']} characters, outputs up to {s['max_target_len']}"
    if s.get("model") == "transformer":
        return (f"transformer: {s['num_layers']} encoder and {s['num_layers']} decoder layer(s) of model size "
                f"{s['model_dim']}, {s['heads']} heads, feed-forward {s['ff_dim']}" + limits)
    cell = {"lstm": "LSTM", "gru": "GRU", "gru-bahdanau": "GRU (Bahdanau's)"}.get(s.get("cell"), "LSTM")
    bottom = " (the bottom layer bidirectional, residual from layer 3)" if s.get("residual") else \
        (" per direction (bidirectional)" if s["bidirectional"] else "")
    text = (f"character embedding {s['embed_dim']}, encoder {cell} {s['hidden_dim']}{bottom}, "
            f"{s['num_layers']} layer(s), decoder {s['decoder_dim'] or 'the encoder size'}")
    if s["attn_dim"] is not None:
        text += f", attention {s['attn_dim']}"
    return text + f"; sources up to {s['max_source_len']} characters, outputs up to {s['max_target_len']}"


def _training_line(info: dict) -> str:
    t = info.get("training") or {}
    parts = []
    if "epoch" in info:
        done = f" of {t['epochs']}" if isinstance(t.get("epochs"), int) else ""
        parts.append(f"epoch {info['epoch']}{done} " + ("(a resumable state)" if info.get("resumable")
                                                        else "kept (best on validation)"))
    for key, label in (("batch_size", "batch"), ("seed", "seed")):
        if key in t:
            parts.append(f"{label} {t[key]}")
    if isinstance(t.get("lr"), (int, float)):
        parts.append(f"lr {t['lr']:g}" + (f" -> {t['lr_final']:g}" if isinstance(t.get("lr_final"), (int, float))
                                          else ""))
    return ", ".join(parts) or "not recorded in this file"


def _scores(info: dict) -> list[str]:
    """One line (wrapped) per split scored: exact matches for seq2seq, every recorded figure else."""
    out = []
    for split, s in (info.get("scores") or {}).items():
        if "correct" in s and "accuracy" in s and len(s) == 3:
            out += _wrap(split, f"{s['correct']:,}/{s['total']:,} exact ({100 * s['accuracy']:.2f}%)")
            continue
        keys = [k for k in FIRST_SCORES if k in s] + [k for k in s if k not in FIRST_SCORES]
        # a figure and its name stay on one line: joined by NUL while wrapping (not a break point)
        text = ", ".join(f"{k}\0{_number(s[k])}" for k in keys)
        out += [line.replace("\0", " ") for line in _wrap(split, text)]
    return out or ["  scores: none recorded in this file"]


def _number(v) -> str:
    return "?" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:.4g}")


def _wrap(label: str, text: str, indent: int = 2) -> list[str]:
    import textwrap
    # a foreign file's text (its card, its scores' names) never writes a terminal escape
    text = "".join(ch if ch.isprintable() or ch == "\0" else repr(ch)[1:-1] for ch in str(text))
    return textwrap.wrap(f"{label}: {text}", 100, initial_indent=" " * indent,
                         subsequent_indent=" " * (indent + 4), break_on_hyphens=False)
