"""A procedural 3D head, ray-cast with numpy: the image and landmarks of one synthetic frame.

The head is a union of ellipsoids in a head-local frame (x to the subject's left, which is the
image's right for a frontal face; y up; z out of the face towards the camera): cranium, jaw,
nose, two ears and, for long hair, a hair volume behind the head. Neck and shoulders live in a
body frame that does not follow the head's pitch and roll, so the head's pose is also visible
against the body. Eyes, brows, mouth and hairline are painted on the skin as analytic regions
of the local (x, y) plane (an orthographic texture along local z), which is why the landmarks of
those features are the points ``(x, y, front_z(x, y))`` on the same surface.

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

from dataclasses import dataclass

import numpy as np

# Landmarks, named from the viewer's side of a frontal face ("l" = image left).
LANDMARK_NAMES = (
    "brow_l_outer", "brow_l_mid", "brow_l_inner", "brow_r_inner", "brow_r_mid", "brow_r_outer",
    "eye_l_outer", "eye_l_inner", "eye_r_inner", "eye_r_outer",
    "eye_l_top", "eye_l_bottom", "eye_r_top", "eye_r_bottom",
    "nose_tip", "nose_base",
    "mouth_l", "mouth_r", "lip_upper", "lip_lower",
    "chin", "jaw_l", "jaw_r",
)  # fmt: skip
EYE_CORNERS = (6, 7, 8, 9)  # outer-left, inner-left, inner-right, outer-right
OUTER_EYE_CORNERS = (6, 9)  # the inter-ocular distance of 300-W / MAFL style evaluation
NOSE_TIP = 14
MOUTH_CORNERS = (16, 17)

# Part ids of the ray caster (order = ellipsoid order in _parts()).
_CRANIUM, _JAW, _NOSE, _EAR_L, _EAR_R, _HAIR, _NECK, _SHOULDERS = range(8)
_SKIN_PARTS = (_CRANIUM, _JAW, _NOSE, _EAR_L, _EAR_R, _NECK)

# The head sits this far from the camera; the focal length makes the crown-to-chin height
# (about 2 units) ~60% of the image side, like a VoxCeleb face crop.
_DISTANCE = 7.0
_FOCAL = 2.05  # in image sides
_HEAD_Y = 0.30  # head centre above the optical axis, so the shoulders fit in the frame


@dataclass(frozen=True)
class Identity:
    """What stays fixed for one synthetic person (units: head-local, cranium half-width ~0.75)."""

    head: np.ndarray  # (3,) cranium radii
    jaw: np.ndarray  # (3,) jaw radii
    jaw_center: np.ndarray  # (3,)
    nose: np.ndarray  # (3,) nose radii
    nose_y: float
    ear: np.ndarray  # (3,) ear radii
    skin: np.ndarray  # (3,) RGB in [0, 1]
    lips: np.ndarray  # (3,)
    hair: np.ndarray  # (3,)
    hair_style: int  # 0 short, 1 long, 2 buzz cut, 3 fringe
    hairline: float  # height of the front hairline, in units of the cranium's y radius
    hair_tilt: float  # side parting: the hairline's slope in x
    iris: np.ndarray  # (3,)
    shirt: np.ndarray  # (3,)
    eye_dx: float  # half the distance between the eye centres
    eye_y: float
    eye_w: float  # eye half-width
    eye_h: float  # eye half-height when open
    brow_gap: float  # brow height above the eye centre
    brow_th: float  # brow half-thickness
    mouth_y: float
    mouth_w: float  # mouth half-width
    lip_th: float
    bg_base: np.ndarray  # (3,) background colour
    bg_freq: np.ndarray  # (n, 2) background wave vectors, cycles per unit of ray slope
    bg_phase: np.ndarray  # (n,)
    bg_amp: np.ndarray  # (n, 3)


@dataclass(frozen=True)
class FrameState:
    """What moves within a track: pose (degrees), expression intensities in [0, 1], lighting, camera."""

    yaw: float
    pitch: float
    roll: float
    mouth_open: float
    smile: float
    eyes_closed: float
    brows_raised: float
    light: np.ndarray  # (3,) unit vector towards the light, camera frame (-z faces the camera)
    ambient: float
    zoom: float  # focal length multiplier
    shift: np.ndarray  # (2,) principal point offset, in image sides
    body_yaw: float  # degrees


_SKIN_TONES = np.array(
    [[0.96, 0.80, 0.69], [0.92, 0.72, 0.58], [0.83, 0.62, 0.47], [0.70, 0.50, 0.36],
     [0.55, 0.38, 0.26], [0.40, 0.27, 0.19], [0.98, 0.86, 0.76]]
)  # fmt: skip
_HAIR_COLOURS = np.array(
    [[0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.45, 0.30, 0.15], [0.85, 0.70, 0.40],
     [0.60, 0.25, 0.10], [0.70, 0.70, 0.72], [0.15, 0.12, 0.12]]
)  # fmt: skip
_IRIS_COLOURS = np.array([[0.30, 0.18, 0.08], [0.15, 0.35, 0.60], [0.25, 0.45, 0.25], [0.12, 0.08, 0.05]])


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person: face shape, colours, hair, eye spacing and a background texture."""
    u = rng.uniform
    scale = u(0.92, 1.08)
    head = np.array([0.76 * u(0.92, 1.08), 0.95, 0.86]) * scale
    jaw = np.array([0.64 * u(0.85, 1.1), 0.70 * u(0.9, 1.1), 0.74]) * scale
    skin = np.clip(_SKIN_TONES[rng.integers(len(_SKIN_TONES))] * u(0.93, 1.05, 3), 0, 1)
    hair = np.clip(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * u(0.8, 1.2, 3), 0, 1)
    n_waves = 5
    angle = u(0, np.pi, n_waves)
    freq = u(1.5, 9.0, n_waves)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return Identity(
        head=head,
        jaw=jaw,
        jaw_center=np.array([0.0, -0.36 * scale, 0.06 * scale]),
        nose=np.array([0.12 * u(0.85, 1.2), 0.24 * u(0.9, 1.15), 0.20 * u(0.85, 1.2)]) * scale,
        nose_y=-0.12 * scale,
        ear=np.array([0.08, 0.21 * u(0.9, 1.1), 0.13]) * scale,
        skin=skin,
        lips=np.clip(skin * np.array([0.85, 0.45, 0.45]) + np.array([0.12, 0.0, 0.02]), 0, 1),
        hair=hair,
        hair_style=int(rng.integers(4)),
        hairline=u(0.42, 0.58),
        hair_tilt=u(-0.15, 0.15),
        iris=_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))],
        shirt=u(0.1, 0.9, 3),
        eye_dx=u(0.26, 0.34) * scale,
        eye_y=0.10 * scale,
        eye_w=u(0.13, 0.16) * scale,
        eye_h=u(0.075, 0.095) * scale,
        brow_gap=u(0.15, 0.19) * scale,
        brow_th=u(0.028, 0.045) * scale,
        mouth_y=-0.47 * scale,
        mouth_w=u(0.20, 0.26) * scale,
        lip_th=u(0.035, 0.055) * scale,
        bg_base=0.5 * u(0.25, 0.85) + 0.5 * u(0.2, 0.85, 3),  # half grey: muted colours
        bg_freq=freq,
        bg_phase=u(0, 2 * np.pi, n_waves),
        bg_amp=u(-0.08, 0.08, (n_waves, 3)),
    )


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) head-local to camera axes: roll about z after pitch about x after yaw about y."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    # Local +z (out of the face) must point at the camera, i.e. along camera -z.
    return rz @ rx @ ry @ np.diag([1.0, 1.0, -1.0])


def _parts(ident: Identity):
    """[(centre (3,), radii (3,), frame)] per part id; frame 0 = head, 1 = body."""
    h = ident.head
    nose_c = np.array([0.0, ident.nose_y, _front_z(ident, 0.0, ident.nose_y) - 0.55 * ident.nose[2]])
    return [
        (np.zeros(3), h, 0),
        (ident.jaw_center, ident.jaw, 0),
        (nose_c, ident.nose, 0),
        (np.array([-0.97 * h[0], -0.02, -0.05]), ident.ear, 0),
        (np.array([0.97 * h[0], -0.02, -0.05]), ident.ear, 0),
        (np.array([0.0, -0.45, -0.32]), np.array([1.08 * h[0], 1.25 * h[1], 0.75 * h[2]]), 0),
        (np.array([0.0, -1.05, -0.05]), np.array([0.36, 0.75, 0.36]), 1),
        (np.array([0.0, -2.15, -0.1]), np.array([1.55, 0.62, 0.75]), 1),
    ]


def _front_z(ident: Identity, x, y):
    """Local z of the skin surface (cranium or jaw, whichever is in front) above (x, y)."""
    z = np.full(np.shape(x), -np.inf)
    for c, r in ((np.zeros(3), ident.head), (ident.jaw_center, ident.jaw)):
        q = 1.0 - ((x - c[0]) / r[0]) ** 2 - ((y - c[1]) / r[1]) ** 2
        z = np.where(q > 0, np.maximum(z, c[2] + r[2] * np.sqrt(np.maximum(q, 0))), z)
    return z


def _smooth(s, eps):
    """Coverage of a region from a signed distance ``s`` (> 0 inside), ramped over ``eps``."""
    return np.clip(s / eps + 0.5, 0.0, 1.0)


def _mouth_curves(ident: Identity, st: FrameState, x):
    """Mouth geometry at local x: (inside |t| < 1, centre line, upper and lower inner lip, t)."""
    w = ident.mouth_w * (1.0 + 0.25 * st.smile - 0.12 * st.mouth_open)
    t = x / w
    bump = np.clip(1.0 - t**2, 0.0, None)
    line = ident.mouth_y + st.smile * (0.10 * t**2 - 0.03)
    upper = line + (0.05 * st.mouth_open + 0.018 * st.smile) * bump
    lower = line - (0.17 * st.mouth_open + 0.035 * st.smile) * bump**0.8
    return w, line, upper, lower, t, bump


def _eye_curves(ident: Identity, st: FrameState, x, side: int):
    """Eye geometry at local x for side -1 (image left) / +1: (centre x, t, top lid, bottom lid)."""
    xc = side * ident.eye_dx
    t = (x - xc) / ident.eye_w
    bump = np.clip(1.0 - t**2, 0.0, None)
    h = ident.eye_h * (1.0 + 0.15 * st.brows_raised)
    top = ident.eye_y + h * bump * (1.0 - 2.0 * st.eyes_closed)
    bottom = ident.eye_y - 0.8 * h * bump
    return xc, t, top, bottom


def _brow_curve(ident: Identity, st: FrameState, x, side: int):
    xc = side * (ident.eye_dx + 0.02)
    t = (x - xc) / (1.2 * ident.eye_w)
    centre = (ident.eye_y + ident.brow_gap + 0.10 * st.brows_raised
              + (0.03 + 0.04 * st.brows_raised) * np.clip(1 - t**2, 0, None)
              - 0.03 * st.eyes_closed)  # fmt: skip
    return t, centre


def _paint_face(ident: Identity, st: FrameState, q: np.ndarray, eps: float) -> np.ndarray:
    """Albedo (N, 3) of skin points ``q`` (N, 3) on cranium/jaw: hair, brows, eyes, mouth."""
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    col = np.broadcast_to(ident.skin, q.shape).copy()
    front = _smooth(z, eps)  # features only on the front half

    def blend(alpha, colour):
        nonlocal col
        a = (alpha * front)[:, None]
        col = col * (1 - a) + np.asarray(colour) * a

    # Mouth: lips, then the dark inside with the upper teeth, then the closed-mouth line.
    w, line, upper, lower, t, bump = _mouth_curves(ident, st, x)
    in_x = w - np.abs(x)
    lip_u = ident.lip_th * np.sqrt(bump)
    lip_l = 1.3 * ident.lip_th * np.sqrt(bump)
    lips = np.minimum(in_x, np.minimum(y - (lower - lip_l), (upper + lip_u) - y))
    blend(_smooth(lips, eps), ident.lips)
    inner = np.minimum(in_x, np.minimum(y - lower, upper - y))
    blend(_smooth(inner, eps), (0.25, 0.05, 0.06))
    teeth_h = 0.45 * (upper - lower) * (0.5 + 0.5 * st.smile)
    teeth = np.minimum(inner, y - (upper - teeth_h))
    blend(_smooth(teeth, eps) * min(1.0, 2 * (st.smile + st.mouth_open)), (0.93, 0.92, 0.86))
    blend(_smooth(np.minimum(in_x, 0.012 - np.abs(y - line)), eps), (0.35, 0.1, 0.1))

    for side in (-1, 1):
        # Eye: sclera, iris, pupil inside the lids; a lash line along the upper lid.
        xc, te, top, bottom = _eye_curves(ident, st, x, side)
        in_ex = ident.eye_w * (1 - np.abs(te))
        eye = np.minimum(in_ex, np.minimum(y - bottom, top - y))
        lid = np.minimum(in_ex, np.minimum(y - top, ident.eye_y + ident.eye_h * np.clip(1 - te**2, 0, None) - y))
        blend(_smooth(lid, eps) * 0.5, ident.skin * 0.7)
        eye_a = _smooth(eye, eps)
        blend(eye_a, (0.96, 0.96, 0.94))
        r_iris = 0.75 * ident.eye_h
        d = np.hypot(x - xc, y - ident.eye_y)
        blend(eye_a * _smooth(r_iris - d, eps), ident.iris)
        blend(eye_a * _smooth(0.45 * r_iris - d, eps), (0.02, 0.02, 0.02))
        blend(_smooth(np.minimum(in_ex, 0.016 - np.abs(y - top)), eps), (0.08, 0.05, 0.05))
        # Brow.
        tb, centre = _brow_curve(ident, st, x, side)
        brow = np.minimum(1.2 * ident.eye_w * (1 - np.abs(tb)), ident.brow_th * (1 - 0.4 * tb**2) - np.abs(y - centre))
        blend(_smooth(brow, eps), ident.hair * 0.8)

    # Hair on the cranium: above a hairline that drops from the forehead towards the back.
    zn = np.clip(z / ident.head[2], -1, 1)
    hairline = (ident.hairline + ident.hair_tilt * x / ident.head[0]) - 0.45 * (1 - zn)
    if ident.hair_style == 3:  # fringe: low and straight at the front
        hairline = np.minimum(hairline, 0.30 + 0.1 * np.abs(x / ident.head[0]) - 0.45 * (1 - zn))
    hair_a = _smooth(y / ident.head[1] - hairline, eps / ident.head[1])
    streak = 0.85 + 0.15 * np.sin(60 * x + 9 * y)
    colour = ident.hair[None, :] * streak[:, None]
    if ident.hair_style == 2:  # buzz cut: the skin shows through
        colour = 0.55 * colour + 0.45 * ident.skin * 0.8
    a = hair_a[:, None]
    return col * (1 - a) + colour * a


def _skin_normal(ident: Identity, q: np.ndarray, blend: float = 0.06) -> np.ndarray:
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


def _camera(size: int, st: FrameState):
    f = _FOCAL * size * st.zoom
    cx = size * (0.5 + st.shift[0])
    cy = size * (0.5 + st.shift[1])
    return f, cx, cy


def _head_pose(st: FrameState):
    return _rotation(st.yaw, st.pitch, st.roll), np.array([0.0, _HEAD_Y, _DISTANCE])


def _body_pose(st: FrameState):
    return _rotation(st.body_yaw, 0.0, 0.0), np.array([0.0, _HEAD_Y, _DISTANCE])


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
    parts = _parts(ident)
    if ident.hair_style != 1:
        parts[_HAIR] = None
    t_all = np.full((len(parts), dirs.shape[0]), np.inf)
    for i, part in enumerate(parts):
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
    hit = np.isfinite(t_near)

    # Background: a smooth colour field over ray slopes, so zoom/shift move it like a real scene.
    phase = dirs[:, :2] @ ident.bg_freq.T * 2 * np.pi + ident.bg_phase  # (N, n_waves)
    img = ident.bg_base + np.sin(phase) @ ident.bg_amp

    eps = 0.7 * _DISTANCE / (f * supersample)  # one supersample in local units, at the face
    for i, part in enumerate(parts):
        sel = np.nonzero(hit & (part_id == i))[0]
        if part is None or sel.size == 0:
            continue
        c, r, frame = part
        rot, pos = poses[frame]
        p_local = (dirs[sel] * t_near[sel, None] - pos) @ rot  # (n, 3) in the part's frame
        if i in (_CRANIUM, _JAW):
            normal = _skin_normal(ident, p_local) @ rot.T
        else:
            normal = ((p_local - c) / r**2) @ rot.T
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        if i in (_CRANIUM, _JAW):
            albedo = _paint_face(ident, st, p_local, eps)
        elif i == _NOSE:
            albedo = np.broadcast_to(ident.skin, p_local.shape).copy()
            un = (p_local - c) / r
            for side in (-1, 1):  # nostrils on the underside
                s = np.minimum(0.28 - np.hypot(un[:, 0] - side * 0.42, (un[:, 2] - 0.35) * 0.8), -0.55 - un[:, 1])
                a = _smooth(s, 0.08)[:, None]
                albedo = albedo * (1 - a) + np.array([0.2, 0.08, 0.06]) * a
        elif i == _HAIR:
            albedo = np.broadcast_to(ident.hair * 0.9, p_local.shape)
        elif i == _SHOULDERS:
            albedo = np.broadcast_to(ident.shirt, p_local.shape)
        else:
            albedo = np.broadcast_to(ident.skin * (0.95 if i == _NECK else 1.0), p_local.shape)
        shade = st.ambient + (1 - st.ambient) * np.clip(normal @ st.light, 0, None)
        img[sel] = albedo * shade[:, None]

    img = img.reshape(size, supersample, size, supersample, 3).mean((1, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def landmarks_3d(ident: Identity, st: FrameState) -> np.ndarray:
    """(L, 3) landmark positions in the head-local frame, following the expression."""
    pts = []
    for side in (-1, 1):  # brows: outer, mid, inner on the left; inner, mid, outer on the right
        xc = side * (ident.eye_dx + 0.02)
        bw = 1.2 * ident.eye_w
        for k in (-0.95, 0.0, 0.85) if side < 0 else (-0.85, 0.0, 0.95):
            _, centre = _brow_curve(ident, st, np.asarray(xc + k * bw), side)
            pts.append((xc + k * bw, float(centre)))
    for side, k in ((-1, -1), (-1, 1), (1, -1), (1, 1)):  # eye corners
        pts.append((side * ident.eye_dx + k * ident.eye_w, ident.eye_y))
    for side in (-1, 1):  # lids at the eye centre
        xc, _, top, bottom = _eye_curves(ident, st, np.asarray(side * ident.eye_dx), side)
        pts.append((xc, float(np.maximum(top, bottom))))
        pts.append((xc, float(bottom)))
    xy = np.array(pts)
    out = np.concatenate([xy, _front_z(ident, xy[:, 0], xy[:, 1])[:, None]], 1).tolist()

    nose_c, nr = _parts(ident)[_NOSE][:2]
    out.append(list(nose_c + np.array([0, -0.15 * nr[1], nr[2]])))  # nose tip
    base = nose_c + np.array([0.0, -0.95 * nr[1], 0.3 * nr[2]])
    out.append(list(base))

    w, line, upper, lower, _, _ = _mouth_curves(ident, st, np.array([-1e-9, 0.0, 0.0]))
    w = float(w)
    corner_y = ident.mouth_y + st.smile * 0.07
    mouth = [
        (-w, corner_y),
        (w, corner_y),
        (0.0, float(upper[1]) + ident.lip_th),
        (0.0, float(lower[1]) - 1.3 * ident.lip_th),
    ]
    jc, jr = ident.jaw_center, ident.jaw
    jaw = [(0.0, jc[1] - 0.93 * jr[1]), (-0.8 * jr[0], jc[1] - 0.5 * jr[1]), (0.8 * jr[0], jc[1] - 0.5 * jr[1])]
    xy2 = np.array(mouth + jaw)
    z2 = _front_z(ident, xy2[:, 0], xy2[:, 1])
    out += np.concatenate([xy2, z2[:, None]], 1).tolist()
    return np.asarray(out)


def project_landmarks(ident: Identity, st: FrameState, size: int) -> np.ndarray:
    """(L, 2) landmark pixel coordinates (x right, y down; pixel j spans [j, j + 1))."""
    rot, pos = _head_pose(st)
    cam = landmarks_3d(ident, st) @ rot.T + pos
    f, cx, cy = _camera(size, st)
    return np.stack([cx + f * cam[:, 0] / cam[:, 2], cy - f * cam[:, 1] / cam[:, 2]], 1)
