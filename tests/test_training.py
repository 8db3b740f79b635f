"""Training the captioner: it learns, keeps the best, resumes, pre-trains the CNN, runs in bf16."""
import torch

from caption import checkpoint
from caption.api import CaptionModel
from caption.config import CaptionConfig, CaptionTrainConfig
from caption.data.images import caption_targets
from caption.data.loader import batches
from caption.data.scenes import scene_set
from caption.image.encoder import Encoder
from caption.search import DecodeOptions
from caption.training.loop import build_captioner as build
from caption.training.loop import last_path
from caption.training.loop import train_captioner as train
from caption.training.losses import caption_nll, penalised
from caption.training.pretrain_scenes import LABELS, object_labels, pretrain_encoder
from caption.vocab import PAD_ID

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
        for _, images, tokens, image_of in batches(data.images, targets, 4, gen):
            out = model(images, tokens[:, :-1], image_of)
            mask = tokens[:, 1:] != PAD_ID
            loss = penalised(caption_nll(out.logits, tokens[:, 1:], mask), out.alpha, mask)[0].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    results = CaptionModel(model, vocab).caption_tensors(data.images, DecodeOptions(beam_size=1))
    assert [r.words for r in results] == [caps[0] for caps in data.captions]


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


def test_pretraining_labels_and_a_short_run_learns_colours():
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
    assert [line.split(":")[0] for line in logs] == ["pretrain epoch 1"] + [f"pretrain epoch {k}" for k in range(1, 9)]
    assert f"label F1 {last['f1']:.3f}, all labels right on {100 * last['exact']:.1f}%" in logs[-1]


def test_bf16_autocast_training_runs_and_keeps_float32_weights(tmp_path):
    train_set, val_set = scene_set(8, "train"), scene_set(2, "val")
    torch.manual_seed(0)
    model, vocab = build(train_set, CaptionConfig(**SMALL), device="cpu")
    before = model.decoder.out.weight.detach().clone()
    cfg = CaptionTrainConfig(epochs=1, batch_size=4, precision="bf16", pretrain_epochs=0)
    history = train(model, vocab, train_set, val_set, cfg, tmp_path / "b.pt", progress=False, log=lambda s: None)
    assert history[0]["loss_per_word"] > 0 and model.decoder.out.weight.dtype == torch.float32
    assert not torch.equal(before, model.decoder.out.weight.cpu())        # trained where the default device is


def test_the_objective_drops_ended_captions_and_gives_the_whole_batchs_loss_and_gradients():
    """objective() orders the captions longest first and the decoder stops the ended ones: the loss
    (NLL and the doubly stochastic penalty), the mean NLL and every gradient are those of the
    whole, unordered batch through the plain formulas."""
    from caption.training.objectives import objective
    model, images, tokens, image_of, mask = _model_and_batch("soft", images=6, per_image=2)
    assert len(set(mask.sum(1).tolist())) > 2 and not (mask.sum(1).diff() <= 0).all()   # mixed, unordered
    results = []
    for ours in (True, False):
        model.zero_grad()
        if ours:
            loss, nll = objective(model, images, tokens, image_of, mask, CaptionTrainConfig(), torch.Generator())
        else:
            out = model(images, tokens[:, :-1], image_of)
            loss, nll = penalised(caption_nll(out.logits, tokens[:, 1:], mask), out.alpha, mask,
                                  model.config.alpha_c)
            loss, nll = loss.mean(), nll.mean()
        loss.backward()
        results.append((loss, nll, _gradients(model)))
    (loss, nll, grads), (ref_loss, ref_nll, ref_grads) = results
    assert torch.allclose(loss, ref_loss, atol=1e-5) and torch.allclose(nll, ref_nll, atol=1e-5)
    assert len(grads) > 20
    _assert_same_gradients(grads, ref_grads)


def test_a_hard_model_keeps_each_captions_expected_flag_and_baselines_when_ordered(monkeypatch):
    """The hard objective with a per-caption expected context and both rewards: ordered with ended
    captions dropped (the LSTM path) against the unordered whole batch (the objective orders only
    for the LSTM decoder: naming another gives the reference). The argmax location is taken, so that
    both draw the same; loss, NLL, gradients and the moving baselines agree."""
    from caption.image.decoder import Decoder
    from caption.training.objectives import objective
    context = Decoder._context
    monkeypatch.setattr(Decoder, "_context", lambda self, h, memory, hard, expected, argmax, generator:
                        context(self, h, memory, hard, expected, True, generator))
    model, images, tokens, image_of, mask = _model_and_batch("hard", images=8, per_image=3)
    dec = model.decoder
    for reward in ("sequence", "to-go"):
        cfg = CaptionTrainConfig(expected_per_example=True, expected_prob=0.5, reward=reward)
        start = dec.baseline.clone(), dec.baseline_to_go.clone()
        results = []
        for name in ("lstm", "reference"):
            monkeypatch.setattr(model.config, "decoder", name)
            dec.baseline.copy_(start[0])
            dec.baseline_to_go.copy_(start[1])
            model.zero_grad()
            loss, nll = objective(model, images, tokens, image_of, mask, cfg, torch.Generator().manual_seed(5))
            loss.backward()
            results.append((loss, nll, _gradients(model), dec.baseline.clone(), dec.baseline_to_go.clone()))
        (loss, nll, grads, b, b_to_go), (ref_loss, ref_nll, ref_grads, ref_b, ref_b_to_go) = results
        assert torch.allclose(loss, ref_loss, atol=1e-5) and torch.allclose(nll, ref_nll, atol=1e-5), reward
        assert torch.allclose(b, ref_b, atol=1e-6) and torch.allclose(b_to_go, ref_b_to_go, atol=1e-6), reward
        _assert_same_gradients(grads, ref_grads)


def _model_and_batch(attention: str, images: int, per_image: int):
    """A small captioner in eval mode (batch norm's running statistics left alone, so that two passes
    see one model) and one batch of scenes: (model, images, tokens, image_of, mask)."""
    data = scene_set(images, "train", 48)
    torch.manual_seed(0)
    model, vocab = build(data, CaptionConfig(**SMALL, image_size=48, attention=attention), device="cpu")
    model.eval()
    targets = caption_targets(data, vocab, model.config.max_len)
    _, x, tokens, image_of = next(batches(data.images, targets, images, torch.Generator().manual_seed(0), per_image))
    return model, x, tokens, image_of, tokens[:, 1:] != PAD_ID


def _gradients(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_gradients(grads: dict, ref_grads: dict) -> None:
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4), name
