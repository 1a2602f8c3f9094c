"""Where the frame-to-frame change of the synthetic tracks comes from, cause by cause.

    python -m fabnet.data.budget [--pairs 300] [--size 32] [--image-size 64] [--seed 0]

For random pairs of frames (a, b) of the same track, frame a is rendered once as it is and once
with one cause of change taken from frame b (pose, expression, camera framing or light), the
rest of its state kept; both are cropped and resized the way the training loader feeds the
network (the centred 180/256 square, bilinear, to ``size``). The mean L1 (pixel values in
[0, 1]) of each pair of images, averaged over the pairs, is that cause's share of the change; "all"
renders frame b whole. Causes overlap (a pose change moves the mouth too), so the rows need not
sum to "all". The changed-pixel count is the mean number of pixels whose largest channel
difference exceeds 8 / 255.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from fabnet.arguments import int_at_least, require_int
from fabnet.data.face import sample_identity
from fabnet.data.render import render_frame

CAUSES = {
    "all": None,
    "pose": ("yaw", "pitch", "roll", "body_yaw"),
    "expression": ("mouth_open", "smile", "eyes_closed", "brows_raised"),
    "camera": ("zoom", "shift"),
    "light": ("light", "ambient"),
}
CROP = 180 / 256  # the loaders' centre crop (fabnet.data.sampling.crop_box)


def _network_input(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    side = img.shape[0]
    lo = side * (1 - CROP) / 2
    im = Image.fromarray(img).resize((size, size), Image.BILINEAR, box=(lo, lo, side - lo, side - lo))
    return np.asarray(im, dtype=np.float64) / 255.0


def l1_budget(pairs: int = 300, size: int = 32, image_size: int = 64, frames: int = 16, seed: int = 0) -> dict:
    """{"rows": {cause: {"l1": mean, "sem": standard error, "changed_pixels": mean}}, "frames_per_s"}.

    pairs >= 2 (a standard error needs two); size, image_size >= 16 (the renderer's smallest).
    """
    require_int("pairs", pairs, 2)
    require_int("size", size, 16)
    require_int("image_size", image_size, 16)
    require_int("frames", frames, 2)
    from fabnet.data.synth import sample_track

    rng = np.random.default_rng(seed)
    out = {cause: [] for cause in CAUSES}
    changed = {cause: [] for cause in CAUSES}
    rendered, start = 0, time.perf_counter()
    for p in range(pairs):
        ident = sample_identity(np.random.default_rng((seed, p)))
        track = sample_track(np.random.default_rng((seed, p, 0)), frames)
        a, b = rng.choice(frames, 2, replace=False)
        sa, sb = track[a].state, track[b].state
        base = _network_input(render_frame(ident, sa, image_size), size)
        rendered += 1
        for cause, fields in CAUSES.items():
            st = sb if fields is None else dataclasses.replace(sa, **{f: getattr(sb, f) for f in fields})
            img = _network_input(render_frame(ident, st, image_size), size)
            rendered += 1
            diff = np.abs(img - base)
            out[cause].append(diff.mean())
            changed[cause].append((diff.max(-1) > 8 / 255).sum())
    seconds = time.perf_counter() - start
    rows = {
        c: {
            "l1": float(np.mean(v)),
            "sem": float(np.std(v, ddof=1) / np.sqrt(len(v))),
            "changed_pixels": float(np.mean(changed[c])),
        }
        for c, v in out.items()
    }
    return {"rows": rows, "frames_per_s": rendered / seconds, "pairs": pairs, "size": size, "image_size": image_size}


def markdown(budget: dict) -> str:
    rows = budget["rows"]
    total = rows["all"]["l1"]
    lines = [
        f"| cause | mean L1 at {budget['size']} px | ± s.e. | share of all "
        f"| pixels changed (of {budget['size'] ** 2}) |",
        "|---|---|---|---|---|",
    ]
    for cause, r in rows.items():
        lines.append(
            f"| {cause} | {r['l1']:.4f} | {r['sem']:.4f} | {r['l1'] / total:.0%} | {r['changed_pixels']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fabnet.data.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int_at_least(2), default=300, help="frame pairs, >= 2 (default 300)")
    p.add_argument("--size", type=int_at_least(16), default=32, help="network input side (default 32, the demo's)")
    p.add_argument("--image-size", type=int_at_least(16), default=64, help="rendered side (default 64, the demo's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    budget = l1_budget(args.pairs, args.size, args.image_size, seed=args.seed)
    print(markdown(budget))
    print(f"\n{budget['pairs']} pairs; rendering at {args.image_size} px: {budget['frames_per_s']:.1f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
