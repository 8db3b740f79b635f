import math

import torch

from caption import decoding

PAD, START, END, A, B = range(5)


def make_step(rows):
    """A fixed next-token table (a tiny Markov model), so the answer of any search is known.
    rows: {previous token: {next token: probability}}; unlisted pairs get ~0.
    The extra is a one-hot 'attention' over 3 locations at the step count, to test bookkeeping."""
    probs = torch.full((5, 5), 1e-9)
    for prev, nxt in rows.items():
        for tok, p in nxt.items():
            probs[prev, tok] = p
    probs[END, END] = 1.0
    table = torch.log(probs / probs.sum(1, keepdim=True))

    def step(tokens, state, memory):
        extra = torch.nn.functional.one_hot(state.clamp(max=2), 3).float() * memory[:, :1]
        return table[tokens], state + 1, extra
    return step


# greedy takes A then A forever; the best sequence is B <end> (log 0.4)
TRAP = {START: {A: 0.5, B: 0.4, END: 0.1}, A: {A: 0.35, B: 0.35, END: 0.3}, B: {END: 1.0}}
# raw scores prefer stopping at once (log 0.4); per-token scores prefer A B <end> (log 0.3 / 3)
SHORT = {START: {END: 0.4, A: 0.6}, A: {B: 0.5, END: 0.5}, B: {END: 1.0}}


def run(search, rows=TRAP, batch=1, **kw):
    state = torch.zeros(batch, dtype=torch.long)
    memory = torch.ones(batch, 1)
    return search(make_step(rows), state, memory, batch, START, END, max_len=6, **kw)


def test_greedy_follows_the_most_likely_token():
    [h] = run(decoding.greedy)
    assert h.tokens == [A] * 6                      # never ends: A stays the argmax after A
    assert abs(h.score - (math.log(0.5) + 5 * math.log(0.35))) < 1e-5
    assert h.attention.shape == (6, 3)


def test_beam_finds_the_better_sequence_greedy_misses():
    [h] = run(decoding.beam_search, beam_size=2)
    assert h.tokens == [B]                          # B <end>: log 0.4 beats anything through A
    assert abs(h.score - math.log(0.4)) < 1e-5
    assert h.attention.shape == (1, 3)
    assert torch.equal(h.attention[0], torch.tensor([1.0, 0.0, 0.0]))


def test_length_normalisation_changes_the_choice():
    [raw] = run(decoding.beam_search, SHORT, beam_size=3, length_penalty=0)
    assert raw.tokens == [] and abs(raw.score - math.log(0.4)) < 1e-5
    [norm] = run(decoding.beam_search, SHORT, beam_size=3, length_penalty=1.0)
    assert norm.tokens == [A, B] and abs(norm.score - math.log(0.6 * 0.5)) < 1e-5


def test_beam_k1_equals_greedy_and_batched_equals_single():
    torch.manual_seed(0)
    V, H = 7, 8
    emb, cell, out = torch.nn.Embedding(V, H), torch.nn.GRUCell(H, H), torch.nn.Linear(2 * H, V)

    def step(tokens, state, memory):                # a random recurrent model with attention
        h = cell(emb(tokens), state)
        alpha = torch.softmax(torch.einsum("bh,bsh->bs", h, memory), -1)
        ctx = torch.einsum("bs,bsh->bh", alpha, memory)
        return torch.log_softmax(out(torch.cat([h, ctx], -1)), -1), h, alpha

    Bn = 5
    state, memory = torch.randn(Bn, H), torch.randn(Bn, 4, H)
    greedy = decoding.greedy(step, state, memory, Bn, 1, 2, max_len=8)
    beam1 = decoding.beam_search(step, state, memory, Bn, 1, 2, max_len=8, beam_size=1)
    for g, b in zip(greedy, beam1):
        assert g.tokens == b.tokens
        assert abs(g.score - b.score) < 1e-4
        torch.testing.assert_close(g.attention, b.attention)
    batched = decoding.beam_search(step, state, memory, Bn, 1, 2, max_len=8, beam_size=4)
    for i in range(Bn):
        [single] = decoding.beam_search(step, state[i:i + 1], memory[i:i + 1], 1, 1, 2, max_len=8, beam_size=4)
        assert single.tokens == batched[i].tokens
        assert abs(single.score - batched[i].score) < 1e-4
        torch.testing.assert_close(single.attention, batched[i].attention)
    # beam search never returns a worse sequence score than greedy (unnormalised search)
    wide = decoding.beam_search(step, state, memory, Bn, 1, 2, max_len=8, beam_size=4, length_penalty=0)
    assert all(w.score >= g.score - 1e-5 for w, g in zip(wide, greedy))


def test_tree_map_handles_nested_state():
    state = {"h": torch.zeros(2, 3), "pair": (torch.ones(2), [torch.arange(2)])}
    out = decoding.tree_map(lambda x: x.repeat_interleave(2, 0), state)
    assert out["h"].shape == (4, 3) and out["pair"][1][0].tolist() == [0, 0, 1, 1]
