"""The face's colours: the albedo painted on the skin (hair, brows, eyes, mouth) and the skin's
shading normals, evaluated at ray hits in the head-local frame (fabnet.data.face)."""

from __future__ import annotations

import numpy as np

from fabnet.data.face import FrameState, Identity, brow_curve, eye_curves, mouth_curves


def smooth(s, eps):
    """Coverage of a region from a signed distance ``s`` (> 0 inside), ramped over ``eps``."""
    return np.clip(s / eps + 0.5, 0.0, 1.0)


def paint_face(ident: Identity, st: FrameState, q: np.ndarray, eps: float) -> np.ndarray:
    """Albedo (N, 3) of skin points ``q`` (N, 3) on cranium/jaw: hair, brows, eyes, mouth."""
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    col = np.broadcast_to(ident.skin, q.shape).copy()
    front = smooth(z, eps)  # features only on the front half

    def blend(alpha, colour):
        nonlocal col
        a = (alpha * front)[:, None]
        col = col * (1 - a) + np.asarray(colour) * a

    # Mouth: lips, then the dark inside with the upper teeth, then the closed-mouth line.
    w, line, upper, lower, t, bump = mouth_curves(ident, st, x)
    in_x = w - np.abs(x)
    lip_u = ident.lip_th * np.sqrt(bump)
    lip_l = 1.3 * ident.lip_th * np.sqrt(bump)
    lips = np.minimum(in_x, np.minimum(y - (lower - lip_l), (upper + lip_u) - y))
    blend(smooth(lips, eps), ident.lips)
    inner = np.minimum(in_x, np.minimum(y - lower, upper - y))
    blend(smooth(inner, eps), (0.25, 0.05, 0.06))
    teeth_h = 0.45 * (upper - lower) * (0.5 + 0.5 * st.smile)
    teeth = np.minimum(inner, y - (upper - teeth_h))
    blend(smooth(teeth, eps) * min(1.0, 2 * (st.smile + st.mouth_open)), (0.93, 0.92, 0.86))
    blend(smooth(np.minimum(in_x, 0.012 - np.abs(y - line)), eps), (0.35, 0.1, 0.1))

    for side in (-1, 1):
        # Eye: sclera, iris, pupil inside the lids; a lash line along the upper lid.
        xc, te, top, bottom = eye_curves(ident, st, x, side)
        in_ex = ident.eye_w * (1 - np.abs(te))
        eye = np.minimum(in_ex, np.minimum(y - bottom, top - y))
        lid = np.minimum(in_ex, np.minimum(y - top, ident.eye_y + ident.eye_h * np.clip(1 - te**2, 0, None) - y))
        blend(smooth(lid, eps) * 0.5, ident.skin * 0.7)
        eye_a = smooth(eye, eps)
        blend(eye_a, (0.96, 0.96, 0.94))
        r_iris = 0.75 * ident.eye_h
        d = np.hypot(x - xc, y - ident.eye_y)
        blend(eye_a * smooth(r_iris - d, eps), ident.iris)
        blend(eye_a * smooth(0.45 * r_iris - d, eps), (0.02, 0.02, 0.02))
        blend(smooth(np.minimum(in_ex, 0.016 - np.abs(y - top)), eps), (0.08, 0.05, 0.05))
        # Brow.
        tb, centre = brow_curve(ident, st, x, side)
        brow = np.minimum(1.2 * ident.eye_w * (1 - np.abs(tb)), ident.brow_th * (1 - 0.4 * tb**2) - np.abs(y - centre))
        blend(smooth(brow, eps), ident.hair * 0.8)

    # Hair on the cranium: above a hairline that drops from the forehead towards the back.
    zn = np.clip(z / ident.head[2], -1, 1)
    hairline = (ident.hairline + ident.hair_tilt * x / ident.head[0]) - 0.45 * (1 - zn)
    if ident.hair_style == 3:  # fringe: low and straight at the front
        hairline = np.minimum(hairline, 0.30 + 0.1 * np.abs(x / ident.head[0]) - 0.45 * (1 - zn))
    hair_a = smooth(y / ident.head[1] - hairline, eps / ident.head[1])
    # Streaks of a period of 0.31 local units: 4.2 pixels at the 32 px network input (crop 180/256
    # of a 64 px frame), 8.4 at 64 px. At 60 cycles per unit they were 1.4 px wide and aliased.
    streak = 0.85 + 0.15 * np.sin(20 * x + 3 * y)
    colour = ident.hair[None, :] * streak[:, None]
    if ident.hair_style == 2:  # buzz cut: the skin shows through
        colour = 0.55 * colour + 0.45 * ident.skin * 0.8
    a = hair_a[:, None]
    return col * (1 - a) + colour * a


def skin_normal(ident: Identity, q: np.ndarray, blend: float = 0.06) -> np.ndarray:
    """(N, 3) local normals of cranium / jaw points ``q`` (N, 3), blended across their seam.

    The normal is the gradient of a smooth union of the two ellipsoids (a softmin of their
    approximate distances with scale ``blend``, in head units): far from the seam it is the
    hit ellipsoid's own normal; near it the two normals mix, so the shading shows a cheek
    instead of the crease a hard union of two ellipsoids leaves from the ear to the chin.
    """
    grads, dists = [], []
    for c, r in ((np.zeros(3), ident.head), (ident.jaw_center, ident.jaw)):
        u = (q - c) / r
        norm = np.linalg.norm(u, axis=1, keepdims=True)
        g = u / r
        grads.append(g / np.linalg.norm(g, axis=1, keepdims=True))
        dists.append((norm[:, 0] - 1.0) * r.min())  # ~ distance outside the surface
    d = np.stack(dists)
    w = np.exp(-(d - d.min(0)) / blend)
    w /= w.sum(0)
    return w[0, :, None] * grads[0] + w[1, :, None] * grads[1]
