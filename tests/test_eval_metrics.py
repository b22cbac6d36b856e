"""Image metrics (PSNR, SSIM, mask IoU) on hand-computed cases, and LPIPS-VGG plumbing with random weights."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from o3dcli.eval.lpips import CHANNELS, LPIPS, LpipsWeightsError, canonical_key, load_lpips, lpips_per_view
from o3dcli.eval.metrics import gaussian_window, mask_iou, mean_over_views, psnr, ssim, ssim_map


def test_psnr_identical_constant_offset_and_known_noise():
    gt = torch.full((2, 3, 16, 16), 0.5)
    assert torch.isinf(psnr(gt, gt)).all()
    # a constant error of 0.1: MSE = 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert torch.allclose(psnr(gt + 0.1, gt), torch.full((2,), 20.0, dtype=torch.float64))
    # +-0.05 with random signs: MSE = 0.0025 -> 26.0206 dB
    signs = torch.randint(0, 2, gt.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.allclose(psnr(gt + 0.05 * signs, gt), torch.full((2,), 10 * math.log10(1 / 0.0025), dtype=torch.float64))


def test_masked_psnr_counts_only_masked_pixels():
    gt = torch.full((1, 3, 8, 8), 0.5)
    pred = gt.clone()
    pred[..., :4] += 0.2  # error only in the left half
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 4:] = True
    assert torch.isinf(psnr(pred, gt, mask)).all()
    mask[..., :] = True  # whole image: MSE = 0.04 / 2
    assert psnr(pred, gt, mask).item() == pytest.approx(10 * math.log10(1 / 0.02))
    assert math.isnan(psnr(pred, gt, torch.zeros_like(mask)).item())  # nothing to score


def test_ssim_identical_and_constant_images():
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ssim(x, x), torch.ones(2, dtype=torch.float64))
    # constant images a, b: variances and covariance vanish -> (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.5, 0.6, 0.01**2
    s = ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)).item()
    assert s == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-6)


def test_ssim_matches_a_direct_windowed_reference():
    rng = np.random.default_rng(2)
    x, y = rng.random((1, 1, 14, 15)), rng.random((1, 1, 14, 15))
    got = ssim_map(torch.tensor(x), torch.tensor(y))[0].numpy()
    assert got.shape == (4, 5)  # "valid": 5 pixels lost on each side
    g = gaussian_window().numpy()
    w = np.outer(g, g)
    c1, c2 = 0.01**2, 0.03**2
    for i in range(4):
        for j in range(5):  # weighted statistics of one 11x11 patch, straight from the definition
            px, py = x[0, 0, i:i + 11, j:j + 11], y[0, 0, i:i + 11, j:j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            ref = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            assert got[i, j] == pytest.approx(ref, abs=1e-6)
    assert gaussian_window().sum().item() == pytest.approx(1.0)
    assert gaussian_window()[5].item() == pytest.approx(1 / sum(math.exp(-(k**2) / 4.5) for k in range(-5, 6)))


def test_masked_ssim():
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    y = x.clone()
    y[..., :, :8] = 0.0  # damage the left third only
    full = torch.ones(1, 1, 24, 24, dtype=torch.bool)
    assert ssim(x, y, full).item() == pytest.approx(ssim(x, y).item())
    right = torch.zeros_like(full)
    right[..., 13:] = True  # pixels whose 11x11 window never reaches the damage (centre column >= 8 + 5)
    assert ssim(x, y, right).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(x, y).item() < 0.9


def test_mask_iou_of_rectangles_and_mean_over_views():
    a = torch.zeros(2, 1, 10, 10)
    b = torch.zeros(2, 1, 10, 10)
    a[0, :, :, :6] = 1  # 60 px
    b[0, :, :, 4:] = 1  # 60 px, overlap 20 -> IoU 20 / 100
    a[1, :, :5] = 1
    b[1, :, :5] = 1
    iou = mask_iou(a, b)
    assert iou.tolist() == pytest.approx([0.2, 1.0])
    assert mean_over_views(iou) == pytest.approx(0.6)
    assert mean_over_views(torch.tensor([float("nan"), 2.0])) == 2.0
    assert mean_over_views(torch.tensor([float("inf"), 30.0])) == math.inf
    assert mean_over_views(torch.tensor([float("nan")])) is None


def _random_lpips_files(tmp_path, split: bool = True):
    """Random weights saved under the names real checkpoints use: torchvision's vgg16 features and
    the LPIPS package's lin heads (``linK.model.1.weight``)."""
    torch.manual_seed(0)
    model = LPIPS()
    sd = model.state_dict()
    vgg = {k: v.clone() for k, v in sd.items() if k.startswith("features.")}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files hold the classifier too: ignored
    lins = {f"lin{k}.model.1.weight": sd[f"lin{k}.weight"].abs() for k in range(5)}  # LPIPS heads are >= 0
    if not split:
        path = tmp_path / "lpips_all.pth"
        torch.save({**vgg, **lins}, path)
        return [path], vgg, lins
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lins, tmp_path / "vgg_lin.pth")
    return [tmp_path / "vgg16.pth", tmp_path / "vgg_lin.pth"], vgg, lins


def test_lpips_loads_checkpoint_names_and_identical_images_give_zero(tmp_path):
    paths, vgg, lins = _random_lpips_files(tmp_path)
    model = load_lpips(paths)
    assert torch.equal(model.lin2.weight, lins["lin2.model.1.weight"])
    assert torch.equal(model.features[28].weight, vgg["features.28.weight"])
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    y = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    assert torch.equal(lpips_per_view(model, x, x), torch.zeros(3, dtype=torch.float64))
    d = lpips_per_view(model, x, y)
    assert (d > 0).all()
    assert torch.allclose(d, lpips_per_view(model, y, x))  # symmetric
    # the first tap is relu1_2 of the scaled input, computed here straight from the weights
    h = ((2 * x - 1) - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    h = F.relu(F.conv2d(h, vgg["features.0.weight"], vgg["features.0.bias"], padding=1))
    h = F.relu(F.conv2d(h, vgg["features.2.weight"], vgg["features.2.bias"], padding=1))
    taps = model.taps(x)
    assert torch.allclose(taps[0], h, atol=1e-5)
    assert [t.shape[1] for t in taps] == list(CHANNELS) and taps[-1].shape[-1] == 2  # relu5_3 at 1/16


def test_lpips_single_file_and_key_mapping(tmp_path):
    paths, _, _ = _random_lpips_files(tmp_path, split=False)
    assert isinstance(load_lpips(paths[0]), LPIPS)
    assert canonical_key("net.slice2.7.weight") == "features.7.weight"
    assert canonical_key("lin4.model.0.weight") == "lin4.weight"
    assert canonical_key("module.features.0.bias") == "features.0.bias"


def test_lpips_errors_name_the_file_and_missing_tensors(tmp_path):
    paths, _, _ = _random_lpips_files(tmp_path)
    with pytest.raises(LpipsWeightsError, match=r"vgg16\.pth.*lin0\.weight"):
        load_lpips(paths[0])  # the lin heads are in the other file
    with pytest.raises(LpipsWeightsError, match="not found"):
        load_lpips(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(LpipsWeightsError, match="junk.pth"):
        load_lpips(tmp_path / "junk.pth")
    # a pickle torch will not read with weights_only: its problem in one line, not torch's page of advice
    (tmp_path / "bad.pth").write_bytes(b"\x80\x02xgarbage")
    with pytest.raises(LpipsWeightsError) as caught:
        load_lpips(tmp_path / "bad.pth")
    assert "bad.pth: not a readable checkpoint" in str(caught.value) and "\n" not in str(caught.value)
    assert "weights_only" not in str(caught.value)
