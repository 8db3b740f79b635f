import pytest
import torch
import torch.nn.functional as F

from caption import search
from caption.config import CaptionConfig
from caption.image.captioner import Captioner
from caption.image.decoder import Decoder
from caption.image.encoder import Encoder
from caption.search import DecodeOptions

V, D = 13, 16


def tiny(**kw) -> CaptionConfig:
    base = dict(feature_dim=D, embed_dim=8, hidden_dim=12, attn_dim=10, dropout=0.0, max_len=7, image_size=48)
    return CaptionConfig(**{**base, **kw})


@pytest.mark.parametrize("attention", ["soft", "hard", "none"])
def test_decoder_shapes(attention):
    torch.manual_seed(0)
    dec = Decoder(tiny(attention=attention), D, V)
    feats = torch.randn(3, 20, D)                                  # B=3 images, L=20
    tgt = torch.randint(1, V, (5, 6))                              # N=5 captions, T=6
    image_of = torch.tensor([0, 0, 1, 2, 2])
    out = dec(feats, tgt, image_of, hard=attention == "hard")
    assert out.logits.shape == (5, 6, V)
    if attention == "none":
        assert out.alpha is None
    else:
        assert out.alpha.shape == (5, 6, 20)
        assert torch.allclose(out.alpha.sum(-1), torch.ones(5, 6))
    if attention == "hard":
        assert out.log_prob.shape == out.entropy.shape == (5, 6)


def test_step_matches_the_papers_equations_beta_and_deep_output():
    """One step recomputed from the module's weights, equation by equation (Xu et al. 2015)."""
    torch.manual_seed(1)
    dec = Decoder(tiny(), D, V).eval()
    feats, y = torch.randn(2, 9, D), torch.tensor([4, 7])
    memory = dec.memory(feats)
    h0, c0 = dec.init_state(memory)
    mean = feats.mean(1)
    assert torch.allclose(h0, torch.tanh(dec.init_h(mean))) and torch.allclose(c0, torch.tanh(dec.init_c(mean)))
    a = dec.attention
    e = a.v(torch.tanh(a.query_proj(h0)[:, None] + a.key_proj(feats))).squeeze(-1)   # eq. 4
    alpha = torch.softmax(e, -1)                                                       # eq. 5
    beta = torch.sigmoid(dec.beta(h0))                                                 # sec. 4.2.1
    z = beta * (alpha.unsqueeze(-1) * feats).sum(1)                                    # eq. 13
    emb = dec.embed(y)
    h1, c1 = dec.lstm(torch.cat([emb, z], -1), (h0, c0))
    logits = dec.out(torch.tanh(emb + dec.out_h(h1) + dec.out_z(z)))                   # eq. 7
    logp, (h, c), fields = dec.step(y, (h0, c0), memory)
    assert set(fields) == {"alpha"} and torch.allclose(fields["alpha"], alpha, atol=1e-6)
    assert torch.allclose(h, h1, atol=1e-6) and torch.allclose(c, c1, atol=1e-6)
    assert torch.allclose(logp, F.log_softmax(logits, -1), atol=1e-5)
    # the gate matters: forcing beta to 0 removes the context from the LSTM input and the output
    with torch.no_grad():
        dec.beta.weight.zero_()
        dec.beta.bias.fill_(-50.0)
    logp0, _, _ = dec.step(y, (h0, c0), memory)
    h_nz, _ = dec.lstm(torch.cat([emb, torch.zeros_like(z)], -1), (h0, c0))
    assert torch.allclose(logp0, F.log_softmax(dec.out(torch.tanh(emb + dec.out_h(h_nz))), -1), atol=1e-5)


@pytest.mark.parametrize("attention", ["soft", "none"])
def test_teacher_forcing_equals_step_by_step(attention):
    torch.manual_seed(2)
    dec = Decoder(tiny(attention=attention, selector=attention == "soft"), D, V).eval()
    feats, tgt = torch.randn(2, 9, D), torch.randint(1, V, (2, 5))
    out = dec(feats, tgt)
    memory = dec.memory(feats)
    state = dec.init_state(memory)
    for t in range(5):
        logp, state, fields = dec.step(tgt[:, t], state, memory)
        alpha = fields["alpha"]
        assert torch.allclose(logp, F.log_softmax(out.logits[:, t], -1), atol=1e-5)
        if attention == "soft":
            assert torch.allclose(alpha, out.alpha[:, t], atol=1e-6)
        else:   # no attention: the mean annotation, reported as uniform weights
            assert torch.allclose(alpha, torch.full_like(alpha, 1 / 9))


def test_encoder_grid_and_position():
    enc = Encoder(CaptionConfig(feature_dim=D, image_size=112))
    assert enc.grid == (14, 14)
    assert enc(torch.rand(2, 3, 112, 112)).shape == (2, 196, D)
    # a backbone's map is pooled to the paper's 14 x 14 unless --grid says otherwise
    res = Encoder(CaptionConfig(encoder="resnet18", image_size=112))
    assert res.grid == (14, 14) and res.dim == 512
    assert res(torch.rand(1, 3, 112, 112)).shape == (1, 196, 512)
    small = Encoder(CaptionConfig(encoder="resnet18", image_size=112, grid=4))
    x = torch.rand(2, 3, 112, 112)
    feats = small.features(x)
    assert feats.shape == (2, 16, 512)
    # features, then the position embedding: what the feature cache stores, then what the decoder reads
    with torch.no_grad():
        small.position.normal_()
    assert torch.allclose(small(x), feats + small.position, atol=1e-6)
    assert torch.equal(small.annotate(feats), feats + small.position)


def test_torchvision_weights_load_from_a_local_file_and_freeze(tmp_path):
    import torchvision

    from caption.errors import CheckpointError
    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    enc = Encoder(CaptionConfig(encoder="resnet18", encoder_weights=str(tmp_path / "r18.pth")))
    assert torch.equal(enc.trunk[0].weight, ref.conv1.weight)
    assert not any(p.requires_grad for p in enc.trunk.parameters())
    enc.train()
    assert not enc.trunk[1].training          # frozen batch norm keeps its statistics
    tuned = Encoder(CaptionConfig(encoder="resnet18", encoder_weights=str(tmp_path / "r18.pth"), fine_tune=True))
    assert all(p.requires_grad for p in tuned.trunk.parameters())
    (tmp_path / "bad.pth").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="bad.pth"):
        Encoder(CaptionConfig(encoder="resnet18", encoder_weights=str(tmp_path / "bad.pth")))
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth: not resnet18 weights"):
        Encoder(CaptionConfig(encoder="resnet18", encoder_weights=str(tmp_path / "other.pth")))


def _captioner(seed=4):
    torch.manual_seed(seed)
    return Captioner(tiny(), V).eval()


def test_beam_one_equals_greedy_and_batched_beam_equals_per_image():
    model = _captioner()
    images = torch.rand(4, 3, 48, 48)
    greedy = model.generate(images, 1, 2, DecodeOptions(beam_size=1))
    beam1 = search.beam_search(*_parts(model, images), 4, 1, 2, model.config.max_len, beam_size=1)
    for g, b in zip(greedy, beam1):
        assert g.tokens == b.tokens and g.score == pytest.approx(b.score, abs=1e-5)
        assert torch.allclose(g.alpha, b.alpha, atol=1e-6)
    beam3 = DecodeOptions(beam_size=3)
    batched = model.generate(images, 1, 2, beam3)
    for i in range(4):
        [alone] = model.generate(images[i:i + 1], 1, 2, beam3)
        assert alone.tokens == batched[i].tokens
        assert alone.score == pytest.approx(batched[i].score, abs=1e-4)
        assert torch.allclose(alone.alpha, batched[i].alpha, atol=1e-5)
        assert len(alone.tokens) == alone.alpha.shape[0] and alone.location is None


def _parts(model, images):
    memory = model.decoder.memory(model.encoder(images))
    return model.decoder.step, model.decoder.init_state(memory), memory
