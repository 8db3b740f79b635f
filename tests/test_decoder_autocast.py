"""The LSTM decoder under bf16 autocast: it trains near fp32 with every attention, decodes, and does
per pass (not per step) the work that autocast would repeat at every step."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from caption import search
from caption.config import CaptionConfig
from caption.image.decoder import Decoder
from caption.kernels import attention_lstm, native

V, D = 13, 16
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def tiny(**kw) -> CaptionConfig:
    return CaptionConfig(**{**dict(embed_dim=8, hidden_dim=12, attn_dim=10, dropout=0.0, max_len=7), **kw})


@pytest.mark.parametrize("attention", ["soft", "hard", "none"])
def test_bf16_autocast_trains_and_stays_near_fp32(attention):
    """The parameters' and the annotations' gradients (what a trained encoder receives: summed over
    the steps in bf16 since the decoder casts them once, or in fp32 and rounded once to bf16 by the
    loop by hand) point where fp32's do."""
    torch.manual_seed(3)
    dec = Decoder(tiny(attention=attention), D, V)
    leaf, tgt = torch.randn(4, 5, D, requires_grad=True), torch.randint(4, V, (4, 6))
    grads = []
    for bf16 in (False, True):
        dec.zero_grad()
        leaf.grad = None
        with torch.autocast(**BF16, enabled=bf16):
            out = dec(2 * leaf, tgt, hard=attention == "hard", expected=True)
        assert out.logits.dtype == (torch.bfloat16 if bf16 else torch.float32)
        F.cross_entropy(out.logits.float().flatten(0, 1), tgt.flatten()).backward()
        grads.append({"feats": leaf.grad, **{n: p.grad for n, p in dec.named_parameters() if p.grad is not None}})
        assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads[-1].values())
    for name in ("lstm.weight_ih", "feats"):
        assert F.cosine_similarity(grads[0][name].flatten(), grads[1][name].flatten(), dim=0) > 0.99, name


@pytest.mark.parametrize("attention,mode", [("soft", "expected"), ("hard", "argmax"), ("none", "expected")])
def test_beam_search_under_autocast_decodes_with_weights_that_sum_to_one(attention, mode):
    torch.manual_seed(4)
    dec = Decoder(tiny(attention=attention), D, V).eval()
    feats = torch.randn(3, 6, D)
    with torch.no_grad(), torch.autocast(**BF16):
        memory = dec.memory(feats)
        step = partial(dec.step, hard_mode=mode, generator=torch.Generator().manual_seed(5))
        found = search.beam_search(step, dec.init_state(memory), memory, 3, 1, 2, 7, 4, shared_memory=True)
    assert len(found) == 3
    for hyp in found:
        assert 1 <= len(hyp.tokens) <= 7 and torch.isfinite(torch.tensor(hyp.score))
        assert hyp.alpha.shape == (len(hyp.tokens), 6)
        assert torch.allclose(hyp.alpha.float().sum(-1), torch.ones(len(hyp.tokens)), atol=1e-2)


def _full_size_ops(dec: Decoder, feats, tgt, lengths=None) -> dict[str, int]:
    """Forward and backward under bf16 autocast: how many casts make a tensor the size of the
    annotations (N, L, D), and how many zero tensors the size of the word gates (N, T, 4H) the
    backward pass makes to hold one step's slice of their gradient."""
    N, T = tgt.shape
    sizes = {"cast": (N, *feats.shape[1:]), "fill": (N, T, 4 * dec.config.hidden_dim)}
    counts = {"cast": 0, "fill": 0}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.__name__.split(".")[0]
            kind = "cast" if name == "_to_copy" else "fill" if name.endswith("_backward") or "zero" in name \
                or name.startswith("fill") else None          # select_backward: a zero tensor, one slice set
            if kind and isinstance(out, torch.Tensor) and tuple(out.shape) == sizes[kind]:
                counts[kind] += 1
            return out

    with Count():
        with torch.autocast(**BF16):
            out = dec(feats, tgt, lengths=lengths)
        out.logits.float().sum().backward()
    return counts


@pytest.mark.parametrize("lengths", [None, torch.tensor([8, 8, 6, 3])])
@pytest.mark.parametrize("fused", [False, True])
def test_under_autocast_the_annotations_are_cast_once_and_the_word_gates_never_refilled(lengths, fused, monkeypatch):
    """The context product reads the annotations in bf16 at every step: cast once per pass (and the
    gradient back once; the loop by hand also rounds its fp32 sum to bf16 once), not once per step
    each way; and taking step t's word gates costs no zero tensor of all T steps' gates in the
    backward pass (a copy and a fill per step, before). The loop by hand
    (caption.kernels.attention_lstm) makes their gradient's one tensor once."""
    if fused and native.library() is None:
        pytest.skip(native.status())
    if not fused:
        monkeypatch.setattr(attention_lstm, "usable", lambda *a: False)
    torch.manual_seed(0)
    dec = Decoder(tiny(), D, V)
    leaf = torch.randn(4, 5, D, requires_grad=True)
    feats, tgt = 2 * leaf, torch.randint(4, V, (4, 8))    # an encoder's output: autocast caches no cast of it
    # the loop by hand sums the annotations' gradient over the steps in fp32 and casts it once to their
    # bf16: one more full-size cast per backward pass, none per step
    assert _full_size_ops(dec, feats, tgt, lengths) == {"cast": 2 + int(fused), "fill": int(fused)}
    with torch.autocast(**BF16):
        assert dec.memory(feats)["values"].dtype == torch.bfloat16
        assert Decoder(tiny(attention="none"), D, V).memory(feats)["values"] is feats   # nothing reads them
    assert dec.memory(feats)["values"] is feats                       # fp32: no copy at all
