"""The training run's setup: every check once, the model config completed as `caption train`
completes it, and `loop.train` from two configs doing what the command does."""
import pytest
import torch
from layouts import write_coco

from caption import checkpoint
from caption.cli import main
from caption.config import CaptionConfig, CaptionTrainConfig
from caption.data.scenes import scene_set
from caption.errors import InputError
from caption.training import setup
from caption.training.loop import train

FLAGS = dict(feature_dim=8, embed_dim=8, hidden_dim=16, attn_dim=8, image_size=48)
TRAIN = dict(train_size=12, val_size=4, epochs=2, batch_size=4, pretrain_epochs=1, seed=3, log_every=0)


def as_flags(fields: dict) -> list[str]:
    return [x for k, v in fields.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def test_train_from_two_configs_is_caption_train(tmp_path, capsys):
    assert main(["train", *as_flags(FLAGS), *as_flags(TRAIN), "--quiet", "--out", str(tmp_path / "cli.pt")]) == 0
    lines = []
    history = train(CaptionConfig(**FLAGS), CaptionTrainConfig(**TRAIN), scene_set(12, "train", 48),
                    scene_set(4, "val", 48), tmp_path / "api.pt", progress=False, log=lines.append)
    for name in ("{}.pt", "{}.last.pt"):          # the best model and the state after the last epoch
        cli, api = (checkpoint.load(tmp_path / name.format(run)) for run in ("cli", "api"))
        assert cli["config"] == api["config"] and cli["vocab"] == api["vocab"]
        assert all(torch.equal(v, api["state_dict"][k]) for k, v in cli["state_dict"].items())
    assert [h["loss_per_word"] for h in history] == [h["loss_per_word"] for h in cli["meta"]["history"]]
    assert len(history) == 2
    out = capsys.readouterr().out
    assert lines[0] == out.splitlines()[0]       # "12 train / 4 val images, N words, ... parameters, grid ..."


def test_a_backbone_reads_224_pixel_images_unless_the_size_is_given():
    cfg = CaptionConfig(encoder="resnet18")
    setup.complete_model_config(cfg)
    assert cfg.image_size == 224
    cfg = CaptionConfig(encoder="resnet18", image_size=96)
    setup.complete_model_config(cfg)
    assert cfg.image_size == 96
    cfg = CaptionConfig(encoder="resnet18", image_size=112)       # the default value, given on the command line
    setup.complete_model_config(cfg, given={"encoder", "image_size"})
    assert cfg.image_size == 112
    cfg = CaptionConfig()
    setup.complete_model_config(cfg)
    assert cfg.image_size == 112                                  # the built-in CNN keeps its own


def test_a_feature_cache_sets_the_encoder_and_refuses_a_given_size_that_differs(tmp_path):
    manifest = {"encoder": "resnet18", "encoder_weights": "/w/r18.pth", "image_size": 32, "grid": [2, 2]}
    cfg = CaptionConfig(hidden_dim=8, fine_tune=True)
    setup.complete_model_config(cfg, manifest)
    assert (cfg.encoder, cfg.encoder_weights, cfg.image_size, cfg.grid, cfg.fine_tune) == (
        "resnet18", "/w/r18.pth", 32, 2, False)
    given = tmp_path / "mine.pth"
    cfg = CaptionConfig(encoder_weights=str(given))
    setup.complete_model_config(cfg, manifest)
    assert cfg.encoder_weights == str(given.resolve())            # the user's file, checked by its sha256 later
    with pytest.raises(InputError, match="--image-size 64 differs from the feature cache's 32"):
        setup.complete_model_config(CaptionConfig(image_size=64), manifest)
    with pytest.raises(InputError, match="--encoder vgg16 differs from the feature cache's resnet18"):
        setup.complete_model_config(CaptionConfig(encoder="vgg16"), manifest)


@pytest.mark.parametrize("dataset", ["scenes", "coco"])
def test_every_setting_of_a_run_is_resolved_once(tmp_path, monkeypatch, dataset):
    from caption.data import loader
    calls = {"precision": 0, "device": 0, "tensorboard": 0, "fresh": 0, "config": 0, "memory": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper
    monkeypatch.setattr(setup, "resolve_precision", counted("precision", setup.resolve_precision))
    monkeypatch.setattr(setup, "train_device", counted("device", setup.train_device))
    monkeypatch.setattr(setup, "check_tensorboard", counted("tensorboard", setup.check_tensorboard))
    monkeypatch.setattr(setup, "check_fresh", counted("fresh", setup.check_fresh))
    monkeypatch.setattr(setup, "check", counted("config", setup.check))
    monkeypatch.setattr(loader, "check_shared_memory", counted("memory", loader.check_shared_memory))
    flags = {**TRAIN, "epochs": 1, "pretrain_epochs": 0, "workers": 0}
    data = ["--dataset", "coco", "--data", str(write_coco(tmp_path / "coco"))] if dataset == "coco" else []
    assert main(["train", *data, *as_flags(FLAGS), *as_flags(flags), "--quiet", "--out", str(tmp_path / "m.pt")]) == 0
    # both configs once after the model config is completed (the flags were checked as parsed);
    # the shared memory of batches decoded from files once, before the data is read
    assert calls == {"precision": 1, "device": 1, "tensorboard": 1, "fresh": 1, "config": 2,
                     "memory": int(dataset == "coco")}


def test_train_leaves_the_callers_config_and_wants_features_with_their_manifest(tmp_path):
    manifest = {"encoder": "resnet18", "encoder_weights": None, "image_size": 48, "grid": [2, 2], "sha256": None}
    features = {"train": torch.randn(12, 4, 512), "val": torch.randn(4, 4, 512)}
    model_cfg, cfg = CaptionConfig(**FLAGS), CaptionTrainConfig(**{**TRAIN, "epochs": 1, "pretrain_epochs": 0})
    history = train(model_cfg, cfg, scene_set(12, "train", 48), scene_set(4, "val", 48), tmp_path / "m.pt",
                    features=features, manifest=manifest, progress=False, log=lambda s: None)
    assert len(history) == 1 and model_cfg == CaptionConfig(**FLAGS)        # completed on a copy
    saved = checkpoint.load(tmp_path / "m.pt")["config"]
    assert (saved["encoder"], saved["grid"], saved["fine_tune"]) == ("resnet18", 2, False)
    with pytest.raises(ValueError, match="features and its manifest together"):
        train(model_cfg, cfg, scene_set(12, "train", 48), scene_set(4, "val", 48), tmp_path / "f.pt",
              features=features)
