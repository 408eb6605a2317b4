import pytest
import torch

from revvideo.config import get_cfg
from revvideo.data import SoftTargets


def batch(size=4, classes=5):
    torch.manual_seed(0)
    return torch.rand(size, 3, 2, 8, 8), torch.arange(size) % classes


def test_disabled_mixup_still_smooths_labels():
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = 5
    video, label = batch()
    original = video.clone()
    mixed, target = SoftTargets.from_cfg(cfg)(video, label)
    assert torch.equal(mixed, original)
    assert target.dtype == torch.float32 and target.shape == (4, 5)
    expected = torch.full((4, 5), 0.1 / 5)
    expected[torch.arange(4), label] = 0.9 + 0.1 / 5
    assert torch.allclose(target, expected)


def test_no_smoothing_gives_one_hot_floats():
    _, target = SoftTargets(5, enabled=False, label_smoothing=0.0)(*batch())
    assert target.dtype == torch.float32
    assert torch.equal(target, torch.eye(5)[:4])


def test_mixup_pairs_each_clip_with_its_mirror():
    video, label = batch()
    first, last = video[0].clone(), video[-1].clone()
    mixed, target = SoftTargets(5, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0)(
        video, label
    )
    weight = target[0, label[0]].item()
    assert torch.allclose(target.sum(dim=1), torch.ones(4))
    assert target[0, label[-1]].item() == pytest.approx(1 - weight)
    assert torch.allclose(mixed[0], weight * first + (1 - weight) * last, atol=1e-6)


def test_cutmix_pastes_a_box_and_weights_labels_by_area():
    video, label = batch()
    original = video.clone()
    mixed, target = SoftTargets(5, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)(
        video, label
    )
    pasted = (mixed[0] != original[0]).any(dim=(0, 1)).float().mean().item()
    assert target[0, label[0]].item() == pytest.approx(1 - pasted, abs=1e-6)
    assert torch.allclose(target.sum(dim=1), torch.ones(4))


def test_single_clip_batches_and_prob_zero_are_not_mixed():
    video, label = batch(size=1)
    mixed, target = SoftTargets(5, label_smoothing=0.0)(video.clone(), label)
    assert torch.equal(mixed, video) and torch.equal(target, torch.eye(5)[:1])
    video, label = batch()
    mixed, _ = SoftTargets(5, prob=0.0)(video.clone(), label)
    assert torch.equal(mixed, video)
