"""On a CUDA device (skipped without one; CI has none): the decoder's fused paths, beam search,
training in each precision with resume, and the command line give on the GPU what they give on
the CPU. The rest of the suite runs there too, on CUDA wherever a command picks its default device."""
import json

import pytest
import torch

from caption import load
from caption.checkpoint import default_checkpoint
from caption.cli import main
from caption.config import CaptionConfig
from caption.data.scenes import scene_set
from caption.image.decoder import Decoder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FLAGS = ["--dataset", "scenes", "--train-size", "32", "--val-size", "4", "--image-size", "48", "--feature-dim", "8",
         "--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8", "--batch-size", "8", "--pretrain-epochs", "0",
         "--dropout", "0", "--quiet", "--device", "cuda"]


@pytest.fixture(autouse=True)
def full_fp32():
    """fp32 products in fp32, not TF32, so that the GPU and the CPU compute the same numbers."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("attention,selector", [("soft", True), ("soft", False), ("hard", True), ("none", True)])
def test_the_teacher_forced_step_on_cuda_equals_the_cpu(attention, selector):
    """Outputs and every parameter gradient: the fused score in one chunk on CUDA, the deferred
    recurrent weight gradient, hard rows on the expected context (no draw decides a number)."""
    torch.manual_seed(0)
    cpu = Decoder(CaptionConfig(embed_dim=24, hidden_dim=40, attn_dim=32, dropout=0.0, attention=attention,
                                selector=selector), 48, 50)
    gpu = Decoder(cpu.config, 48, 50).cuda()
    gpu.load_state_dict(cpu.state_dict())
    feats, tgt = torch.randn(6, 49, 48), torch.randint(4, 50, (9, 11))
    image_of = torch.tensor([0, 0, 1, 2, 2, 3, 4, 5, 5])
    results = []
    for dec, dev in ((cpu, "cpu"), (gpu, "cuda")):
        hard = attention == "hard"
        out = dec(feats.to(dev), tgt.to(dev), image_of.to(dev), hard=hard,
                  expected=torch.ones(9, dtype=torch.bool, device=dev) if hard else False)
        loss = out.logits.sin().sum() + (out.alpha.cos().sum() if out.alpha is not None else 0)
        loss.backward()
        results.append((out.logits.cpu(), None if out.alpha is None else out.alpha.cpu(),
                        {n: p.grad.cpu() for n, p in dec.named_parameters() if p.grad is not None}))
    (l0, a0, g0), (l1, a1, g1) = results
    assert torch.allclose(l0, l1, atol=1e-5)
    assert (a0 is None) == (attention == "none") and (a0 is None or torch.allclose(a0, a1, atol=1e-6))
    assert g0.keys() == g1.keys() and len(g0) >= 10
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-4, rtol=1e-4), name


@pytest.mark.parametrize("name", ["scenes-soft.pt", "scenes-hard.pt"])
def test_beam_search_on_cuda_finds_the_cpu_captions_and_bf16_keeps_the_scores(name):
    path = default_checkpoint(name)
    if not path.is_file():
        pytest.skip("the shipped models are not in this tree")
    images = scene_set(40, "test", seed=7).images
    cpu = load(path, "cpu").caption_tensors(images)
    gpu = load(path, "cuda", "fp32").caption_tensors(images)
    assert [h.text for h in gpu] == [h.text for h in cpu]
    assert [h.score for h in gpu] == pytest.approx([h.score for h in cpu], abs=1e-3)
    for precision in ("bf16", "fp16"):
        low = load(path, "cuda", precision).caption_tensors(images)
        same = sum(a.text == b.text for a, b in zip(low, cpu))
        assert same >= 36, (precision, same)          # a near tie may go the other way, not more


def _weights(path):
    return torch.load(path, weights_only=True, map_location="cpu")["state_dict"]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_in_each_precision_saves_and_resumes(tmp_path, capsys, precision):
    """Hard attention (the draws come from the CUDA generator): 3 epochs straight equal 2 epochs,
    then --resume for the third (a constant learning rate: the schedule spans --epochs); fp16 keeps
    its gradient scaler in the resumable state."""
    flags = [*FLAGS, "--attention", "hard", "--precision", precision, "--lr", "1e-3", "--lr-final", "1e-3"]
    straight, resumed = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main(["train", *flags, "--epochs", "3", "--out", str(straight)]) == 0
    assert main(["train", *flags, "--epochs", "2", "--out", str(resumed)]) == 0
    meta = torch.load(resumed.with_name("b.last.pt"), weights_only=True)["meta"]
    assert (meta["scaler"] is not None) == (precision == "fp16")
    assert main(["train", *flags, "--epochs", "3", "--out", str(resumed), "--resume"]) == 0
    a, b = _weights(straight.with_name("a.last.pt")), _weights(resumed.with_name("b.last.pt"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.isfinite(a[k].float()).all(), k
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-4), (precision, k)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(straight), "--n", "8", "--device", "cuda", "--json",
                 "--no-coco-scores"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 8


def test_predict_on_cuda_in_fp32_prints_what_the_cpu_prints(tmp_path, capsys):
    path = default_checkpoint("scenes-soft.pt")
    if not path.is_file():
        pytest.skip("the shipped model is not in this tree")
    from PIL import Image
    names = []
    for i, img in enumerate(scene_set(6, "test", seed=3).images):
        names.append(str(tmp_path / f"s{i}.png"))
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(names[-1])
    out = {}
    for device in ("cpu", "cuda"):
        assert main(["predict", *names, "--device", device, "--precision", "fp32", "--json"]) == 0
        out[device] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["caption"] for r in out["cuda"]] == [r["caption"] for r in out["cpu"]]
    assert [r["score"] for r in out["cuda"]] == pytest.approx([r["score"] for r in out["cpu"]], abs=2e-4)


@pytest.mark.parametrize("attention", ["soft", "none"])
def test_the_training_step_replays_as_a_cuda_graph_with_the_eager_gradients(attention):
    """No host copy or sync inside the step (a capture refuses both); a replay recomputes the
    gradients that an eager step gives (benchmarks/gpu_speed.py times it)."""
    torch.manual_seed(1)
    dec = Decoder(CaptionConfig(embed_dim=24, hidden_dim=40, attn_dim=32, dropout=0.0, attention=attention),
                  48, 50).cuda()
    feats, tgt = torch.randn(6, 49, 48, device="cuda"), torch.randint(4, 50, (6, 9), device="cuda")

    def step():
        for p in dec.parameters():
            p.grad = None
        out = dec(feats, tgt[:, :-1])
        torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), tgt[:, 1:].flatten()).backward()

    step()
    eager = {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}   # at feats A
    A = feats.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    grads = lambda: {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}  # noqa: E731
    feats.copy_(torch.randn_like(feats))                                        # new inputs, same tensor
    graph.replay()
    at_b = grads()
    feats.copy_(A)
    graph.replay()
    at_a = grads()
    assert not torch.allclose(at_b["out.weight"], at_a["out.weight"])
    assert eager.keys() == at_a.keys()
    for n in eager:
        assert torch.allclose(at_a[n], eager[n], atol=1e-5, rtol=1e-4), n


def test_the_seq2seq_model_with_a_bridge_trains_on_cuda_as_on_the_cpu():
    """A decoder of another size than the bidirectional encoder starts from tanh(W h): cuDNN takes
    those halves only as contiguous tensors."""
    from caption.config import Seq2SeqConfig
    from caption.text.model import Seq2Seq
    torch.manual_seed(2)
    cpu = Seq2Seq(Seq2SeqConfig(embed_dim=6, hidden_dim=8, decoder_dim=12), 20)
    gpu = Seq2Seq(cpu.config, 20).cuda()
    gpu.load_state_dict(cpu.state_dict())
    src, tgt = torch.randint(4, 20, (5, 7)), torch.randint(4, 20, (5, 6))
    src_len = torch.tensor([7, 7, 5, 3, 7])
    losses = []
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        loss = model.loss(src.to(dev), src_len.to(dev), tgt.to(dev))
        loss.backward()
        losses.append((float(loss), model.bridge.weight.grad.cpu()))
    assert cpu.bridge is not None
    assert losses[0][0] == pytest.approx(losses[1][0], abs=1e-5)
    assert torch.allclose(losses[0][1], losses[1][1], atol=1e-5)
