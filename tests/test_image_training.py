import json

import pytest
import torch

from caption import checkpoint
from caption.api import CaptionModel, load
from caption.config import CaptionConfig, CaptionTrainConfig
from caption.imagedata import ImageSet, batches, caption_targets, read_folder, scene_set
from caption.losses import soft_attention_loss
from caption.model import Captioner
from caption.scenes import write_scenes
from caption.train import build, last_path, train
from caption.vocab import Vocab

SMALL = dict(feature_dim=24, embed_dim=16, hidden_dim=48, attn_dim=24, dropout=0.0, max_len=20)  # captions fit


def test_a_tiny_model_overfits_a_few_scenes():
    data = scene_set(4, "train")
    data.captions = [caps[:1] for caps in data.captions]     # one caption each, so it can be learned exactly
    torch.manual_seed(0)
    model, vocab = build(data, CaptionConfig(**SMALL), device="cpu")
    targets = caption_targets(data, vocab, model.config.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        for images, tokens, image_of in batches(data, targets, 4, gen):
            out = model(images, tokens[:, :-1], image_of)
            loss = soft_attention_loss(out.logits, tokens[:, 1:], tokens[:, 1:] != 0, out.alpha)[0].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    results = CaptionModel(model, vocab).caption_tensors(data.images, beam_size=1)
    assert [r.words for r in results] == [caps[0] for caps in data.captions]


def test_batches_bring_all_captions_of_their_images():
    data = scene_set(5, "val")
    vocab = Vocab.build(w for caps in data.captions for w in caps)
    targets = caption_targets(data, vocab, 30)
    seen = 0
    for images, tokens, image_of in batches(data, targets, 2, torch.Generator().manual_seed(0)):
        assert images.dtype == torch.float32 and images.max() <= 1 and images.shape[1:] == (3, 112, 112)
        assert tokens.shape[0] == image_of.shape[0] == 5 * images.shape[0]
        assert (tokens[:, 0] == vocab.start).all() and ((tokens == vocab.end).sum(1) == 1).all()
        assert tokens[:, -1].ne(0).any()          # trimmed to the longest caption
        seen += images.shape[0]
    assert seen == 5


def test_read_folder_skips_and_reports_a_bad_image(tmp_path):
    write_scenes(tmp_path, 3, seed=5)
    (tmp_path / "images" / "000001.png").write_bytes(b"broken")
    messages = []
    data = read_folder(tmp_path, 112, log=messages.append)
    assert len(data) == 2 and len(messages) == 1 and "000001.png" in messages[0]
    assert data.captions[0] and data.objects[0][0]["bbox"]
    ref = scene_set(3, seed=5)
    assert torch.equal(data.images[0], ref.images[0]) and data.captions[1] == ref.captions[2]


def test_train_saves_the_best_and_resumes(tmp_path):
    train_set, val_set = scene_set(16, "train"), scene_set(4, "val")
    torch.manual_seed(0)
    model, vocab = build(train_set, CaptionConfig(**SMALL), device="cpu")
    cfg = CaptionTrainConfig(epochs=1, batch_size=8, train_size=16, val_size=4, pretrain_epochs=1)
    out = tmp_path / "m.pt"
    logs = []
    h1 = train(model, vocab, train_set, val_set, cfg, out, progress=False, log=logs.append)
    assert [r["epoch"] for r in h1] == [1] and out.is_file() and last_path(out).is_file()
    assert {"bleu4", "object_f1", "attention_mass", "attention_chance"} <= set(h1[0])
    payload = torch.load(out, weights_only=True)
    assert payload["kind"] == "captioner" and payload["vocab"] == vocab.itos
    # resume: a fresh model continues at epoch 2 from the saved state
    cfg.epochs = 2
    fresh, _ = build(train_set, CaptionConfig(**SMALL), device="cpu")
    n = len(logs)
    h2 = train(fresh, vocab, train_set, val_set, cfg, out, resume=True, progress=False, log=logs.append)
    assert [r["epoch"] for r in h2] == [1, 2] and logs[n].startswith("resumed")
    assert not any("pretrain" in line for line in logs[n:])      # the resumed encoder is not pre-trained again
    assert checkpoint.load(last_path(out))["meta"]["epoch"] == 2


def test_api_takes_paths_pil_images_tensors_and_lists(model_path, tmp_path):
    model = load(model_path)
    scenes = scene_set(2, "test")
    img = scenes.images[0]
    from PIL import Image
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    pil.save(tmp_path / "a.png")
    big = pil.resize((150, 150))
    r_path, r_pil, r_u8, r_float = (model.caption(x, beam_size=2) for x in
                                    (tmp_path / "a.png", pil, img, img.float() / 255))
    assert r_path.words == r_pil.words == r_u8.words == r_float.words
    assert r_path.text == " ".join(r_path.words)
    assert r_path.attention.shape == (len(r_path.words), 14, 14)
    assert torch.allclose(r_path.attention.sum((1, 2)), torch.ones(len(r_path.words)), atol=1e-5)
    several = model.caption([pil, big, tmp_path / "a.png"], beam_size=2)
    assert len(several) == 3 and several[2].words == r_path.words
    from caption.seq2seq import InputError
    with pytest.raises(InputError, match="missing.png: no such image file"):
        model.caption(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("no image")
    with pytest.raises(InputError, match="bad.png: not a readable image"):
        model.caption(tmp_path / "bad.png")


def test_overlay_has_one_panel_per_word_brightest_at_the_argmax(tmp_path):
    from caption.api import CaptionResult
    from caption.overlay import overlay, overlay_panels
    image = torch.full((3, 112, 112), 120, dtype=torch.uint8)
    att = torch.full((3, 14, 14), 0.1 / 195)
    cells = [(2, 3), (10, 11), (7, 0)]
    for k, (r, c) in enumerate(cells):
        att[k, r, c] = 0.9
    result = CaptionResult("a red star", ["a", "red", "star"], att, 0.0)
    panels = overlay_panels(image, result.words, result.attention)
    assert [t for t, _ in panels] == ["(image)", "a", "red", "star"]
    for (r, c), (_, panel) in zip(cells, panels[1:]):
        lum = torch.frombuffer(bytearray(panel.convert("L").tobytes()), dtype=torch.uint8).view(panel.height, -1)
        y, x = divmod(int(lum.argmax()), panel.width)
        assert (y * 14 // panel.height, x * 14 // panel.width) == (r, c)
    out = overlay(image, result, tmp_path / "fig.png")
    from PIL import Image
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width >= 4 * 168


def test_pretraining_labels_and_a_short_run_learns_colours():
    from caption.encoders import Encoder
    from caption.pretrain import LABELS, object_labels, pretrain_encoder
    objects = [[{"color": "red", "shape": "star", "size": "small", "bbox": [0, 0, 1, 1]},
                {"color": "blue", "shape": "star", "size": "small", "bbox": [5, 5, 1, 1]}]]
    y = object_labels(objects)
    assert y.shape == (1, len(LABELS)) and y.sum() == 4
    assert {LABELS[i] for i in y[0].nonzero().flatten().tolist()} == {"red", "blue", "star", "small"}
    data = scene_set(64, "train")
    torch.manual_seed(0)
    enc = Encoder(CaptionConfig())
    logs = []
    first = pretrain_encoder(enc, data, epochs=1, batch_size=8, lr=5e-3, progress=False, log=logs.append)
    last = pretrain_encoder(enc, data, epochs=8, batch_size=8, lr=5e-3, progress=False, log=logs.append)
    assert len(logs) == 9 and last["f1"] > first["f1"] + 0.1


def test_bf16_autocast_training_runs_and_keeps_float32_weights(tmp_path):
    train_set, val_set = scene_set(8, "train"), scene_set(2, "val")
    torch.manual_seed(0)
    model, vocab = build(train_set, CaptionConfig(**SMALL), device="cpu")
    before = model.decoder.out.weight.detach().clone()
    cfg = CaptionTrainConfig(epochs=1, batch_size=4, bf16=True, pretrain_epochs=0)
    history = train(model, vocab, train_set, val_set, cfg, tmp_path / "b.pt", progress=False, log=lambda s: None)
    assert history[0]["loss_per_word"] > 0 and model.decoder.out.weight.dtype == torch.float32
    assert not torch.equal(before, model.decoder.out.weight)
