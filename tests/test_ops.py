"""Export-friendly op forms agree with the per-sample-weight formulation of the reference code."""

import pytest
import torch
import torch.nn.functional as F

from ilo.generators.ops import ModulatedConv2d, fir_kernel, upfirdn2d


def _grouped_modconv(conv: ModulatedConv2d, x, w):
    b, c_in, h, wd = x.shape
    styles = conv.affine(w)
    weight = conv.weight * conv.weight_gain
    c_out, _, k, _ = weight.shape
    wt = weight[None] * styles[:, None, :, None, None]
    if conv.demodulate:
        wt = wt * torch.rsqrt(wt.square().sum(dim=[2, 3, 4]) + 1e-8)[:, :, None, None, None]
    if conv.up:
        wt = wt.transpose(1, 2).reshape(b * c_in, c_out, k, k)
        out = F.conv_transpose2d(x.reshape(1, b * c_in, h, wd), wt, stride=2, groups=b)
        return upfirdn2d(out.reshape(b, c_out, *out.shape[2:]), fir_kernel(), pad=(1, 1), gain=4.0)
    out = F.conv2d(x.reshape(1, b * c_in, h, wd), wt.reshape(b * c_out, c_in, k, k), padding=k // 2, groups=b)
    return out.reshape(b, c_out, *out.shape[2:])


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_scale_conv_scale_equals_grouped_conv(up, demodulate):
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 3, 8, demodulate=demodulate, up=up)
    with torch.no_grad():
        for p in conv.parameters():
            p.normal_()
        x, w = torch.randn(3, 6, 7, 7), torch.randn(3, 8)
        assert torch.allclose(conv(x, w), _grouped_modconv(conv, x, w), atol=1e-5, rtol=1e-5)


def test_upfirdn2d_upsample_against_zero_insertion():
    x = torch.randn(2, 3, 5, 5)
    z = torch.zeros(2, 3, 10, 10)
    z[:, :, ::2, ::2] = x
    f = fir_kernel()
    expected = F.conv2d(F.pad(z, [2, 1, 2, 1]), (f.flip([0, 1]) * 4)[None, None].repeat(3, 1, 1, 1), groups=3)
    assert torch.allclose(upfirdn2d(x, f, up=2, pad=(2, 1), gain=4.0), expected, atol=1e-6)


def test_upfirdn2d_negative_padding_crops():
    x = torch.randn(1, 1, 8, 8)
    one = torch.ones(1, 1)
    assert torch.equal(upfirdn2d(x, one, pad=(-1, -2)), x[:, :, 1:-2, 1:-2])
    assert upfirdn2d(x, one, down=2).shape == (1, 1, 4, 4)
