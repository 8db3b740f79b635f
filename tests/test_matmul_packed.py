"""caption.kernels.matmul's layouts for oneDNN: a transposed matrix made whole by the C kernels'
tiled transpose (bit for bit x.contiguous()), and a weight packed once for many products (the
products of the plain weight)."""
import pytest
import torch

from caption.kernels import matmul, native

pytestmark = pytest.mark.skipif(not matmul.available(), reason="this PyTorch has no oneDNN inner product")
needs_kernel = pytest.mark.skipif(native.built() is None, reason=native.status())


@needs_kernel
@pytest.mark.parametrize("rows, cols", [(640, 10000), (33, 2049), (1000, 67), (256, 256), (15, 4500)])
def test_a_transposed_matrix_is_made_whole_bit_for_bit_by_the_tiled_kernel(rows, cols, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(rows, cols).t()                                   # (cols, rows), a transposed view
    tiled = []
    real = native.built().transpose_f32

    class Counting:                                                   # the C library, its transpose counted
        def __getattr__(self, name):
            return getattr(native.built(), name)

        def transpose_f32(self, *args):
            tiled.append(args[2:4])
            return real(*args)
    monkeypatch.setattr(native, "library", lambda: Counting())
    out = matmul.whole(x)
    assert tiled == [(rows, cols)] and out.is_contiguous() and torch.equal(out, x.contiguous())


@pytest.mark.skipif(native.built() is None, reason=native.status())
def test_the_generic_build_transposes_bit_for_bit_too(monkeypatch, tmp_path):
    """Without -march=native (the build a compiler falls back to) the transpose has no 8 x 8 blocks in
    AVX registers, only its element-by-element loop: the same numbers."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(native, "VARIANTS", ((),))
    native._build.cache_clear()
    try:
        assert "generic, one thread" in native.status(), native.status()
        for rows, cols in ((640, 1000), (33, 2049), (1000, 67)):
            x = torch.randn(rows, cols).t()
            assert torch.equal(matmul.whole(x), x.contiguous())
    finally:
        native._build.cache_clear()


def test_whole_leaves_every_other_layout_to_pytorch(monkeypatch):
    monkeypatch.setattr(native, "library", lambda: pytest.fail("the C transpose was called"))
    x = torch.randn(300, 400)
    assert matmul.whole(x) is x                                       # contiguous already
    for other in (x[:, ::2], x.t().double(), x.t()[:10, :10]):      # strided, fp64, too small
        out = matmul.whole(other)
        assert out.is_contiguous() and torch.equal(out, other.contiguous())


def test_without_the_c_kernels_a_transpose_is_pytorchs_copy(monkeypatch):
    monkeypatch.setattr(native, "library", lambda: None)
    x = torch.randn(500, 700).t()
    assert torch.equal(matmul.whole(x), x.contiguous())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [32, 17, 1, 64])
def test_a_packed_weight_gives_the_products_of_the_plain_one(dtype, rows):
    torch.manual_seed(rows)
    weight = torch.randn(300, 200).to(dtype)
    packed = matmul.Packed(weight, 32, enabled=True)
    assert packed.packed is not None                                  # this PyTorch can pack: the path is taken
    x = torch.randn(rows, 200).to(dtype)
    got, plain = packed(x), matmul.mm(x, weight.t(), True)
    assert got.dtype == dtype and got.shape == (rows, 300)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-1)
    assert torch.allclose(got.float(), plain.float(), **tol)
    assert torch.allclose(got.double(), x.double() @ weight.double().t(), **tol)
    assert torch.equal(got, packed(x))                                # the same every time


def test_a_packed_weight_takes_transposed_rows_and_falls_back_where_it_cannot_pack(monkeypatch):
    torch.manual_seed(0)
    weight, x = torch.randn(300, 200), torch.randn(200, 40).t()       # x: a transposed view
    assert torch.allclose(matmul.Packed(weight, 40, True)(x), x @ weight.t(), rtol=1e-5, atol=1e-4)
    assert matmul.Packed(weight, 40, enabled=False).packed is None   # routing off: the plain product
    assert matmul.Packed(weight.double(), 40, True).packed is None   # a dtype oneDNN is not asked for
    monkeypatch.setattr(matmul, "_REORDER", None)                     # a PyTorch that cannot pack
    fallback = matmul.Packed(weight, 40, True)
    assert fallback.packed is None and torch.allclose(fallback(x), x @ weight.t(), rtol=1e-5, atol=1e-4)
    assert fallback(x[:0]).shape == (0, 300)
