"""The authors' COCO switches (issue 13): each against its formula, the default path unchanged,
the recipe that sets them all, and a checkpoint that carries them."""
import pytest
import torch
import torch.nn.functional as F

from caption import checkpoint
from caption.api import load
from caption.attention import Attention
from caption.cli import build_parser
from caption.cli.flags import config_from
from caption.config import RECIPES, CaptionConfig, CaptionTrainConfig
from caption.data.scenes import scene_set
from caption.image.decoder import START_ID, Decoder
from caption.optim import adam_with_linear_decay, optimizer_step
from caption.search import DecodeOptions
from caption.training.loop import build_captioner
from caption.vocab import Vocab

V, D = 13, 16


def tiny(**kw) -> CaptionConfig:
    return CaptionConfig(**{**dict(embed_dim=8, hidden_dim=12, attn_dim=10, dropout=0.0, max_len=7), **kw})


def test_two_layer_attention_keys_are_tanh_of_a_second_layer_and_one_layer_is_unchanged():
    torch.manual_seed(0)
    one, two = Attention(12, D, 10), Attention(12, D, 10, key_layers=2)
    a = torch.randn(3, 5, D)
    assert torch.allclose(one.project_keys(a), one.key_proj(a))
    # capgen: pctx = tanh(W_att_1 (Wc_att a + b_att) + b_att_1): no tanh between the two layers
    expected = torch.tanh((a @ two.key_proj.weight.t() + two.key_proj.bias) @ two.key_proj2.weight.t()
                          + two.key_proj2.bias)
    assert torch.allclose(two.project_keys(a), expected, atol=1e-6)
    assert sum(p.numel() for p in two.parameters()) - sum(p.numel() for p in one.parameters()) == 10 * 10 + 10
    assert "key_proj2.weight" not in one.state_dict()         # old checkpoints still load
    with pytest.raises(ValueError, match="key_layers"):
        Attention(12, 12, score="dot", key_layers=2)


def test_two_layer_init_and_dropout_on_h():
    torch.manual_seed(1)
    dec = Decoder(tiny(init_layers=2, dropout=0.5, dropout_h=True), D, V)
    feats = torch.randn(4, 5, D)
    memory = dec.memory(feats)
    dec.eval()
    h0, c0 = dec.init_state(memory)
    hidden = torch.relu(dec.init_mlp(feats.mean(1)))
    assert torch.allclose(h0, torch.tanh(dec.init_h(hidden))) and torch.allclose(c0, torch.tanh(dec.init_c(hidden)))
    tgt = torch.randint(4, V, (4, 6))
    assert torch.equal(dec(feats, tgt).logits, dec(feats, tgt).logits)     # eval: no dropout anywhere
    dec.train()
    assert not torch.equal(dec.init_state(memory)[0], dec.init_state(memory)[0])
    # dropout on h as well: with the output dropout alone the two models agree given the same draws
    plain = Decoder(tiny(init_layers=2, dropout=0.5), D, V)
    plain.load_state_dict(dec.state_dict())
    plain.train()
    outs = []
    for model in (plain, dec):
        torch.manual_seed(7)
        outs.append(model(feats, tgt).logits)
    assert not torch.allclose(outs[0], outs[1])


def test_zero_first_word_ignores_the_start_embedding_in_training_and_decoding():
    torch.manual_seed(2)
    feats, tgt = torch.randn(2, 5, D), torch.randint(4, V, (2, 5))
    tgt[:, 0] = START_ID
    for start_zero in (False, True):
        dec = Decoder(tiny(start_zero=start_zero), D, V).eval()
        before = dec(feats, tgt).logits
        memory = dec.memory(feats)
        step_before, _, _ = dec.step(torch.full((2,), START_ID), dec.init_state(memory), memory)
        with torch.no_grad():
            dec.embed.weight[START_ID] += 1.0
        after = dec(feats, tgt).logits
        step_after, _, _ = dec.step(torch.full((2,), START_ID), dec.init_state(memory), memory)
        assert torch.equal(before, after) == start_zero
        assert torch.equal(step_before, step_after) == start_zero


def test_teacher_forcing_equals_step_by_step_with_every_switch_on():
    torch.manual_seed(3)
    dec = Decoder(tiny(init_layers=2, attn_layers=2, dropout=0.5, dropout_h=True, start_zero=True), D, V).eval()
    feats, tgt = torch.randn(3, 5, D), torch.randint(4, V, (3, 6))
    tgt[:, 0] = START_ID
    logits = dec(feats, tgt).logits
    memory = dec.memory(feats)
    state = dec.init_state(memory)
    for t in range(6):
        logp, state, _ = dec.step(tgt[:, t], state, memory)
        assert torch.allclose(logp, F.log_softmax(logits[:, t], -1), atol=1e-5)


def test_vocabulary_of_the_most_frequent_words():
    captions = [["a", "b", "c"], ["a", "b"], ["a", "d"], ["e"]]
    assert Vocab.build(captions, max_words=2).itos[4:] == ["a", "b"]
    assert Vocab.build(captions).itos[4:] == ["a", "b", "c", "d", "e"]      # default: every word


def test_clip_zero_leaves_the_gradient_alone():
    torch.manual_seed(4)
    norms = []
    for clip in (0.0, 0.01):
        w = torch.nn.Parameter(torch.ones(3))
        opt, sched = adam_with_linear_decay([w], 2e-4, 2e-4, 10)
        optimizer_step((w * 100).sum(), opt, sched, [w], clip)
        norms.append(float(w.grad.norm()))
    assert norms[0] == pytest.approx(100 * 3 ** 0.5) and norms[1] == pytest.approx(0.01)


def test_recipe_sets_every_switch_and_a_given_flag_wins():
    args = build_parser().parse_args(["train", "--out", "m.pt", "--recipe", "capgen-coco", "--hidden-dim", "64"])
    model, train = config_from(CaptionConfig, args), config_from(CaptionTrainConfig, args)
    recipe = RECIPES["capgen-coco"]
    for cfg in (model, train):
        for name, value in recipe.items():
            if hasattr(cfg, name) and name != "hidden_dim":
                assert getattr(cfg, name) == value, name
    assert model.hidden_dim == 64 and train.clip == 0 and train.lr == train.lr_final == 2e-4
    plain = config_from(CaptionConfig, build_parser().parse_args(["train", "--out", "m.pt"]))
    assert plain == CaptionConfig()                      # without --recipe, the defaults


def test_a_checkpoint_with_the_switches_round_trips(tmp_path):
    torch.manual_seed(5)
    cfg = CaptionConfig(feature_dim=8, embed_dim=8, hidden_dim=16, attn_dim=8, max_len=6, image_size=48,
                        init_layers=2, attn_layers=2, dropout=0.5, dropout_h=True, start_zero=True)
    model, vocab = build_captioner(scene_set(4, "train", 48), cfg, device="cpu", vocab_size=5)
    assert len(vocab) == 4 + 5
    path = tmp_path / "m.pt"
    checkpoint.save(path, "captioner", model, vocab.itos)
    loaded = load(path, "cpu")
    assert loaded.config.init_layers == 2 and loaded.config.start_zero
    images = scene_set(2, "test", 48).images
    model.eval()
    ours = [h.tokens for h in model.generate(images.float() / 255, vocab.start, vocab.end, DecodeOptions())]
    assert [r.words for r in loaded.caption_tensors(images)] == [[vocab.itos[t] for t in h] for h in ours]
