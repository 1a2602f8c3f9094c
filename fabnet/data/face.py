"""The synthetic face as geometry: who a person is (``Identity``), what moves in a frame
(``FrameState``), the head's ellipsoid parts and the painted features' curves, and the landmarks
that follow them.

The head is a union of ellipsoids in a head-local frame (x to the subject's left, which is the
image's right for a frontal face; y up; z out of the face towards the camera): cranium, jaw,
nose, two ears and, for long hair, a hair volume behind the head. Neck and shoulders live in a
body frame that does not follow the head's pitch and roll. Eyes, brows, mouth and hairline are
painted on the skin as analytic regions of the local (x, y) plane (fabnet.data.paint), which is
why the landmarks of those features are the points ``(x, y, front_z(x, y))`` on the same surface.
fabnet.data.render ray-casts it.
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

# How far expressions move the features, against the first version of this face. At 32 px
# (the demo's network input) a smile there changed 15 of 1024 pixels and expression was 0.005 of
# the 0.061 mean L1 between two frames of a track; eyes 1.5x taller (eye_h), mouth, smile and
# brow motion 1.8x and the mouth's width change 1.4x make it a visible share (docs/data/).
EXPRESSION_GAIN = 1.8
WIDTH_GAIN = 1.4

# Part ids of the ray caster (order = ellipsoid order in parts()).
CRANIUM, JAW, NOSE, EAR_L, EAR_R, HAIR, NECK, SHOULDERS = range(8)


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
HAIR_COLOURS = np.array(
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
    hair = np.clip(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * u(0.8, 1.2, 3), 0, 1)
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
        eye_h=u(0.11, 0.14) * scale,
        brow_gap=u(0.21, 0.25) * scale,
        brow_th=u(0.028, 0.045) * scale,
        mouth_y=-0.47 * scale,
        mouth_w=u(0.20, 0.26) * scale,
        lip_th=u(0.035, 0.055) * scale,
        bg_base=0.5 * u(0.25, 0.85) + 0.5 * u(0.2, 0.85, 3),  # half grey: muted colours
        bg_freq=freq,
        bg_phase=u(0, 2 * np.pi, n_waves),
        bg_amp=u(-0.08, 0.08, (n_waves, 3)),
    )


def parts(ident: Identity):
    """[(centre (3,), radii (3,), frame)] per part id; frame 0 = head, 1 = body."""
    h = ident.head
    nose_c = np.array([0.0, ident.nose_y, front_z(ident, 0.0, ident.nose_y) - 0.55 * ident.nose[2]])
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


def front_z(ident: Identity, x, y):
    """Local z of the skin surface (cranium or jaw, whichever is in front) above (x, y)."""
    z = np.full(np.shape(x), -np.inf)
    for c, r in ((np.zeros(3), ident.head), (ident.jaw_center, ident.jaw)):
        q = 1.0 - ((x - c[0]) / r[0]) ** 2 - ((y - c[1]) / r[1]) ** 2
        z = np.where(q > 0, np.maximum(z, c[2] + r[2] * np.sqrt(np.maximum(q, 0))), z)
    return z


def mouth_curves(ident: Identity, st: FrameState, x):
    """Mouth geometry at local x: (inside |t| < 1, centre line, upper and lower inner lip, t)."""
    g = EXPRESSION_GAIN
    w = ident.mouth_w * (1.0 + WIDTH_GAIN * (0.25 * st.smile - 0.12 * st.mouth_open))
    t = x / w
    bump = np.clip(1.0 - t**2, 0.0, None)
    line = ident.mouth_y + g * st.smile * (0.10 * t**2 - 0.03)
    upper = line + g * (0.05 * st.mouth_open + 0.018 * st.smile) * bump
    lower = line - g * (0.17 * st.mouth_open + 0.035 * st.smile) * bump**0.8
    return w, line, upper, lower, t, bump


def eye_curves(ident: Identity, st: FrameState, x, side: int):
    """Eye geometry at local x for side -1 (image left) / +1: (centre x, t, top lid, bottom lid)."""
    xc = side * ident.eye_dx
    t = (x - xc) / ident.eye_w
    bump = np.clip(1.0 - t**2, 0.0, None)
    h = ident.eye_h * (1.0 + EXPRESSION_GAIN * 0.15 * st.brows_raised)
    top = ident.eye_y + h * bump * (1.0 - 2.0 * st.eyes_closed)
    bottom = ident.eye_y - 0.8 * h * bump
    return xc, t, top, bottom


def brow_curve(ident: Identity, st: FrameState, x, side: int):
    xc = side * (ident.eye_dx + 0.02)
    t = (x - xc) / (1.2 * ident.eye_w)
    g = EXPRESSION_GAIN
    centre = (
        ident.eye_y
        + ident.brow_gap
        + g * 0.10 * st.brows_raised
        + (0.03 + g * 0.04 * st.brows_raised) * np.clip(1 - t**2, 0, None)
        - g * 0.03 * st.eyes_closed
    )
    return t, centre


def landmarks_3d(ident: Identity, st: FrameState) -> np.ndarray:
    """(L, 3) landmark positions in the head-local frame, following the expression."""
    pts = []
    for side in (-1, 1):  # brows: outer, mid, inner on the left; inner, mid, outer on the right
        xc = side * (ident.eye_dx + 0.02)
        bw = 1.2 * ident.eye_w
        for k in (-0.95, 0.0, 0.85) if side < 0 else (-0.85, 0.0, 0.95):
            _, centre = brow_curve(ident, st, np.asarray(xc + k * bw), side)
            pts.append((xc + k * bw, float(centre)))
    for side, k in ((-1, -1), (-1, 1), (1, -1), (1, 1)):  # eye corners
        pts.append((side * ident.eye_dx + k * ident.eye_w, ident.eye_y))
    for side in (-1, 1):  # lids at the eye centre
        xc, _, top, bottom = eye_curves(ident, st, np.asarray(side * ident.eye_dx), side)
        pts.append((xc, float(np.maximum(top, bottom))))
        pts.append((xc, float(bottom)))
    xy = np.array(pts)
    out = np.concatenate([xy, front_z(ident, xy[:, 0], xy[:, 1])[:, None]], 1).tolist()

    nose_c, nr = parts(ident)[NOSE][:2]
    out.append(list(nose_c + np.array([0, -0.15 * nr[1], nr[2]])))  # nose tip
    base = nose_c + np.array([0.0, -0.95 * nr[1], 0.3 * nr[2]])
    out.append(list(base))

    w, line, upper, lower, _, _ = mouth_curves(ident, st, np.array([-1e-9, 0.0, 0.0]))
    w = float(w)
    corner_y = ident.mouth_y + EXPRESSION_GAIN * st.smile * 0.07  # mouth_curves' line at t = +-1
    mouth = [
        (-w, corner_y),
        (w, corner_y),
        (0.0, float(upper[1]) + ident.lip_th),
        (0.0, float(lower[1]) - 1.3 * ident.lip_th),
    ]
    jc, jr = ident.jaw_center, ident.jaw
    jaw = [(0.0, jc[1] - 0.93 * jr[1]), (-0.8 * jr[0], jc[1] - 0.5 * jr[1]), (0.8 * jr[0], jc[1] - 0.5 * jr[1])]
    xy2 = np.array(mouth + jaw)
    z2 = front_z(ident, xy2[:, 0], xy2[:, 1])
    out += np.concatenate([xy2, z2[:, None]], 1).tolist()
    return np.asarray(out)
