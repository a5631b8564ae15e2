"""The pose task of the training engine: heatmap loss, PCK@0.2, and the pose data loaders.

The engine (``visattn.train.engine``) calls a task object when ``TrainConfig.task == "pose"``:
``task.make_loaders`` (same keywords as ``visattn.data.make_loaders``), ``task.loss(output, target)``
on every training batch, ``task.evaluate(model, loader, device, ...)`` on validation every epoch and on
test once, and selects ``best.pt`` by ``task.metric`` (``"pck"``) on validation.

* Loss (Newell et al. 2016, sec. 3.4: intermediate supervision): the mean squared error between each
  stack's heatmaps ``(B, J, h, w)`` and the Gaussian targets over the joints with a target
  (``visible``), summed over stacks: ``sum_s sum_{b,j} v_bj ||H_s,bj - T_bj||^2 / (h w sum v)``.
* Decoding: the arg-max pixel of each heatmap, moved a quarter pixel towards the higher of its two
  neighbours in x and in y (the usual sub-pixel step), then mapped heatmap -> crop
  (``visattn.data.pose.heatmap_to_crop``) -> image through the sample's ``crop_to_image`` affine.
* PCK@0.2 (LSP's person-centric PCK): a visible joint is correct when its predicted position is within
  ``0.2 x`` the torso diameter, the distance between the right shoulder (joint 8) and the left hip
  (joint 3) of the ground truth, in image pixels. LSPET's invisible joints have no reliable position
  (about 30 % of its people lack a visible right shoulder or left hip), so for them the other diagonal,
  left shoulder (9) <-> right hip (2), is used (``TORSO_FALLBACK``); people with neither pair visible
  are left out and counted (``pck_skipped``). Per joint: correct / visible;
  ``pck`` is the mean over joints of the per-joint values, ``pck_all`` pools all joints (both in %).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from visattn._validate import check_positive
from visattn.data.pose import JOINT_NAMES, PoseDataset, heatmap_to_crop

__all__ = ["PoseTask", "heatmap_loss", "decode_heatmaps", "pck", "TORSO", "TORSO_FALLBACK"]

TORSO = (8, 3)  # right shoulder, left hip
TORSO_FALLBACK = (9, 2)  # left shoulder, right hip: when TORSO is not visible


def _stacks(output: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(output, dict) and "stacks" in output:
        return tuple(output["stacks"])
    if isinstance(output, dict) and "heatmaps" in output:
        return (output["heatmaps"],)
    if isinstance(output, torch.Tensor) and output.ndim == 4:
        return (output,)
    raise TypeError("a pose model must return (B, J, h, w) heatmaps or a dict with 'stacks'/'heatmaps'")


def heatmap_loss(output: Any, heatmaps: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Heatmap MSE over joints with a target, summed over stacks (module docstring).

    >>> t = torch.zeros(1, 2, 4, 4); t[0, 0, 1, 1] = 1
    >>> float(heatmap_loss(torch.zeros(1, 2, 4, 4), t, torch.tensor([[1.0, 0.0]])))
    0.0625
    """
    v = visible.to(heatmaps.dtype)[..., None, None]
    denom = v.sum().clamp(min=1) * heatmaps.shape[-1] * heatmaps.shape[-2]
    total = heatmaps.new_zeros(())
    for h in _stacks(output):
        total = total + ((h.float() - heatmaps).square() * v).sum() / denom
    return total


def decode_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Arg-max with the quarter-pixel step, ``(B, J, h, w) -> (B, J, 2)`` heatmap coordinates ``(x, y)``.

    >>> h = torch.zeros(1, 1, 5, 5); h[0, 0, 2, 3] = 1.0; h[0, 0, 2, 4] = 0.5
    >>> decode_heatmaps(h).tolist()
    [[[3.25, 2.0]]]
    """
    b, j, hh, ww = heatmaps.shape
    flat = heatmaps.reshape(b, j, -1)
    idx = flat.argmax(-1)
    px, py = idx % ww, idx // ww
    hm = heatmaps.reshape(b * j, hh, ww)
    r = torch.arange(b * j, device=heatmaps.device)
    x, y = px.reshape(-1), py.reshape(-1)
    xl, xr = (x - 1).clamp(min=0), (x + 1).clamp(max=ww - 1)
    yu, yd = (y - 1).clamp(min=0), (y + 1).clamp(max=hh - 1)
    dx = torch.sign(hm[r, y, xr] - hm[r, y, xl]) * ((x > 0) & (x < ww - 1))
    dy = torch.sign(hm[r, yd, x] - hm[r, yu, x]) * ((y > 0) & (y < hh - 1))
    out = torch.stack([x.to(heatmaps.dtype) + 0.25 * dx, y.to(heatmaps.dtype) + 0.25 * dy], -1)
    return out.reshape(b, j, 2)


def to_image(coords: torch.Tensor, crop_to_image: torch.Tensor, stride: float) -> torch.Tensor:
    """Heatmap coordinates ``(B, J, 2)`` -> image pixels through the ``(B, 2, 3)`` crop -> image affine."""
    u = heatmap_to_crop(coords, stride)
    return u @ crop_to_image[:, :, :2].transpose(1, 2) + crop_to_image[:, None, :, 2]


def pck(
    pred: torch.Tensor, joints: torch.Tensor, visible: torch.Tensor, *, alpha: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correct and counted joints of PCK@``alpha`` (torso = right shoulder <-> left hip, else the other
    diagonal; module docstring).

    Args:
        pred, joints: ``(B, J, 2)`` predicted and true image coordinates.
        visible: ``(B, J)``, 1 for visible (scored) joints.

    Returns: ``correct (J,)``, ``counted (J,)`` and ``skipped``, the people without a torso size.

    >>> gt = torch.zeros(1, 14, 2); gt[0, 8] = torch.tensor([0.0, 0.0]); gt[0, 3] = torch.tensor([0.0, 50.0])
    >>> pr = gt.clone(); pr[0, 0, 0] = 9.0; pr[0, 1, 0] = 11.0  # threshold 0.2 * 50 = 10 px
    >>> c, n, s = pck(pr, gt, torch.ones(1, 14))
    >>> c[:2].tolist(), n[:2].tolist(), int(s)
    ([1.0, 0.0], [1.0, 1.0], 0)
    """
    check_positive(alpha, "alpha")

    def diagonal(pair: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        size = (joints[:, pair[0]] - joints[:, pair[1]]).norm(dim=-1)  # (B,)
        return size, (visible[:, pair[0]] > 0) & (visible[:, pair[1]] > 0) & (size > 0)

    torso, ok = diagonal(TORSO)
    other, ok2 = diagonal(TORSO_FALLBACK)
    torso = torch.where(ok, torso, other)
    ok = ok | ok2
    counted = (visible > 0) & ok[:, None]
    dist = (pred - joints).norm(dim=-1)
    correct = (dist <= alpha * torso[:, None]) & counted
    return correct.sum(0).double(), counted.sum(0).double(), (~ok).sum().double()


class PoseTask:
    """The engine's pose task (module docstring). ``metric``: the validation key ``best.pt`` maximises."""

    name = "pose"
    metric = "pck"

    def __init__(self, joint_names: Iterable[str] = JOINT_NAMES, alpha: float = 0.2) -> None:
        self.joint_names = list(joint_names)
        self.alpha = alpha

    @property
    def label(self) -> str:
        """The metric as people write it, e.g. ``"PCK@0.2"``."""
        return f"PCK@{self.alpha:g}"

    @staticmethod
    def to_device(y: dict[str, Any], device: torch.device) -> dict[str, Any]:
        return {
            k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in y.items()
        }

    def loss(self, output: Any, y: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, terms)`` of a training batch; ``terms`` hold detached named parts."""
        loss = heatmap_loss(output, y["heatmaps"], y["visible"])
        return loss, {"heatmap_mse": loss.detach()}

    @torch.no_grad()
    def evaluate(
        self,
        model: torch.nn.Module,
        loader: Iterable,
        device: torch.device,
        *,
        amp: bool = False,
        channels_last: bool = False,
        desc: str | None = None,
    ) -> dict[str, float]:
        """Heatmap loss and PCK@alpha (%) over ``loader``, summed over all processes (``desc``: show a
        progress bar with this label)."""
        from visattn._dist import all_reduce_sum

        model.eval()
        j = len(self.joint_names)
        sums = torch.zeros(
            2 * j + 3, dtype=torch.float64, device=device
        )  # correct, counted, loss, n, skipped
        if desc is not None:
            from tqdm import tqdm

            loader = tqdm(loader, desc=desc, unit="batch", mininterval=1.0, leave=False)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), self.to_device(y, device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            stacks = _stacks(out)
            last = stacks[-1].float()
            loss = heatmap_loss(out, y["heatmaps"], y["visible"])
            stride = x.shape[-1] / last.shape[-1]
            pred = to_image(decode_heatmaps(last), y["crop_to_image"], stride)
            c, n, skipped = pck(pred, y["joints"], y["joints_visible"], alpha=self.alpha)
            sums[:j] += c
            sums[j : 2 * j] += n
            sums[2 * j :] += torch.stack(
                [loss.double() * x.shape[0], torch.tensor(float(x.shape[0]), device=device).double(), skipped]
            )
        all_reduce_sum(sums)
        correct, counted = sums[:j], sums[j : 2 * j]
        per = 100 * correct / counted.clamp(min=1)
        valid = counted > 0
        n_img = max(1.0, sums[2 * j + 1].item())
        res: dict[str, float] = {
            "loss": sums[2 * j].item() / n_img,
            "pck": per[valid].mean().item() if bool(valid.any()) else 0.0,
            "pck_all": 100 * correct.sum().item() / max(1.0, counted.sum().item()),
            "n": int(sums[2 * j + 1].item()),
            "pck_skipped": int(sums[2 * j + 2].item()),
        }
        res.update({f"pck_{name}": per[i].item() for i, name in enumerate(self.joint_names)})
        return res

    def make_loaders(
        self,
        splits: Any,
        *,
        batch_size: int,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: str = "default",
        num_workers: int = 0,
        distributed: bool = False,
        limit_train: int | None = None,
        limit_eval: int | None = None,
        eval_batch_size: int | None = None,
    ) -> Any:
        """Train / val / test loaders over a pose dataset's splits (``visattn.data.pose.lspet``).

        Validation: the split file's ``val`` when it has one, else ``val_fraction`` of ``train`` carved
        with ``seed`` (un-augmented). ``augment="none"`` turns the training augmentation off.
        ``limit_eval`` keeps a seeded subset of that many validation and test people.
        """
        from visattn.data.loaders import Loaders, split_indices

        train: Dataset = splits.train
        if not isinstance(train, PoseDataset):
            raise TypeError(
                f"the pose task needs a pose dataset (e.g. data=lspet), got {type(train).__name__}"
            )
        train = train.with_augment(augment != "none")
        val = splits.extras.get("val") if val_fraction > 0 else None
        if val is None and val_fraction > 0:
            tr_idx, va_idx = split_indices(len(train), val_fraction, seed, limit_train=limit_train)
            val = Subset(splits.train.with_augment(False), va_idx.tolist())
            train = Subset(train, tr_idx.tolist())
        elif limit_train is not None:
            tr_idx, _ = split_indices(len(train), 0.0, seed, limit_train=limit_train)
            train = Subset(train, tr_idx.tolist())
        test: Any = splits.test
        if limit_eval is not None:
            check_positive(limit_eval, "limit_eval", integer=True)
            val, test = _seeded_subset(val, limit_eval, seed), _seeded_subset(test, limit_eval, seed + 1)
        eval_bs = eval_batch_size or batch_size
        # distributed: the engine builds its own DistributedSampler over ``train`` and shards val/test
        sampler: DistributedSampler | None = None
        return Loaders(
            train=DataLoader(
                train, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers
            ),
            val=DataLoader(val, batch_size=eval_bs, num_workers=num_workers) if val is not None else None,
            test=DataLoader(test, batch_size=eval_bs, num_workers=num_workers),
            train_sampler=sampler,
            n_train=len(train),  # type: ignore[arg-type]
            n_val=len(val) if val is not None else 0,  # type: ignore[arg-type]
            n_test=len(test),
            augment="pose" if augment != "none" else "none",
        )


def _seeded_subset(ds: Any, n: int, seed: int) -> Any:
    """``n`` samples of ``ds`` drawn with ``seed`` (kept in order), or ``ds`` itself when it is smaller."""
    if ds is None or len(ds) <= n:
        return ds
    gen = torch.Generator().manual_seed(seed)
    return Subset(ds, torch.randperm(len(ds), generator=gen)[:n].sort().values.tolist())


def make_task(name: str) -> PoseTask | None:
    """The task object for ``TrainConfig.task`` (``None``: classification, the engine's own code)."""
    return PoseTask() if name == "pose" else None


class ClassificationScorer:
    """How classification is scored, with the names a task object has: top-1 of
    :func:`visattn.train.evaluate.evaluate` over :func:`visattn.data.make_loaders`' loaders."""

    name = "classification"
    metric = "top1"
    label = "top-1"

    @staticmethod
    def make_loaders(splits: Any, **kwargs: Any) -> Any:
        from visattn.data import make_loaders

        return make_loaders(splits, **kwargs)

    @staticmethod
    def evaluate(
        model: torch.nn.Module, loader: Iterable, device: Any = None, **kwargs: Any
    ) -> dict[str, float]:
        from visattn.train.evaluate import evaluate

        return evaluate(model, loader, device, **kwargs)


def scorer(name: str) -> PoseTask | ClassificationScorer:
    """What scores a model trained for task ``name`` (``TrainConfig.task``, a card's ``task``): its
    ``metric`` (the key of ``evaluate``'s result), ``label``, ``make_loaders`` and ``evaluate``.

    >>> scorer("classification").metric, scorer("pose").label
    ('top1', 'PCK@0.2')
    """
    return make_task(name) or ClassificationScorer()
