"""Part-level top-down attention (Xiao et al., CVPR 2015, Sec. 4.2).

The DomainNet's mid-level filters (the ``C`` channels of the hooked layer) are grouped into ``k``
part detectors by spectral clustering (``sklearn.cluster.SpectralClustering``, precomputed affinity)
of a filter similarity ``S`` (``C x C``), mapped to ``[0, 1]`` as ``(S + 1) / 2``:

* ``part_similarity="weight"``: the cosine similarity of the filters' weights (the paper's choice);
  the weights are those of the last ungrouped ``Conv2d`` inside the hooked layer with ``C`` outputs;
* ``part_similarity="activation"`` (default, works for any hooked layer): the correlation of the
  filters' responses (spatial maximum per patch) over the training images' kept patches.

Detector ``j`` scores a patch by the mean of its filters' standardised responses; for every image it
picks its best-scoring kept patch. The DomainNet's pooled features of the ``k`` chosen patches are
concatenated (``(N, k * D)``) and a multinomial logistic regression (``sklearn``, L2, ``C=part_c``,
standardised features) trained on the training images gives the part-level probabilities.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from visattn.pipelines.two_level.backbone import HookedClassifier
from visattn.pipelines.two_level.config import TwoLevelConfig
from visattn.pipelines.two_level.crops import iter_image_boxes
from visattn.pipelines.two_level.images import ImageList
from visattn.pipelines.two_level.object import split_boxes

__all__ = ["filter_similarity", "cluster_filters", "detector_scores", "run_part"]


def filter_similarity(
    net: HookedClassifier, responses: torch.Tensor | None = None, *, kind: str = "activation"
) -> torch.Tensor:
    """Similarity ``(C, C)`` in ``[-1, 1]`` of the hooked layer's filters.

    ``kind="activation"`` needs ``responses`` ``(M, C)``; ``kind="weight"`` reads the hooked layer.

    >>> body = nn.Sequential(nn.Conv2d(3, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> net = HookedClassifier(body, "0", num_classes=2)
    >>> filter_similarity(net, kind="weight").shape
    torch.Size([6, 6])
    """
    if kind == "activation":
        if responses is None or responses.ndim != 2 or len(responses) < 2:
            got = None if responses is None else tuple(responses.shape)
            raise ValueError(f"responses must be (M >= 2, C) for activation similarity, got {got}")
        r = responses.float()
        r = r - r.mean(0)
        r = r / r.norm(dim=0).clamp_min(1e-8)
        return (r.T @ r).clamp(-1, 1)
    if kind == "weight":
        layer = net.body.get_submodule(net.hook)
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
        convs = [m for m in convs if m.out_channels == net.mid_channels]
        if not convs:
            raise ValueError(
                f"part_similarity='weight': layer {net.hook!r} holds no ungrouped Conv2d with "
                f"{net.mid_channels} outputs; use part_similarity='activation'"
            )
        w = convs[-1].weight.detach().flatten(1)
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return (w @ w.T).clamp(-1, 1)
    raise ValueError(f"kind must be 'activation' or 'weight', got {kind!r}")


def cluster_filters(similarity: torch.Tensor, k: int, *, seed: int = 0) -> torch.Tensor:
    """Spectral clustering of ``C`` filters into ``k`` groups: ``int64 (C,)`` labels in ``[0, k)``.

    >>> s = torch.eye(4); s[0, 1] = s[1, 0] = s[2, 3] = s[3, 2] = 1.0
    >>> lab = cluster_filters(s, 2)
    >>> bool(lab[0] == lab[1]) and bool(lab[2] == lab[3]) and bool(lab[0] != lab[2])
    True
    """
    from sklearn.cluster import SpectralClustering

    c = similarity.shape[0]
    if similarity.ndim != 2 or similarity.shape[1] != c:
        raise ValueError(f"similarity must be square (C, C), got {tuple(similarity.shape)}")
    if not 1 <= k <= c:
        raise ValueError(f"parts must lie in [1, {c}] (the hooked layer's filters), got {k}")
    if k == 1:
        return torch.zeros(c, dtype=torch.int64)
    affinity = ((similarity.double() + 1) / 2).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "graph is not fully connected" on near-block affinities
        labels = (
            SpectralClustering(k, affinity="precomputed", random_state=seed, assign_labels="discretize")
            .fit(affinity)
            .labels_
        )
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))


def detector_scores(
    responses: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Scores ``(M, k)``: the mean standardised response of each cluster's filters, per patch.

    >>> detector_scores(torch.ones(3, 4), torch.tensor([0, 0, 1, 1]), torch.zeros(4), torch.ones(4)).shape
    torch.Size([3, 2])
    """
    z = (responses.float() - mean) / std
    k = int(labels.max()) + 1
    onehot = torch.nn.functional.one_hot(labels, k).float()
    return z @ (onehot / onehot.sum(0).clamp_min(1))


def run_part(
    cfg: TwoLevelConfig, images: ImageList, filt: dict[str, Any], dom: dict[str, Any], net: HookedClassifier
) -> dict[str, Any]:
    """Part detectors, each image's chosen patches, and the part-level classifier's probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    net.load_state_dict(dom["state_dict"])
    net.eval()
    offs = filt["kept_offsets"]
    owner = torch.repeat_interleave(torch.arange(len(offs) - 1), offs[1:] - offs[:-1])
    tr = images.index("train")
    tr_rows = torch.isin(owner, torch.tensor(tr))
    resp = dom["responses"].float()
    t0 = time.perf_counter()
    sim = filter_similarity(net, resp[tr_rows], kind=cfg.part_similarity)
    labels = cluster_filters(sim, cfg.parts, seed=cfg.seed)
    mean, std = resp[tr_rows].mean(0), resp[tr_rows].std(0).clamp_min(1e-6)
    scores = detector_scores(resp, labels, mean, std)  # (M, k)
    kept = split_boxes(filt["kept_boxes"], offs)
    chosen = torch.stack(
        [kept[i][scores[int(a) : int(b)].argmax(0)] for i, (a, b) in enumerate(zip(offs[:-1], offs[1:]))]
    )  # (N, k, 4)
    cluster_s = time.perf_counter() - t0
    feats = []
    with torch.no_grad():
        for x, _ in iter_image_boxes(images.paths, list(chosen), image_size=cfg.image_size,
                                     patch_size=cfg.patch_size, batch=cfg.batch_size):  # fmt: skip
            feats.append(
                net.forward_all((x.float() / 255.0).contiguous(memory_format=torch.channels_last))["features"]
            )
    f = torch.cat(feats).view(len(chosen), cfg.parts * net.num_features).numpy()
    y = np.asarray(images.labels)
    scaler = StandardScaler().fit(f[tr])
    clf = LogisticRegression(C=cfg.part_c, max_iter=300).fit(scaler.transform(f[tr]), y[tr])
    probs = np.zeros((len(f), images.num_classes), dtype=np.float32)
    probs[:, clf.classes_] = clf.predict_proba(scaler.transform(f))
    val = images.index("val")
    probs_t = torch.from_numpy(probs)
    return {
        "filter_clusters": labels,
        "chosen_boxes": chosen,
        "part_probs": probs_t,
        "stats": {
            "cluster_sizes": torch.bincount(labels, minlength=cfg.parts).tolist(),
            "cluster_seconds": cluster_s,
            "classifier_seconds": time.perf_counter() - t0 - cluster_s,
            "val_top1_part": 100.0
            * int((probs_t[val].argmax(1) == torch.tensor(y[val])).sum())
            / max(1, len(val)),
        },
    }
