"""Validation split, loaders and batched augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visattn.data import AUGMENT_PRESETS, BatchTransform, DatasetSplits, ImageTensorDataset, make_loaders
from visattn.data.loaders import split_indices
from visattn.data.transforms import random_crop_flip, random_resized_crop


def indexed_splits(
    n_train: int = 100, n_test: int = 30, *, size: int = 4, augment: str = "none"
) -> DatasetSplits:
    """Images whose pixels spell their own index: pixel (0, 0) = i % 256, pixel (0, 1) = i // 256."""

    def make(n: int) -> ImageTensorDataset:
        x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
        i = torch.arange(n)
        x[:, 0, 0, 0] = (i % 256).to(torch.uint8)
        x[:, 0, 0, 1] = (i // 256).to(torch.uint8)
        return ImageTensorDataset(x, i % 7)

    return DatasetSplits(
        "idx", make(n_train), make(n_test), 7, 1, (size, size), (0.0,), (1.0,), default_augment=augment
    )


def decode(x: torch.Tensor) -> list[int]:
    v = (x[:, 0, 0, :2] * 255).round().long()
    return (v[:, 0] + 256 * v[:, 1]).tolist()


def seen(loader) -> list[int]:
    return [i for x, _ in loader for i in decode(x)]


def test_split_indices_disjoint_deterministic_and_seeded():
    tr, va = split_indices(1000, 0.1, seed=3)
    assert len(va) == 100 and len(tr) == 900
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(1000))
    tr2, va2 = split_indices(1000, 0.1, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    _, va3 = split_indices(1000, 0.1, seed=4)
    assert not torch.equal(va, va3)
    lim, va4 = split_indices(1000, 0.1, seed=3, limit_train=50)
    assert torch.equal(va4, va) and len(lim) == 50 and set(lim.tolist()) <= set(tr.tolist())
    assert split_indices(10, 0.01, seed=0)[1].numel() == 1  # a non-zero fraction keeps at least one
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.0, seed=0)


def test_loaders_cover_train_and_val_disjointly_and_never_touch_test():
    sp = indexed_splits()
    ld = make_loaders(sp, batch_size=8, val_fraction=0.2, seed=5, drop_last=False)
    train, val, test = seen(ld.train), seen(ld.val), seen(ld.test)
    assert (ld.n_train, ld.n_val, ld.n_test) == (80, 20, 30)
    assert len(train) == 80 and len(set(train)) == 80 and len(val) == 20
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(100))
    assert test == list(range(30))  # test in order, untouched
    again = make_loaders(sp, batch_size=8, val_fraction=0.2, seed=5)
    assert seen(again.val) == val
    assert seen(make_loaders(sp, batch_size=8, val_fraction=0.2, seed=6).val) != val


def test_limit_train_limit_eval_and_no_validation():
    sp = indexed_splits()
    full = make_loaders(sp, batch_size=4, val_fraction=0.2, seed=1, drop_last=False)
    ld = make_loaders(
        sp, batch_size=4, val_fraction=0.2, seed=1, limit_train=12, limit_eval=7, drop_last=False
    )
    train = seen(ld.train)
    assert ld.n_train == 12 and len(train) == 12 and set(train) <= set(seen(full.train))
    assert set(seen(make_loaders(sp, batch_size=4, seed=1, limit_train=12, val_fraction=0.2).train)) == set(
        train
    )
    assert ld.n_val == 7 and set(seen(ld.val)) <= set(seen(full.val))
    assert ld.n_test == 7 and len(set(seen(ld.test))) == 7
    none = make_loaders(sp, batch_size=4, val_fraction=0.0)
    assert none.val is None and none.n_val == 0 and none.n_train == 100
    dropped = make_loaders(sp, batch_size=30, val_fraction=0.0)
    assert [len(y) for _, y in dropped.train] == [30, 30, 30]
    assert [len(y) for _, y in dropped.test] == [30]


def test_batches_dtypes_shapes_and_normalisation():
    x = torch.full((16, 3, 8, 8), 255, dtype=torch.uint8)
    x[:, 1] = 0
    ds = ImageTensorDataset(x, torch.arange(16) % 4)
    sp = DatasetSplits("c", ds, ds, 4, 3, (8, 8), (0.5, 0.5, 0.25), (0.25, 0.5, 0.5))
    ld = make_loaders(sp, batch_size=5, val_fraction=0.25, eval_batch_size=3)
    xb, yb = next(iter(ld.train))
    assert (
        xb.shape == (5, 3, 8, 8)
        and xb.dtype == torch.float32
        and yb.shape == (5,)
        and yb.dtype == torch.int64
    )
    assert torch.allclose(xb[:, 0], torch.tensor(2.0)) and torch.allclose(xb[:, 1], torch.tensor(-1.0))
    assert torch.allclose(xb[:, 2], torch.tensor(1.5))
    xv, _ = next(iter(ld.val))
    assert xv.shape == (3, 3, 8, 8)
    assert len(ld.train) == 2  # 12 training samples, batches of 5, last one dropped


def test_cifar_preset_changes_images_keeps_shape_eval_does_not():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    ds = ImageTensorDataset(x, torch.zeros(64, dtype=torch.long))
    sp = DatasetSplits("c", ds, ds, 10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3, default_augment="pad_crop_flip")
    originals = {bytes(img.numpy()) for img in x}

    def back(batch: torch.Tensor) -> list[bytes]:  # undo the normalisation, exactly, to uint8 bytes
        return [bytes(img.numpy()) for img in ((batch * 0.25 + 0.5) * 255).round().to(torch.uint8)]

    ld = make_loaders(sp, batch_size=64, val_fraction=0.0, drop_last=False)
    assert ld.augment == "pad_crop_flip"
    torch.manual_seed(0)
    aug, _ = next(iter(ld.train))
    assert aug.shape == (64, 3, 32, 32) and aug.dtype == torch.float32
    changed = sum(b not in originals for b in back(aug))
    assert changed > 50, "almost every image should be shifted or flipped"
    test, _ = next(iter(ld.test))
    assert back(test) == [bytes(img.numpy()) for img in x], "evaluation must not augment"
    torch.manual_seed(0)
    again, _ = next(iter(make_loaders(sp, batch_size=64, val_fraction=0.0).train))
    assert torch.equal(aug, again), "augmentation must follow the global torch seed"
    plain = next(iter(make_loaders(sp, batch_size=64, val_fraction=0.0, augment="none").train))[0]
    assert set(back(plain)) == originals


def test_crop_flip_matches_per_image_reference():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (12, 2, 10, 9), dtype=torch.uint8, generator=g)
    pad = 3
    out = random_crop_flip(x, pad, 0.5, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # replay the draws in the same order
    off = torch.randint(0, 2 * pad + 1, (2, 12, 1, 1), generator=g)
    flip = torch.rand(12, generator=g) < 0.5
    padded = F.pad(x, (pad, pad, pad, pad))
    for b in range(12):
        oy, ox = int(off[0, b]), int(off[1, b])
        ref = padded[b, :, oy : oy + 10, ox : ox + 9]
        if flip[b]:
            ref = ref.flip(-1)
        assert torch.equal(out[b], ref)
    assert 0 < int(flip.sum()) < 12
    assert torch.equal(random_crop_flip(x, 0, 0.0), x)


def test_resized_crop_and_batch_transform_contract():
    x = torch.rand(3, 3, 20, 30)
    y = random_resized_crop(x, (16, 16), generator=torch.Generator().manual_seed(0))
    assert y.shape == (3, 3, 16, 16) and y.min() >= 0 and y.max() <= 1
    same = random_resized_crop(x, (20, 30), scale=(1.0, 1.0), ratio=(1.5, 1.5))
    assert torch.allclose(same, x, atol=1e-5)  # the whole image at its own size is the identity
    t = BatchTransform((0.5,) * 3, (0.5,) * 3, preset="resized_crop_flip", size=(12, 12))
    xc = x.clone()
    assert t(x).shape == (3, 3, 12, 12) and torch.equal(x, xc), "float input must not be modified"
    with pytest.raises(ValueError, match="channels"):
        t(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


def test_bad_arguments_raise_naming_them():
    sp = indexed_splits()
    with pytest.raises(ValueError, match="augment must be one of") as err:
        make_loaders(sp, batch_size=4, augment="heavy")
    assert all(p in str(err.value) for p in AUGMENT_PRESETS)
    with pytest.raises(ValueError, match="batch_size"):
        make_loaders(sp, batch_size=0)
    with pytest.raises(ValueError, match="batch_size=500"):
        make_loaders(sp, batch_size=500)
    with pytest.raises(TypeError, match="splits"):
        make_loaders(sp.train, batch_size=4)
    with pytest.raises(ValueError, match="init_process_group"):
        make_loaders(sp, batch_size=4, distributed=True)


def test_official_validation_split_is_used():
    sp = indexed_splits()
    sp.extras["val"] = indexed_splits(n_train=9).train
    ld = make_loaders(sp, batch_size=4, val_fraction=0.1, drop_last=False)
    assert (ld.n_train, ld.n_val) == (100, 9) and seen(ld.val) == list(range(9))
    assert make_loaders(sp, batch_size=4, val_fraction=0.0).val is None


def test_worker_processes_give_the_same_eval_batches():
    sp = indexed_splits()
    ld = make_loaders(sp, batch_size=16, num_workers=1, seed=2)
    assert seen(ld.test) == list(range(30)) and len(seen(ld.train)) == 80


def test_distributed_samplers_shard_train_val_test(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        sp = indexed_splits()
        ld = make_loaders(sp, batch_size=8, distributed=True, seed=4, drop_last=False)
        assert isinstance(ld.train_sampler, torch.utils.data.DistributedSampler)
        assert isinstance(ld.test.sampler, torch.utils.data.DistributedSampler)
        ld.train_sampler.set_epoch(0)
        e0 = seen(ld.train)
        ld.train_sampler.set_epoch(1)
        e1 = seen(ld.train)
        assert sorted(e0) == sorted(e1) and e0 != e1 and len(e0) == 90
        assert seen(ld.test) == list(range(30))
    finally:
        dist.destroy_process_group()
