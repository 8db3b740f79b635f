"""Multi-head attention (caption/attention.py) and the Transformer captioner (caption/image/transformer.py):
the maths against hand-computed answers, the masks, the cache against recomputing, decoding against
teacher forcing, and a checkpoint round trip."""
import math

import pytest
import torch

from caption import checkpoint
from caption.attention import MultiHeadAttention, causal_mask
from caption.config import CaptionConfig, check
from caption.data.scenes import scene_set
from caption.decoding import CaptionModel
from caption.errors import OptionError
from caption.image.captioner import Captioner
from caption.search import DecodeOptions
from caption.training.loop import build_captioner

SMALL = dict(feature_dim=8, image_size=48, decoder="transformer", layers=2, heads=2, model_dim=16, ff_dim=32,
             dropout=0.0)


def identity_attention(dim: int, heads: int) -> MultiHeadAttention:
    att = MultiHeadAttention(dim, heads)
    with torch.no_grad():
        for proj in (att.query_proj, att.key_proj, att.value_proj, att.out_proj):
            proj.weight.copy_(torch.eye(dim))
            if proj.bias is not None:
                proj.bias.zero_()
    return att


def test_scaled_dot_product_against_a_hand_computed_answer():
    att = identity_attention(2, 1)
    q = torch.tensor([[[1.0, 0.0]]])                                  # (1, 1, 2)
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])                    # (1, 2, 2)
    values = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]])
    k, _ = att.project(keys)
    _, v = att.project(values)
    out = att(q, k, v)
    # scores q.k / sqrt(2) = (0.7071, 0); softmax = (e^0.7071, 1) / (e^0.7071 + 1)
    a = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)
    assert torch.allclose(out.alpha.view(2), torch.tensor([a, 1 - a]))
    assert torch.allclose(out.context.view(2), torch.tensor([2 * a, 4 * (1 - a)]))


def test_two_heads_read_their_own_halves_with_their_own_scale():
    att = identity_attention(4, 2)                  # head 1: dims 0-1, head 2: dims 2-3, each scaled by sqrt(2)
    q = torch.tensor([[[1.0, 0.0, 0.0, 3.0]]])
    src = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]])
    out = att(q, *att.project(src))
    e1 = torch.tensor([1.0, 0.0]) / math.sqrt(2)
    e2 = torch.tensor([0.0, 3.0]) / math.sqrt(2)
    assert torch.allclose(out.alpha[0, :, 0], torch.stack([e1.softmax(0), e2.softmax(0)]))
    expected = torch.cat([e1.softmax(0) @ src[0, :, :2], e2.softmax(0) @ src[0, :, 2:]])
    assert torch.allclose(out.context.view(4), expected)


def test_every_heads_map_sums_to_one_and_padding_gets_zero():
    torch.manual_seed(0)
    att = MultiHeadAttention(12, 3, key_dim=5)
    q, src = torch.randn(2, 4, 12), torch.randn(2, 6, 5)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    out = att(q, *att.project(src), mask[:, None, None])
    assert out.alpha.shape == (2, 3, 4, 6)
    assert torch.allclose(out.alpha.sum(-1), torch.ones(2, 3, 4))
    assert (out.alpha[1, :, :, 3:] == 0).all()
    nothing = att(q, *att.project(src), torch.zeros(2, 1, 1, 6, dtype=torch.bool))
    assert (nothing.alpha == 0).all() and not nothing.context.isnan().any()


def test_the_causal_mask_lets_a_word_read_itself_and_the_words_before():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def model_and_feats(seed: int = 0, vocab: int = 11, **overrides):
    torch.manual_seed(seed)
    model = Captioner(CaptionConfig(**{**SMALL, **overrides}), vocab).eval()
    feats = torch.randn(3, model.grid[0] * model.grid[1], model.encoder.dim)
    return model, feats


def test_a_future_word_never_changes_an_earlier_output():
    model, feats = model_and_feats()
    tokens = torch.randint(4, 11, (3, 9))
    tokens[:, 0] = 1
    changed = tokens.clone()
    changed[:, 5:] = torch.randint(4, 11, (3, 4))
    with torch.no_grad():
        a, b = model.decoder(feats, tokens), model.decoder(feats, changed)
    assert torch.allclose(a.logits[:, :5], b.logits[:, :5], atol=1e-6)
    assert torch.allclose(a.heads[..., :5, :], b.heads[..., :5, :], atol=1e-6)
    assert not torch.allclose(a.logits[:, 5:], b.logits[:, 5:])


def test_decoding_with_the_cache_equals_recomputing_every_step():
    model, feats = model_and_feats()
    tokens = torch.randint(4, 11, (3, 7))
    tokens[:, 0] = 1
    dec = model.decoder
    with torch.no_grad():
        full = dec(feats, tokens)
        memory = dec.memory(feats)
        state = dec.init_state(memory)
        for t in range(tokens.shape[1]):
            logp, state, fields = dec.step(tokens[:, t], state, memory)
            assert torch.allclose(logp, full.logits[:, t].log_softmax(-1), atol=1e-5)
            assert torch.allclose(fields["alpha"], full.alpha[:, t], atol=1e-6)
            assert torch.allclose(fields["heads"], full.heads[:, :, :, t], atol=1e-6)
        assert state["cache"][0][0].shape == (3, 2, 7, 8)          # (N, h, T, d): one position per step


def test_k_beams_reading_one_memory_row_equal_k_rows_of_their_own():
    model, feats = model_and_feats(seed=5)
    dec, K = model.decoder, 3
    tokens = torch.randint(4, 11, (3 * K, 4))                       # 3 images x K beams, image-major rows
    tokens[:, 0] = 1
    with torch.no_grad():
        shared = dec.memory(feats)                                  # 3 rows, each read by its K beams
        own = {k: [tuple(x.repeat_interleave(K, 0) for x in kv) for kv in v] if k == "kv" else v.repeat_interleave(K, 0)
               for k, v in shared.items()}                          # 3 K rows, each beam its own copy
        a, b = dec.init_state(own), dec.init_state(own)
        for t in range(tokens.shape[1]):
            la, a, fa = dec.step(tokens[:, t], a, shared)
            lb, b, fb = dec.step(tokens[:, t], b, own)
            assert torch.allclose(la, lb, atol=1e-6) and torch.allclose(fa["heads"], fb["heads"], atol=1e-6)


def test_new_words_after_a_cache_read_it_and_each_other_causally():
    from caption.transformer import DecoderLayer
    torch.manual_seed(6)
    layer = DecoderLayer(16, 2, 32, 0.0).eval()
    x, src = torch.randn(2, 6, 16), layer.cross_attn.project(torch.randn(2, 5, 16))
    with torch.no_grad():
        whole, alpha, _ = layer(x, src)
        first, _, cache = layer(x[:, :3], src)
        rest, rest_alpha, _ = layer(x[:, 3:], src, cache)           # three new words at once, after three cached
    assert torch.allclose(torch.cat([first, rest], 1), whole, atol=1e-5)
    assert torch.allclose(rest_alpha, alpha[:, :, 3:], atol=1e-6)


def test_the_mean_head_is_the_documented_alpha_and_every_head_sums_to_one():
    model, feats = model_and_feats()
    tokens = torch.tensor([[1, 5, 6, 7]] * 3)
    with torch.no_grad():
        out = model.decoder(feats, tokens)
    assert out.heads.shape == (3, 2, 2, 4, feats.shape[1])          # (N, Y, h, T, L)
    assert torch.allclose(out.heads.sum(-1), torch.ones(3, 2, 2, 4))
    assert torch.equal(out.alpha, out.heads[:, -1].mean(1))


def test_greedy_decoding_is_the_argmax_of_teacher_forcing_on_its_own_output():
    model, feats = model_and_feats(seed=3)
    start, end = 1, 2
    with torch.no_grad():
        found = model.generate(feats, start, end, DecodeOptions(beam_size=1), features=True)
        for b, h in enumerate(found):
            tokens = torch.tensor([[start] + h.tokens])
            logits = model.decoder(model.annotations(feats[b:b + 1], features=True), tokens).logits[0]
            wanted = h.tokens + ([end] if len(h.tokens) < model.config.max_len else [])
            assert logits.argmax(-1)[:len(wanted)].tolist() == wanted
            assert h.heads.shape == (len(h.tokens), 2, 2, feats.shape[1])


def test_beam_search_over_a_batch_equals_each_image_alone():
    model, feats = model_and_feats(seed=4)
    options = DecodeOptions(beam_size=3)
    with torch.no_grad():
        together = model.generate(feats, 1, 2, options, features=True)
        alone = [model.generate(feats[b:b + 1], 1, 2, options, features=True)[0] for b in range(3)]
    for a, b in zip(together, alone):
        assert a.tokens == b.tokens and a.score == pytest.approx(b.score, abs=1e-5)
        assert torch.allclose(a.heads, b.heads, atol=1e-6)


def test_a_checkpoint_round_trip_gives_the_same_captions_and_maps(tmp_path):
    data = scene_set(4, "train", 48)
    model, vocab = build_captioner(data, CaptionConfig(**SMALL), device="cpu")
    checkpoint.save(tmp_path / "t.pt", "captioner", model, vocab.itos)
    loaded = CaptionModel.from_checkpoint(checkpoint.load(tmp_path / "t.pt"), "cpu")
    assert loaded.config.decoder == "transformer" and loaded.config.heads == 2
    images = torch.stack([torch.as_tensor(im) for im in data.images[:2]])
    before = CaptionModel(model, vocab).caption_tensors(images, DecodeOptions(beam_size=2))
    after = loaded.caption_tensors(images, DecodeOptions(beam_size=2))
    for a, b in zip(before, after):
        assert a.words == b.words and torch.equal(a.heads, b.heads)
        assert a.heads.shape == (2, 2, len(a.words), *model.grid)    # (Y, h, T, gh, gw)
        assert torch.allclose(a.attention, a.heads[-1].mean(0))


def test_the_transformer_is_soft_its_heads_divide_its_size_and_no_field_of_the_other_family_is_set():
    with pytest.raises(OptionError, match="attention"):
        check(CaptionConfig(decoder="transformer", attention="hard"))
    with pytest.raises(OptionError, match="heads 3 does not divide"):
        check(CaptionConfig(decoder="transformer", heads=3, model_dim=128))
    with pytest.raises(OptionError, match="hidden_dim applies to --decoder lstm, not to --decoder transformer"):
        check(CaptionConfig(decoder="transformer", hidden_dim=100))
    with pytest.raises(OptionError, match="heads applies to --decoder transformer"):
        check(CaptionConfig(heads=8))
    check(CaptionConfig(decoder="transformer"))
    check(CaptionConfig(decoder="transformer", heads=8, model_dim=64))


# --- the text path: caption seq2seq train --model transformer ------------------------------------

TEXT = dict(model="transformer", num_layers=2, heads=2, model_dim=16, ff_dim=32, max_source_len=9, max_target_len=6)


def text_model(seed: int = 0, **overrides):
    from caption.config import Seq2SeqConfig
    from caption.text.transformer import build_seq2seq
    torch.manual_seed(seed)
    return build_seq2seq(Seq2SeqConfig(**{**TEXT, **overrides}), 12).eval()


def test_text_source_padding_gets_no_weight_and_a_future_character_changes_nothing_before_it():
    model = text_model()
    src = torch.randint(4, 12, (2, 7))
    src_len = torch.tensor([7, 4])
    tgt = torch.randint(4, 12, (2, 5))
    tgt[:, 0] = 1
    with torch.no_grad():
        logits, alpha = model(src, src_len, tgt)
        changed = tgt.clone()
        changed[:, 3:] = (changed[:, 3:] + 1) % 12
        later, _ = model(src, src_len, changed)
        padded = src.clone()
        padded[1, 4:] = 0                             # the pads past src_len change nothing either
        same, _ = model(padded, src_len, tgt)
    assert torch.allclose(alpha.sum(-1), torch.ones(2, 5)) and (alpha[1, :, 4:] == 0).all()
    assert torch.allclose(logits[:, :3], later[:, :3], atol=1e-6)
    assert not torch.allclose(logits[:, 3:], later[:, 3:])
    assert torch.allclose(logits, same, atol=1e-6)


def test_text_decoding_with_the_cache_equals_teacher_forcing_and_greedy_its_argmax():
    model = text_model(seed=1)
    src, src_len = torch.randint(4, 12, (3, 6)), torch.tensor([6, 6, 6])
    with torch.no_grad():
        found = model.generate(src, src_len, 1, 2)
        for b, h in enumerate(found):
            tokens = torch.tensor([[1] + h.tokens])
            logits, alpha = model(src[b:b + 1], src_len[b:b + 1], tokens)
            wanted = h.tokens + ([2] if len(h.tokens) < model.config.max_target_len else [])
            assert logits[0].argmax(-1)[:len(wanted)].tolist() == wanted
            assert torch.allclose(h.alpha, alpha[0, :len(h.tokens)], atol=1e-6)
            assert h.heads.shape == (len(h.tokens), 2, 2, 6)


def test_text_beam_search_over_sources_of_different_lengths_equals_each_alone():
    model = text_model(seed=3)
    src, src_len = torch.randint(4, 12, (3, 6)), torch.tensor([6, 3, 4])
    src[1, 3:], src[2, 4:] = 0, 0
    options = DecodeOptions(beam_size=3)
    with torch.no_grad():
        together = model.generate(src, src_len, 1, 2, options)
        alone = [model.generate(src[b:b + 1, :int(src_len[b])], src_len[b:b + 1], 1, 2, options)[0] for b in range(3)]
    for a, b in zip(together, alone):
        assert a.tokens == b.tokens and a.score == pytest.approx(b.score, abs=1e-5)
        assert torch.allclose(a.alpha[:, :b.alpha.shape[1]], b.alpha, atol=1e-6)


def test_a_text_transformer_checkpoint_translates_as_before(tmp_path):
    from caption.config import Seq2SeqConfig
    from caption.text.translator import Translator
    from caption.vocab import Vocab
    vocab = Vocab.build(list("abc-0123"), 1)
    torch.manual_seed(2)
    model = type(text_model())(Seq2SeqConfig(**{**TEXT, "max_target_len": 5}), len(vocab)).eval()
    checkpoint.save(tmp_path / "s.pt", "seq2seq", model, vocab.itos)
    loaded = Translator.from_checkpoint(checkpoint.load(tmp_path / "s.pt", kind="seq2seq"))
    assert type(loaded.model).__name__ == "TransformerSeq2Seq"
    assert loaded.translate(["abc", "cab-1"]) == Translator(model, vocab).translate(["abc", "cab-1"])
    with pytest.raises(OptionError, match="local"):
        check(Seq2SeqConfig(model="transformer", local="local-m"))


def test_the_best_head_is_the_one_that_looks_in_the_named_box():
    from caption.decoding import CaptionResult
    from caption.metrics.evaluate import best_head
    data = scene_set(20, "test", 112)
    i = next(k for k, o in enumerate(data.objects) if len(o) == 1)
    words = data.captions[i][1]                                # "a large cyan circle": colour and shape named
    x, y, w, h = data.objects[i][0]["bbox"]
    gh = gw = 14
    cell = ((y + h // 2) * gh // 112, (x + w // 2) * gw // 112)    # the cell under the box's centre
    heads = torch.full((2, 2, len(words), gh, gw), 1 / (gh * gw))     # (Y, h, T, gh, gw): uniform ...
    heads[1, 0] = 0
    heads[1, 0, :, cell[0], cell[1]] = 1.0                             # ... but layer 2, head 1
    result = CaptionResult(" ".join(words), words, heads[-1].mean(0), 0.0, heads=heads)
    got = best_head([result], data.take([i]))
    assert (got["attention_best_head_layer"], got["attention_best_head"]) == (2, 1)
    assert got["attention_best_head_mass"] == pytest.approx(1.0)      # the cell lies inside the 37-pixel box


def test_visualize_heads_draws_a_row_per_layer_and_head_and_refuses_an_lstm(tmp_path, capsys):
    from PIL import Image

    from caption.cli import main
    from caption.viz.overlay import PANEL, TITLE
    data = scene_set(4, "train", 48)
    model, vocab = build_captioner(data, CaptionConfig(**SMALL, max_len=5), device="cpu")
    checkpoint.save(tmp_path / "t.pt", "captioner", model, vocab.itos)
    Image.fromarray(data.images[0].permute(1, 2, 0).numpy()).save(tmp_path / "scene.png")
    out = tmp_path / "heads.png"
    assert main(["visualize", str(tmp_path / "scene.png"), "--model", str(tmp_path / "t.pt"), "--heads",
                 "--out", str(out)]) == 0
    words = capsys.readouterr().out.splitlines()[0].split()
    width, height = Image.open(out).size
    rows, columns = 1 + 2 * 2, len(words) + 1                 # the mean row, then Y * h rows; the image, then words
    assert (width, height) == (columns * (PANEL + 6) + 6, TITLE + 6 + rows * (PANEL + TITLE + 6) + 6)
    assert main(["visualize", str(tmp_path / "scene.png"), "--heads", "--out", str(tmp_path / "lstm.png")]) == 1
    assert "--heads" in capsys.readouterr().err and not (tmp_path / "lstm.png").exists()


def test_a_transformer_trains_on_cached_features_and_decodes_in_bf16(tmp_path):
    from caption.config import CaptionTrainConfig
    from caption.data.loader import batches_of
    from caption.training.loop import train
    manifest = {"encoder": "resnet18", "encoder_weights": None, "image_size": 48, "grid": [2, 2], "sha256": None}
    features = {"train": torch.randn(12, 4, 512), "val": torch.randn(4, 4, 512)}
    cfg = CaptionTrainConfig(train_size=12, val_size=4, epochs=1, batch_size=4, pretrain_epochs=0, log_every=0,
                             precision="bf16")
    train(CaptionConfig(**SMALL), cfg, scene_set(12, "train", 48), scene_set(4, "val", 48), tmp_path / "f.pt",
          features=features, manifest=manifest, progress=False, log=lambda s: None)
    payload = checkpoint.load(tmp_path / "f.pt")
    assert (payload["config"]["decoder"], payload["config"]["encoder"]) == ("transformer", "resnet18")
    model = CaptionModel.from_checkpoint(payload, "cpu", precision="bf16")
    found = model.caption_batches(batches_of(features["val"], torch.arange(4), 4), DecodeOptions(beam_size=2),
                                  features=True)
    for r in found:
        assert r.heads.dtype == torch.float32 and r.heads.shape[:3] == (2, 2, len(r.words))
        assert torch.allclose(r.heads.sum((-1, -2)), torch.ones(2, 2, len(r.words)), atol=2e-2)   # bf16 maps
