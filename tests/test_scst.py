"""Self-critical training's pieces: CIDEr-D with cached document frequencies against pycocoevalcap,
and the SCST gradient against the exact one of an enumerable policy."""
import itertools
import json
import math

import pytest
import torch
from pycocoevalcap.cider.cider_scorer import CiderScorer

from caption.metrics.cider import CiderD, DocumentFrequencies, fingerprint
from caption.training.scst import mean_baseline, scst_surrogate

REFS = {1: ["a red ball on the left of a blue cube", "a ball beside a cube", "the red ball is left of the cube"],
        2: ["two green triangles", "a pair of green triangles above a square", "green triangles"],
        3: ["a small yellow star", "one star that is yellow", "a yellow star in the corner"],
        4: ["a cube", "a blue cube", "one blue cube below a ball"]}
CANDIDATES = {1: "a red ball left of a cube", 2: "green triangles above a square", 3: "a yellow ball",
              4: "a blue cube below a ball a ball"}


def tokens(refs):
    return {k: [r.split() for r in v] for k, v in refs.items()}


def test_cider_d_with_cached_frequencies_equals_pycocoevalcap():
    scorer = CiderScorer(n=4, sigma=6.0)
    for k in REFS:
        scorer += (CANDIDATES[k], REFS[k])
    mean, per_image = scorer.compute_score()
    df = DocumentFrequencies.from_state(DocumentFrequencies.count(tokens(REFS)).to_state())  # through the cache
    ours = CiderD(df)
    got = [ours.score(CANDIDATES[k].split(), tokens(REFS)[k], key=k) for k in REFS]
    assert got == [float(x) for x in per_image]                # bit for bit
    assert [ours.score(CANDIDATES[k].split(), None, key=k) for k in REFS] == got     # the kept vectors
    assert ours.score(REFS[2][0].split(), tokens(REFS)[2]) > ours.score("a yellow star".split(), tokens(REFS)[2])
    assert ours.score([], tokens(REFS)[1]) == 0.0


def test_cider_d_equals_pycocoevalcap_bit_for_bit_on_random_captions():
    import random
    rng = random.Random(4)
    words = "a the red blue ball cube left of on two small star".split()
    say = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(1, 16)))     # noqa: E731
    refs = {k: [say() for _ in range(rng.randint(1, 5))] for k in range(40)}
    cands = {k: say() for k in refs}
    scorer = CiderScorer(n=4, sigma=6.0)
    for k in refs:
        scorer += (cands[k], refs[k])
    _, per_image = scorer.compute_score()
    ours = CiderD(DocumentFrequencies.count(tokens(refs)))
    assert [ours.score(cands[k].split(), tokens(refs)[k]) for k in refs] == [float(x) for x in per_image]


def test_a_cache_from_other_references_is_refused():
    df = DocumentFrequencies.count(tokens(REFS))
    df.check(tokens(REFS), "run.pt")
    other = dict(tokens(REFS))
    other[4] = [["a", "cube"]]
    with pytest.raises(ValueError, match=r"run.pt: the CIDEr-D document frequencies were counted from other"):
        df.check(other, "run.pt")
    assert fingerprint({k: [[w.upper() for w in r] for r in v] for k, v in tokens(REFS).items()}) != df.source


def policy_logp(theta, seq):
    """A two-step policy: p(w1) = softmax(theta[0]), p(w2 | w1) = softmax(theta[1 + w1])."""
    return torch.log_softmax(theta[0], -1)[seq[0]] + torch.log_softmax(theta[1 + seq[0]], -1)[seq[1]]


def test_the_scst_gradient_is_the_exact_gradient_of_the_expected_reward():
    """Enumerate every pair of samples (K = 2, the mean baseline: each the other's reward): the
    expected surrogate gradient equals -grad E[r], computed by enumeration."""
    torch.manual_seed(0)
    V = 3
    theta = torch.randn(1 + V, V, requires_grad=True)
    reward = torch.randn(V, V)
    seqs = list(itertools.product(range(V), repeat=2))
    expected = sum(policy_logp(theta, s).exp() * reward[s] for s in seqs)
    exact = torch.autograd.grad(expected, theta)[0]
    estimate = torch.zeros_like(theta)
    for a, b in itertools.product(seqs, repeat=2):
        logp = torch.stack([policy_logp(theta, a), policy_logp(theta, b)])
        r = torch.stack([reward[a], reward[b]])
        loss = scst_surrogate(logp.unsqueeze(1), torch.ones(2, 1, dtype=torch.bool), r, mean_baseline(r, 2)).mean()
        weight = math.exp(float(logp.sum().detach()))                    # p(a) p(b)
        estimate += weight * torch.autograd.grad(loss, theta)[0]
    torch.testing.assert_close(-estimate, exact, atol=1e-6, rtol=1e-5)   # the mean over K: each sample's share


def test_a_baseline_equal_to_the_reward_gives_no_gradient_and_hard_locations_share_the_advantage():
    logp = torch.randn(4, 5, requires_grad=True)
    where = torch.randn(4, 5, requires_grad=True)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2, 3:] = False
    r = torch.tensor([1.0, 0.5, 2.0, 0.0])
    loss = scst_surrogate(logp, mask, r, r.clone(), where).mean()
    g, gw = torch.autograd.grad(loss, [logp, where])
    assert g.eq(0).all() and gw.eq(0).all()
    b = torch.tensor([0.0, 1.0, 1.0, 0.0])
    g, gw = torch.autograd.grad(scst_surrogate(logp, mask, r, b, where).sum(), [logp, where])
    torch.testing.assert_close(g, -(r - b).unsqueeze(1) * mask)
    torch.testing.assert_close(gw, g)
    torch.testing.assert_close(mean_baseline(torch.tensor([1.0, 2.0, 6.0, 0.0, 2.0, 4.0]), 3),
                               torch.tensor([4.0, 3.5, 1.5, 3.0, 2.0, 1.0]))


def shipped(name):
    from caption import checkpoint
    from caption.checkpoint import default_checkpoint
    from caption.decoding import CaptionModel
    return CaptionModel.from_checkpoint(checkpoint.load(default_checkpoint(name), kind="captioner"), device="cpu")


@pytest.mark.parametrize("name", ["scenes-soft.pt", "scenes-transformer.pt", "scenes-hard.pt"])
def test_sampled_captions_carry_the_log_probabilities_of_the_model(name):
    """The sampler's log p(w) of each sampled caption equals the teacher-forced model's on the same
    words (a hard model: given the same locations is not checkable, so its words' share is checked
    in expected mode and its locations' log alpha are finite, negative and masked)."""
    from caption.data.scenes import scene_set
    from caption.image.sampling import sample_captions
    cm = shipped(name)
    model, vocab = cm.model.eval(), cm.vocab
    images = scene_set(2, image_size=model.config.image_size, seed=3).images.float() / 255
    hard = model.config.attention == "hard"
    memory = model.decoder.memory(model.annotations(images))
    s = sample_captions(model.decoder, memory, 3, vocab.start, vocab.end, hard=hard,
                        generator=torch.Generator().manual_seed(0))
    N, T = s.tokens.shape
    assert N == 6 and s.mask[:, 0].all() and (s.tokens[~s.mask] == vocab.pad).all()
    ended = (s.tokens == vocab.end).any(1)
    assert (s.lengths[ended] == (s.tokens == vocab.end).float().argmax(1)[ended] + 1).all()
    (s.log_prob.sum() + (s.location_log_prob.sum() if hard else 0)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    if hard:
        assert (s.location_log_prob[s.mask] <= 0).all() and (s.location_log_prob[~s.mask] == 0).all()
        return
    tgt_in = torch.cat([torch.full((N, 1), vocab.start), s.tokens[:, :-1]], 1)
    with torch.no_grad():
        out = model(images, tgt_in, torch.arange(2).repeat_interleave(3))
    forced = torch.log_softmax(out.logits.float(), -1).gather(2, s.tokens.unsqueeze(2)).squeeze(2) * s.mask
    torch.testing.assert_close(s.log_prob.detach(), forced, atol=1e-4, rtol=1e-4)


from caption import checkpoint as ckpt  # noqa: E402
from caption.cli import main  # noqa: E402

SCENES = ["--dataset", "scenes", "--train-size", "16", "--val-size", "4", "--batch-size", "8", "--quiet",
          "--log-every", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def initial(tmp_path_factory):
    """A small cross-entropy model to start from (soft), and a hard and a Transformer one."""
    root = tmp_path_factory.mktemp("xe")
    small = ["--image-size", "48", "--feature-dim", "8", "--pretrain-epochs", "0", "--dropout", "0", "--epochs", "1"]
    models = {"soft": ["--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8"],
              "hard": ["--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8", "--attention", "hard"],
              "transformer": ["--decoder", "transformer", "--layers", "1", "--heads", "2", "--model-dim", "16",
                              "--ff-dim", "32"]}
    for name, flags in models.items():
        assert main(["train", *SCENES, *small, *flags, "--out", str(root / f"{name}.pt")]) == 0
    return root


def _scst(out, init, *extra):
    return main(["train", *SCENES, "--objective", "scst", "--init", str(init), "--lr", "1e-3", "--lr-final", "1e-3",
                 "--out", str(out), *extra])


@pytest.mark.parametrize("name, baseline", [("soft", "greedy"), ("hard", "mean"), ("transformer", "greedy")])
def test_scst_trains_each_model_and_logs_reward_baseline_and_length(initial, tmp_path, name, baseline):
    out = tmp_path / "s.pt"
    assert _scst(out, initial / f"{name}.pt", "--epochs", "1", "--scst-baseline", baseline,
                 "--samples-per-image", "2") == 0
    lines = [json.loads(x) for x in (tmp_path / "s.history.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert len(steps) == 2 and all({"reward", "baseline", "length"} <= set(x) for x in steps)
    epoch = [x for x in lines if x["kind"] == "epoch"][0]
    assert "reward" in epoch and "cider_d" in epoch
    before = ckpt.load(initial / f"{name}.pt")["state_dict"]
    after = ckpt.load(out)["state_dict"]
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "s.cider.pt").is_file()


def test_scst_resumes_bit_for_bit_and_refuses_a_cache_of_other_references(initial, tmp_path, monkeypatch):
    straight, parted = tmp_path / "a.pt", tmp_path / "b.pt"
    assert _scst(straight, initial / "soft.pt", "--epochs", "2") == 0
    assert _scst(parted, initial / "soft.pt", "--epochs", "1") == 0
    torch.manual_seed(99)
    assert _scst(parted, initial / "soft.pt", "--epochs", "2", "--resume") == 0
    a, b = ckpt.load(tmp_path / "a.last.pt")["state_dict"], ckpt.load(tmp_path / "b.last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    from caption.training.reward import save_frequencies
    save_frequencies(tmp_path / "b.cider.pt", DocumentFrequencies.count(tokens(REFS)))
    assert _scst(parted, initial / "soft.pt", "--epochs", "3", "--resume") == 1


def test_scst_refuses_model_flags_and_needs_init(initial, tmp_path, capsys):
    assert main(["train", *SCENES, "--objective", "scst", "--out", str(tmp_path / "x.pt")]) == 1
    assert "--init" in capsys.readouterr().err
    assert _scst(tmp_path / "x.pt", initial / "soft.pt", "--hidden-dim", "32") == 1
    assert "--hidden-dim does not apply" in capsys.readouterr().err
    assert _scst(tmp_path / "x.pt", initial / "soft.pt", "--scst-baseline", "mean", "--samples-per-image", "1") == 1
