"""What the decoders read from the target embedding: the warp with that embedding swapped out.

FAb-Net's decoders see nothing but ``concat(emb(source_k), emb(target))``. Keep the sources and
the real target, replace ``emb(target)`` by another frame's embedding, and the L1 of the warped
blend against the real target says what the decoders take from it:

    own                    the target's own embedding: the model as trained
    same_track_other       another frame of the target's track: the same face, another pose
    track_mean             the mean embedding of the track's frames: the face, no particular pose
    other_identity_pose    the frame of another identity closest in pose (|dyaw| + |dpitch| + |droll|)
    other_identity_random  a random frame of another identity
    unwarped               no decoder: the sources unwarped, equal weights (the bar a warp must beat)

If the embedding coded pose the same way for every face, ``other_identity_pose`` would come
close to ``own``; cosine retrieval across identities (``fabnet.probe.retrieval``) relies on
exactly that. Where it is no better than ``unwarped``, the decoders read the pose only relative
to the face's own identity, and cross-identity neighbours are not pose-matched either.
"""

from __future__ import annotations

import numpy as np

CONDITIONS = ("own", "same_track_other", "track_mean", "other_identity_pose", "other_identity_random", "unwarped")


def pose_nearest_other_identity(pose: np.ndarray, identities) -> np.ndarray:
    """(N,) index of the frame of ANOTHER identity closest to each frame in pose (L1 over the angles).

    pose: (N, 3) yaw, pitch, roll in degrees; identities: (N,). -1 where no other identity exists.
    """
    pose = np.asarray(pose, np.float64)
    ids = np.asarray(identities)
    if pose.ndim != 2 or pose.shape[1] != 3 or len(ids) != len(pose):
        raise ValueError(f"pose must be (N, 3) with identities (N,); got {pose.shape} and {ids.shape}")
    dist = np.abs(pose[:, None, :] - pose[None, :, :]).sum(-1)
    dist[ids[:, None] == ids[None, :]] = np.inf
    out = dist.argmin(1)
    out[~np.isfinite(dist.min(1))] = -1
    return out


def _rows_by_track(records) -> dict:
    """{track_key: [row, ...]} in record order."""
    tracks: dict = {}
    for i, r in enumerate(records):
        tracks.setdefault(r.track_key, []).append(i)
    return tracks


def _draw_samples(records, num_sources: int, count: int, rng: np.random.Generator):
    """Up to ``count`` (target row, source rows, other-frame row), every frame a target at most once.

    Targets are drawn in a random order from tracks with >= K + 1 frames; the K sources and the
    other frame are random frames of the target's track other than the target.
    """
    usable = [t for t in _rows_by_track(records).values() if len(t) >= num_sources + 1]
    pairs = [(track, t) for track in usable for t in track]
    samples = []
    for pi in rng.permutation(len(pairs))[:count]:
        track, t = pairs[pi]
        rest = [i for i in track if i != t]
        sources = [int(i) for i in rng.choice(rest, num_sources, replace=False)]
        samples.append((int(t), sources, int(rng.choice(rest))))
    return samples


def target_swap_study(checkpoint: str, records, *, samples: int = 256, seed: int = 0, batch_size: int = 64) -> dict:
    """Mean per-sample L1 of the model's blend under each target-embedding swap (``CONDITIONS``).

    checkpoint: a FAb-Net training checkpoint (any K); records: FrameRecords of held-out
    identities (the candidates for the swaps, and the tracks the samples come from). Up to
    ``samples`` targets, each frame at most once, each with K random other frames of its track as
    sources.
    ``other_identity_pose`` is left out when any record lacks a pose, both other-identity
    conditions when there is a single identity. Returns {"samples", "num_sources", "l1": {...}}.
    """
    import torch

    from fabnet import ops
    from fabnet.arguments import require_int
    from fabnet.model import build_model, load_checkpoint
    from fabnet.model.fabnet import OP_KWARGS
    from fabnet.probe.frames import embed_records, record_crops

    require_int("samples", samples)
    require_int("batch_size", batch_size)
    state = load_checkpoint(checkpoint, "cpu")
    if "model_config" not in state or not any(key.startswith("flow_decoder.") for key in state["model"]):
        raise ValueError(
            f"checkpoint {checkpoint!r} has no flow decoder (a baseline?); the target-swap "
            "study needs a FAb-Net training checkpoint"
        )
    model = build_model(state, checkpoint, op_backend="auto").eval()
    k = model.num_sources
    emb_np, _, kept = embed_records(model.encoder, records, batch_size=batch_size)
    records = [records[i] for i in kept]  # unreadable frames left out (and named) before drawing
    rng = np.random.default_rng(seed)
    drawn = _draw_samples(records, k, samples, rng)
    if not drawn:
        return {}
    emb = torch.from_numpy(emb_np)
    ids = np.array([r.identity for r in records])
    track_mean = {key: emb[rows].mean(0) for key, rows in _rows_by_track(records).items()}
    pose = np.stack([np.asarray(r.pose, np.float64) for r in records])

    targets = np.array([t for t, _, _ in drawn])
    replacements = {
        "own": emb[targets],
        "same_track_other": emb[[o for _, _, o in drawn]],
        "track_mean": torch.stack([track_mean[records[t].track_key] for t in targets]),
    }
    if len(set(ids.tolist())) > 1:
        if not np.isnan(pose).any():
            replacements["other_identity_pose"] = emb[pose_nearest_other_identity(pose, ids)[targets]]
        replacements["other_identity_random"] = emb[[int(rng.choice(np.flatnonzero(ids != ids[t]))) for t in targets]]

    def crops(rows):
        return record_crops([records[i] for i in rows], model.size)

    l1: dict[str, list] = {name: [] for name in list(replacements) + ["unwarped"]}
    with torch.no_grad():
        for lo in range(0, len(drawn), batch_size):
            part = drawn[lo : lo + batch_size]
            target = crops([t for t, _, _ in part])
            sources = crops([s for _, srcs, _ in part for s in srcs]).view(len(part), k, *target.shape[1:])
            v_s = emb[[s for _, srcs, _ in part for s in srcs]].view(len(part), k, -1)
            for name, v_t in replacements.items():
                flows, logits = model.decode(v_t[lo : lo + batch_size], v_s)
                l1[name].append(ops.warp_blend_l1(sources, flows, logits, target, **OP_KWARGS))
            still = torch.zeros(len(part), k, 2, model.size, model.size)
            l1["unwarped"].append(ops.warp_blend_l1(sources, still, None, target, **OP_KWARGS))
    return {
        "samples": len(drawn),
        "num_sources": k,
        "l1": {name: round(float(torch.cat(v).mean()), 7) for name, v in l1.items()},
    }


__all__ = ["CONDITIONS", "pose_nearest_other_identity", "target_swap_study"]
