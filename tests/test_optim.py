"""The optimiser step shared by both trainers: the learning-rate schedule and clipping."""
import pytest
import torch

from caption.device import default_device
from caption.optim import adam_with_linear_decay, optimizer_step


def test_the_learning_rate_decays_linearly_to_its_final_value_and_stays():
    w = torch.nn.Parameter(torch.zeros(3))
    opt, sched = adam_with_linear_decay([w], lr=1e-2, lr_final=1e-4, total_steps=10)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        optimizer_step((w - 1).pow(2).sum(), opt, sched, [w], clip=5.0)
    assert seen[0] == pytest.approx(1e-2) and seen[5] == pytest.approx(1e-2 - 0.5 * (1e-2 - 1e-4))
    assert seen[10] == pytest.approx(1e-4) and seen[11] == pytest.approx(1e-4)


def test_the_step_clips_the_global_gradient_norm_and_skips_frozen_parameters():
    w, frozen = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.ones(2), requires_grad=False)
    opt, sched = adam_with_linear_decay([w, frozen], lr=0.1, lr_final=0.1, total_steps=1)
    assert [p for g in opt.param_groups for p in g["params"]] == [w]
    optimizer_step((w * torch.tensor([30.0, 40.0, 0.0, 0.0])).sum(), opt, sched, [w], clip=1.0)
    assert w.grad.norm().item() == pytest.approx(1.0)                     # 50 clipped to 1
    assert torch.allclose(w.grad, torch.tensor([0.6, 0.8, 0.0, 0.0]))


def test_the_default_device_is_cuda_only_when_present():
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_auto_precision_trains_in_fp32_and_decodes_in_bf16_on_a_gpu_that_has_it(monkeypatch):
    """BENCHMARKS.md, precision on cuda: bf16 trained the scenes model no faster and scored lower;
    it decoded the shipped models as well and a little faster."""
    from caption.device import resolve_precision
    from caption.errors import OptionError
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda, training=True) == "fp32"
    assert resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("auto", cpu) == resolve_precision("auto", cpu, training=True) == "fp32"
    assert resolve_precision("fp16", cuda, training=True) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", cuda) == "fp32"
    with pytest.raises(OptionError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu, training=True)
