"""Cross-identity retrieval by cosine similarity of embeddings (Section 5.3, Figure 5).

For each query, every gallery image of ANOTHER identity is ranked by the cosine similarity of
its embedding to the query's; the top k are returned. Excluding the query's identity is what
makes the result about attributes: within one face track the nearest frames would mostly share
identity, light and background.
"""

from __future__ import annotations

import numpy as np


def cosine_neighbours(
    queries: np.ndarray, gallery: np.ndarray, query_ids, gallery_ids, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery rows per query by cosine similarity, other identities only.

    queries: (Q, D), gallery: (G, D) embeddings; query_ids: (Q,), gallery_ids: (G,) identity
    labels (any comparable values). Returns (index, similarity), both (Q, k), best first; where a
    query has fewer than k candidates the tail is index -1, similarity -inf.
    """
    q = np.asarray(queries, np.float64)
    g = np.asarray(gallery, np.float64)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"queries (Q, D) and gallery (G, D) must share D; got {q.shape} and {g.shape}")
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    sim = qn @ gn.T
    same = np.asarray(query_ids)[:, None] == np.asarray(gallery_ids)[None, :]
    sim[same] = -np.inf
    k_eff = min(k, g.shape[0])
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k_eff]
    top = np.take_along_axis(sim, order, axis=1)
    order = np.where(np.isfinite(top), order, -1)
    if k_eff < k:
        pad = k - k_eff
        order = np.pad(order, ((0, 0), (0, pad)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf)
    return order, top


def _group_centred(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``x`` (N, ...) float64 with each group's mean subtracted from its rows."""
    out = np.array(x, np.float64)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] -= out[rows].mean(0)
    return out


def identity_share(embeddings: np.ndarray, identities) -> float:
    """Fraction of the embedding's total variance that lies between identities, in [0, 1].

    embeddings: (N, D); identities: (N,) labels. 1 - (sum of squared deviations from each
    identity's mean) / (sum of squared deviations from the overall mean), i.e. the R^2 of
    predicting an embedding by its identity's mean. Cosine neighbours of other identities are
    chosen by attributes only when this is small: where it is near 1 the nearest other identity
    is the most similar-looking one, and its frames come first whatever their pose.
    """
    e = np.asarray(embeddings, np.float64)
    ids = np.asarray(identities)
    if e.ndim != 2 or ids.shape != (e.shape[0],):
        raise ValueError(f"embeddings must be (N, D) and identities (N,); got {e.shape} and {ids.shape}")
    total = float(((e - e.mean(0)) ** 2).sum())
    if total == 0.0:
        return 0.0
    within = float((_group_centred(e, ids) ** 2).sum())
    return 1.0 - within / total


def within_track_pose_r2(embeddings: np.ndarray, tracks, pose: np.ndarray) -> float:
    """Fraction of the embedding's frame-to-frame variance that the pose change explains linearly.

    embeddings: (N, D); tracks: (N,) face-track labels; pose: (N, P) angles (rows with a NaN are
    left out). Embeddings and poses are centred within each track (what stays fixed over a track,
    identity included, drops out), then the centred embeddings are regressed on the centred poses
    by least squares; the result is that fit's R^2 in [0, 1]. It says how much of what moves the
    embedding between frames of one face is pose, whatever the between-identity share.
    """
    e = np.asarray(embeddings, np.float64)
    p = np.asarray(pose, np.float64)
    t = np.asarray(tracks)
    if e.ndim != 2 or p.ndim != 2 or t.shape != (e.shape[0],) or p.shape[0] != e.shape[0]:
        raise ValueError(
            f"embeddings must be (N, D), tracks (N,) and pose (N, P); got {e.shape}, {t.shape} and {p.shape}"
        )
    keep = ~np.isnan(p).any(axis=1)
    e, p = _group_centred(e[keep], t[keep]), _group_centred(p[keep], t[keep])
    total = float((e**2).sum())
    if total == 0.0:
        return 0.0
    coef, *_ = np.linalg.lstsq(p, e, rcond=None)
    return 1.0 - float(((e - p @ coef) ** 2).sum()) / total


def pick_queries(identities, count: int, seed: int = 0) -> np.ndarray:
    """``count`` row indices, spread over as many identities as possible (random, reproducible)."""
    ids = np.asarray(identities)
    rng = np.random.default_rng(seed)
    by_id: dict = {}
    for i in rng.permutation(len(ids)):
        by_id.setdefault(ids[i], []).append(int(i))
    picks: list[int] = []
    lists = list(by_id.values())
    rng.shuffle(lists)
    depth = 0
    while len(picks) < min(count, len(ids)):
        for lst in lists:
            if depth < len(lst) and len(picks) < count:
                picks.append(lst[depth])
        depth += 1
    return np.array(picks, np.int64)


def draw_grid(
    paths: list[str], query_idx, neighbour_idx, path: str, *, captions=None, tile: int = 96, title: str | None = None
) -> str:
    """Save a Figure-5 style PNG: one row per query, the query in the first column, then its neighbours.

    paths: image file of every gallery row; query_idx: (Q,), neighbour_idx: (Q, k) rows of
    ``paths`` (-1 = empty tile). captions: optional list of per-row strings under every tile
    (a function row -> str). The query column is framed in red.
    """
    from PIL import Image, ImageDraw

    query_idx = np.asarray(query_idx)
    neighbour_idx = np.asarray(neighbour_idx)
    q, k = neighbour_idx.shape
    cap_h = 12 if captions is not None else 0
    head = 16 + (14 if title else 0)
    gap = 8  # between the query column and the neighbours
    width = (k + 1) * tile + gap
    height = head + q * (tile + cap_h)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0))
    draw.text((4, head - 14), "query", fill=(200, 0, 0))
    draw.text((tile + gap + 4, head - 14), f"top-{k} neighbours (other identities), most similar first", fill=(0, 0, 0))

    def put(row: int, x: int, y: int) -> None:
        with Image.open(paths[row]) as im:
            sheet.paste(im.convert("RGB").resize((tile, tile), Image.BILINEAR), (x, y))
        if captions is not None:
            draw.text((x + 2, y + tile), captions(row), fill=(0, 0, 0))

    for r in range(q):
        y = head + r * (tile + cap_h)
        put(int(query_idx[r]), 0, y)
        draw.rectangle([0, y, tile - 1, y + tile - 1], outline=(220, 0, 0), width=2)
        for c in range(k):
            j = int(neighbour_idx[r, c])
            if j >= 0:
                put(j, tile + gap + c * tile, y)
    # A 256-colour palette: the 6 x 7 grid of 96-px tiles is ~540 KB as RGB PNG, ~150 KB quantised,
    # with no visible loss at this tile size.
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


__all__ = ["cosine_neighbours", "draw_grid", "identity_share", "pick_queries", "within_track_pose_r2"]
