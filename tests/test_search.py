import math

import pytest
import torch

from caption import search
from caption.errors import InputError, OptionError
from caption.search import DecodeOptions

PAD, START, END, A, B = range(5)


def make_step(rows):
    """A fixed next-token table (a tiny Markov model), so the answer of any search is known.
    rows: {previous token: {next token: probability}}; unlisted pairs get ~0.
    Its fields depend on the path a row took: 'attention' one-hot at the previous token mod 3, and
    that location, so a field that does not follow its beam shows."""
    probs = torch.full((5, 5), 1e-9)
    for prev, nxt in rows.items():
        for tok, p in nxt.items():
            probs[prev, tok] = p
    probs[END, END] = 1.0
    table = torch.log(probs / probs.sum(1, keepdim=True))

    def step(tokens, state, memory):
        where = tokens % 3
        alpha = torch.nn.functional.one_hot(where, 3).float() * memory[:, :1]
        return table[tokens], state + 1, {"alpha": alpha, "location": where}
    return step


# greedy takes A then A forever; the best sequence is B <end> (log 0.4)
TRAP = {START: {A: 0.5, B: 0.4, END: 0.1}, A: {A: 0.35, B: 0.35, END: 0.3}, B: {END: 1.0}}
# raw scores prefer stopping at once (log 0.4); per-token scores prefer A B <end> (log 0.3 / 3)
SHORT = {START: {END: 0.4, A: 0.6}, A: {B: 0.5, END: 0.5}, B: {END: 1.0}}


def run(fn, rows=TRAP, batch=1, **kw):
    state = torch.zeros(batch, dtype=torch.long)
    memory = torch.ones(batch, 1)
    return fn(make_step(rows), state, memory, batch, START, END, 6, **kw)


def test_greedy_follows_the_most_likely_token():
    [h] = run(search.greedy)
    assert h.tokens == [A] * 6                      # never ends: A stays the argmax after A
    assert abs(h.score - (math.log(0.5) + 5 * math.log(0.35))) < 1e-5
    assert h.alpha.shape == (6, 3)
    assert h.location.tolist() == [START % 3] + [A % 3] * 5    # one per token: its previous token mod 3


def test_beam_finds_the_better_sequence_greedy_misses():
    [h] = run(search.beam_search, beam_size=2)
    assert h.tokens == [B]                          # B <end>: log 0.4 beats anything through A
    assert abs(h.score - math.log(0.4)) < 1e-5
    assert h.alpha.shape == (1, 3)
    assert torch.equal(h.alpha[0], torch.tensor([0.0, 1.0, 0.0])) and h.location.tolist() == [START % 3]


def test_length_normalisation_changes_the_choice():
    [raw] = run(search.beam_search, SHORT, beam_size=3, length_penalty=0)
    assert raw.tokens == [] and abs(raw.score - math.log(0.4)) < 1e-5
    [norm] = run(search.beam_search, SHORT, beam_size=3, length_penalty=1.0)
    assert norm.tokens == [A, B] and abs(norm.score - math.log(0.6 * 0.5)) < 1e-5


def test_beam_k1_equals_greedy_and_batched_equals_single():
    torch.manual_seed(0)
    V, H = 7, 8
    emb, cell, out = torch.nn.Embedding(V, H), torch.nn.GRUCell(H, H), torch.nn.Linear(2 * H, V)

    def step(tokens, state, memory):                # a random recurrent model with attention
        h = cell(emb(tokens), state)
        alpha = torch.softmax(torch.einsum("bh,bsh->bs", h, memory), -1)
        ctx = torch.einsum("bs,bsh->bh", alpha, memory)
        return torch.log_softmax(out(torch.cat([h, ctx], -1)), -1), h, {"alpha": alpha}

    Bn = 5
    state, memory = torch.randn(Bn, H), torch.randn(Bn, 4, H)
    greedy = search.greedy(step, state, memory, Bn, 1, 2, max_len=8)
    beam1 = search.beam_search(step, state, memory, Bn, 1, 2, max_len=8, beam_size=1)
    for g, b in zip(greedy, beam1):
        assert g.tokens == b.tokens
        assert abs(g.score - b.score) < 1e-4
        torch.testing.assert_close(g.alpha, b.alpha)
    batched = search.beam_search(step, state, memory, Bn, 1, 2, max_len=8, beam_size=4)
    for i in range(Bn):
        [single] = search.beam_search(step, state[i:i + 1], memory[i:i + 1], 1, 1, 2, max_len=8, beam_size=4)
        assert single.tokens == batched[i].tokens
        assert abs(single.score - batched[i].score) < 1e-4
        torch.testing.assert_close(single.alpha, batched[i].alpha)
    # each word's alpha is the one its own path produced: replay the chosen tokens step by step
    for i in range(Bn):
        h_i, tokens = state[i:i + 1], torch.tensor([1])
        for t, tok in enumerate(batched[i].tokens):
            _, h_i, fields = step(tokens, h_i, memory[i:i + 1])
            torch.testing.assert_close(fields["alpha"][0], batched[i].alpha[t])
            tokens = torch.tensor([tok])
    # beam search never returns a worse sequence score than greedy (unnormalised search)
    wide = search.beam_search(step, state, memory, Bn, 1, 2, max_len=8, beam_size=4, length_penalty=0)
    assert all(w.score >= g.score - 1e-5 for w, g in zip(wide, greedy))


def test_tree_map_handles_nested_state():
    state = {"h": torch.zeros(2, 3), "pair": (torch.ones(2), [torch.arange(2)])}
    out = search.tree_map(lambda x: x.repeat_interleave(2, 0), state)
    assert out["h"].shape == (4, 3) and out["pair"][1][0].tolist() == [0, 0, 1, 1]


def test_decode_dispatches_on_the_options_and_max_len_overrides_the_model():
    greedy = run(search.greedy)
    via = run(search.decode, options=DecodeOptions(beam_size=1))
    assert [h.tokens for h in via] == [h.tokens for h in greedy]
    [beam] = run(search.decode, options=DecodeOptions(beam_size=2))
    assert beam.tokens == [B]
    [short] = run(search.decode, options=DecodeOptions(beam_size=1, max_len=2))
    assert short.tokens == [A, A] and short.location.tolist() == [START % 3, A % 3]
    [raw] = run(search.decode, SHORT, options=DecodeOptions(beam_size=3, length_penalty=0))
    assert raw.tokens == []


@pytest.mark.parametrize("bad, name", [(dict(beam_size=0), "beam_size"), (dict(beam_size=2.5), "beam_size"),
                                       (dict(beam_size=True), "beam_size"),
                                       (dict(hard_mode="soft"), "hard_mode"), (dict(max_len=0), "max_len"),
                                       (dict(length_penalty=-1.0), "length_penalty"),
                                       (dict(length_penalty=float("nan")), "length_penalty"),
                                       (dict(length_penalty=None), "length_penalty"),
                                       (dict(seed=1.5), "seed"), (dict(seed="3"), "seed")])
def test_decode_options_are_validated_once_with_one_line(bad, name):
    with pytest.raises(OptionError) as e:
        DecodeOptions(**bad)
    assert e.value.name == name and str(e.value).startswith(f"{name} must be") and "\n" not in str(e.value)
    assert isinstance(e.value, InputError) and isinstance(e.value, ValueError)


def test_decode_options_are_frozen_and_take_any_integer():
    import dataclasses

    import numpy as np
    opts = DecodeOptions(beam_size=np.int64(2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.beam_size = 5
    assert dataclasses.replace(opts, seed=3).seed == 3 and opts.seed is None


def test_every_field_follows_its_beam_through_reordering():
    """SHORT makes beams overtake each other; location = previous token mod 3 must match the tokens."""
    for rows in (TRAP, SHORT):
        for k in (2, 3):
            [h] = run(search.beam_search, rows, beam_size=k, length_penalty=0)
            assert h.location.tolist() == [t % 3 for t in [START] + h.tokens[:-1]][:len(h.tokens)]


def test_a_step_field_that_a_hypothesis_lacks_is_refused():
    def step(tokens, state, memory):
        return torch.log_softmax(torch.zeros(len(tokens), 5), -1), state, {"colour": torch.zeros(len(tokens))}
    with pytest.raises(ValueError, match="colour"):
        search.greedy(step, torch.zeros(1), None, 1, START, END, 3)


def _authors_beam(step, state, memory, start, end, max_len, k, normalize):
    """A transcription of the authors' gen_sample (capgen.py, stochastic=False) and of the choice
    in generate_caps.py for one source: finished hypotheses leave the beam, which narrows to
    k - dead; the winner has the least summed NLL (per token, <eos> counted, with -n)."""
    samples, sample_scores = [], []
    live = [([], 0.0, state)]                             # (tokens, summed NLL, state)
    for _ in range(max_len):
        cands = []
        for tokens, nll, st in live:
            logp, st2, _ = step(torch.tensor([tokens[-1] if tokens else start]), st, memory)
            for w in range(logp.shape[-1]):
                cands.append((nll - float(logp[0, w]), tokens + [w], st2))
        cands.sort(key=lambda c: c[0])
        live = []
        for nll, tokens, st in cands[:k - len(samples)]:
            if tokens[-1] == end:
                samples.append(tokens)
                sample_scores.append(nll)
            else:
                live.append((tokens, nll, st))
        if not live or len(samples) >= k:
            break
    for tokens, nll, _ in live:
        samples.append(tokens)
        sample_scores.append(nll)
    scores = [s / len(t) if normalize else s for s, t in zip(sample_scores, samples)]
    best = min(range(len(scores)), key=scores.__getitem__)
    return [t for t in samples[best] if t != end], -sample_scores[best]


@pytest.mark.parametrize("normalize", [False, True])
def test_shrinking_beam_equals_the_authors_gen_sample(normalize):
    """Random Markov tables, several sources decoded together, against the per-source transcription."""
    torch.manual_seed(0)
    Vn, Bn, K = 7, 12, 3
    tables = torch.log_softmax(torch.randn(Bn, Vn, Vn) * 2, -1)          # (source, previous, next)

    def step(tokens, state, memory):
        return tables[memory, tokens], state, None
    memory = torch.arange(Bn)
    found = search.beam_search(step, torch.zeros(Bn), memory, Bn, 1, 2, 6, K,
                               length_penalty=1.0 if normalize else 0.0, shrink=True)
    differs = 0
    for b in range(Bn):
        tokens, score = _authors_beam(lambda t, s, m: step(t, s, m), torch.zeros(1), torch.tensor([b]),
                                      1, 2, 6, K, normalize)
        assert found[b].tokens == tokens and found[b].score == pytest.approx(score, abs=1e-5)
        [kept] = search.beam_search(step, torch.zeros(1), torch.tensor([b]), 1, 1, 2, 6, K,
                                    length_penalty=1.0 if normalize else 0.0)
        differs += kept.tokens != tokens
    options = DecodeOptions(beam_size=K, length_norm=normalize, shrink_beam=True)
    assert [h.tokens for h in search.decode(step, torch.zeros(Bn), memory, Bn, 1, 2, 6, options)] == \
        [h.tokens for h in found]
    with pytest.raises(OptionError, match="shrink_beam must be True or False"):
        DecodeOptions(shrink_beam="yes")
    assert differs >= 1      # on these tables the two beams part ways somewhere: the test can tell them apart
