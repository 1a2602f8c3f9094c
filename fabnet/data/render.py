"""The synthetic face ray-cast with numpy: the image and projected landmarks of one frame.

The face itself (ellipsoid parts, painted features, landmarks) is fabnet.data.face; its colours
fabnet.data.paint.

Every pixel casts one ray per supersample (a pinhole camera at the origin looking along +z);
the nearest ellipsoid hit gives a part, a normal and a local point; colour is albedo times
``ambient + diffuse * max(0, n . l)``. At 64 px with 2x supersampling one frame is about
16k rays against 8 ellipsoids: ~30 ms on one core of a 2-core machine (~180 ms at 128 px), so a
demo data set of a few hundred 64 px frames renders in seconds; ``synthesize(workers=N)`` scales.

Pose conventions (degrees), checked by the tests on the projected landmarks:
    yaw    > 0: the face turns to the image's right (the nose tip moves right)
    pitch  > 0: the face tilts up (the nose tip moves up)
    roll   > 0: the face rotates counter-clockwise in the image
"""

from __future__ import annotations

import numpy as np

from fabnet.data.face import (
    CRANIUM,
    HAIR,
    JAW,
    NECK,
    NOSE,
    SHOULDERS,
    FrameState,
    Identity,
    landmarks_3d,
    parts,
)
from fabnet.data.paint import paint_face, skin_normal, smooth

# The head sits this far from the camera; the focal length makes the crown-to-chin height
# (about 2 units) ~60% of the image side, like a VoxCeleb face crop.
_DISTANCE = 7.0
_FOCAL = 2.05  # in image sides
_HEAD_Y = 0.30  # head centre above the optical axis, so the shoulders fit in the frame


def head_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) head-local to camera axes: roll about z after pitch about x after yaw about y."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    # Local +z (out of the face) must point at the camera, i.e. along camera -z.
    return rz @ rx @ ry @ np.diag([1.0, 1.0, -1.0])


def _camera(size: int, st: FrameState):
    f = _FOCAL * size * st.zoom
    cx = size * (0.5 + st.shift[0])
    cy = size * (0.5 + st.shift[1])
    return f, cx, cy


def _head_pose(st: FrameState):
    return head_rotation(st.yaw, st.pitch, st.roll), np.array([0.0, _HEAD_Y, _DISTANCE])


def _body_pose(st: FrameState):
    return head_rotation(st.body_yaw, 0.0, 0.0), np.array([0.0, _HEAD_Y, _DISTANCE])


def _intersect(ident: Identity, poses, dirs: np.ndarray):
    """The nearest ellipsoid hit of each ray (N, 3) from the camera centre: (the parts, with
    None for a part the identity lacks; part index (N,); ray parameter t (N,), inf on a miss;
    hit (N,) bool). poses: (rotation, position) of the head and of the body."""
    ellipsoids = parts(ident)
    if ident.hair_style != 1:
        ellipsoids[HAIR] = None
    t_all = np.full((len(ellipsoids), dirs.shape[0]), np.inf)
    for i, part in enumerate(ellipsoids):
        if part is None:
            continue
        c, r, frame = part
        rot, pos = poses[frame]
        o = (rot.T @ (-pos) - c) / r
        d = (dirs @ rot) / r  # rows: R^T d
        a = np.einsum("ij,ij->i", d, d)
        b = 2.0 * d @ o
        disc = b * b - 4 * a * (o @ o - 1.0)
        hit = disc > 0
        t = (-b[hit] - np.sqrt(disc[hit])) / (2 * a[hit])
        t_all[i, hit] = np.where(t > 0, t, np.inf)
    part_id = np.argmin(t_all, 0)
    t_near = t_all[part_id, np.arange(dirs.shape[0])]
    return ellipsoids, part_id, t_near, np.isfinite(t_near)


def corresponding_points(ident: Identity, st: FrameState, st_to: FrameState, size: int, xy: np.ndarray) -> np.ndarray:
    """Where the scene point seen at image points ``xy`` of frame ``st`` appears in frame ``st_to``.

    xy: (N, 2) pixel coordinates of a ``size``-px frame (x right, y down; pixel j spans
    [j, j + 1)). Returns (N, 2) in the same units: a point on the face or body moves with its
    part's pose, a background point (a ray direction: the backdrop is at infinity) with the
    camera's zoom and shift only. Visibility in ``st_to`` is not checked: a point turned away
    or hidden there still maps to where it projects, so this is the geometry of the motion
    (the ground truth a warp estimates), not a renderer of the other frame.
    """
    f, cx, cy = _camera(size, st)
    xy = np.asarray(xy, np.float64)
    dirs = np.stack([(xy[:, 0] - cx) / f, -(xy[:, 1] - cy) / f, np.ones(len(xy))], -1)
    poses = (_head_pose(st), _body_pose(st))
    poses_to = (_head_pose(st_to), _body_pose(st_to))
    ellipsoids, part_id, t_near, hit = _intersect(ident, poses, dirs)
    cam = dirs.copy()  # background: the direction itself
    for frame in (0, 1):
        sel = np.nonzero(hit & np.isin(part_id, [i for i, p in enumerate(ellipsoids) if p and p[2] == frame]))[0]
        if sel.size:
            (rot, pos), (rot_to, pos_to) = poses[frame], poses_to[frame]
            local = (dirs[sel] * t_near[sel, None] - pos) @ rot  # (n, 3) in the part's pose frame
            cam[sel] = local @ rot_to.T + pos_to
    f2, cx2, cy2 = _camera(size, st_to)
    return np.stack([cx2 + f2 * cam[:, 0] / cam[:, 2], cy2 - f2 * cam[:, 1] / cam[:, 2]], 1)


def render_frame(ident: Identity, st: FrameState, size: int, supersample: int = 2) -> np.ndarray:
    """Render one frame: (size, size, 3) uint8 RGB.

    The image is ray-cast at ``size * supersample`` and box-filtered down, which anti-aliases
    silhouettes and the painted features alike.
    """
    n = size * supersample
    f, cx, cy = _camera(size, st)
    coords = (np.arange(n) + 0.5) / supersample  # pixel centres in output pixel units
    u, v = np.meshgrid(coords, coords)
    dirs = np.stack([(u - cx) / f, -(v - cy) / f, np.ones_like(u)], -1).reshape(-1, 3)

    poses = (_head_pose(st), _body_pose(st))
    ellipsoids, part_id, t_near, hit = _intersect(ident, poses, dirs)

    # Background: a smooth colour field over ray slopes, so zoom/shift move it like a real scene.
    phase = dirs[:, :2] @ ident.bg_freq.T * 2 * np.pi + ident.bg_phase  # (N, n_waves)
    img = ident.bg_base + np.sin(phase) @ ident.bg_amp

    eps = 0.7 * _DISTANCE / (f * supersample)  # one supersample in local units, at the face
    for i, part in enumerate(ellipsoids):
        sel = np.nonzero(hit & (part_id == i))[0]
        if part is None or sel.size == 0:
            continue
        c, r, frame = part
        rot, pos = poses[frame]
        p_local = (dirs[sel] * t_near[sel, None] - pos) @ rot  # (n, 3) in the part's frame
        if i in (CRANIUM, JAW):
            normal = skin_normal(ident, p_local) @ rot.T
        else:
            normal = ((p_local - c) / r**2) @ rot.T
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        if i in (CRANIUM, JAW):
            albedo = paint_face(ident, st, p_local, eps)
        elif i == NOSE:
            albedo = np.broadcast_to(ident.skin, p_local.shape).copy()
            un = (p_local - c) / r
            for side in (-1, 1):  # nostrils on the underside
                s = np.minimum(0.28 - np.hypot(un[:, 0] - side * 0.42, (un[:, 2] - 0.35) * 0.8), -0.55 - un[:, 1])
                a = smooth(s, 0.08)[:, None]
                albedo = albedo * (1 - a) + np.array([0.2, 0.08, 0.06]) * a
        elif i == HAIR:
            albedo = np.broadcast_to(ident.hair * 0.9, p_local.shape)
        elif i == SHOULDERS:
            albedo = np.broadcast_to(ident.shirt, p_local.shape)
        else:
            albedo = np.broadcast_to(ident.skin * (0.95 if i == NECK else 1.0), p_local.shape)
        shade = st.ambient + (1 - st.ambient) * np.clip(normal @ st.light, 0, None)
        img[sel] = albedo * shade[:, None]

    img = img.reshape(size, supersample, size, supersample, 3).mean((1, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def project_landmarks(ident: Identity, st: FrameState, size: int) -> np.ndarray:
    """(L, 2) landmark pixel coordinates (x right, y down; pixel j spans [j, j + 1))."""
    rot, pos = _head_pose(st)
    cam = landmarks_3d(ident, st) @ rot.T + pos
    f, cx, cy = _camera(size, st)
    return np.stack([cx + f * cam[:, 0] / cam[:, 2], cy - f * cam[:, 1] / cam[:, 2]], 1)
