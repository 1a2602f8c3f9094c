"""How much of the frame-to-frame change of synthetic tracks a warp can explain.

    python -m fabnet.data.budget [--pairs 300] [--size 32] [--image-size 64] [--light head]
    python -m fabnet.data.budget --oracle ROOT [--checkpoint CKPT] [--pairs 256] [--size 32]

**The oracle** (``oracle_budget``): for pairs (target, source) of frames of one track of a data
root written by ``fabnet synth``, three mean L1s between network inputs (the centred 180/256
crop, resized to ``size`` as the loaders do, pixel values in [0, 1]):

- ``no_warp_l1``: the source itself against the target;
- ``oracle_l1``: the source warped by the true geometry: each target pixel's ray is cast into the
  frame's scene again, its hit point moved with its part's pose into the source frame and
  projected (``fabnet.data.render.corresponding_points``), and the source is sampled there by the
  fused op with FAb-Net's settings (bilinear, border, align_corners=True), the same sampler the
  model's warp uses. What a warp cannot explain (expression, occlusion, what turns into view)
  stays in it;
- ``learned_l1``: a trained 1-source FAb-Net's warp on the same pairs (``checkpoint``);

and ``share`` = (no_warp - learned) / (no_warp - oracle): the part of the best gain any warp
could make that the learned warp makes, with a 95 % interval from a bootstrap over the pairs.

**The cause budget** (``l1_budget``):

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
from fabnet.data.render import corresponding_points, render_frame

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


def l1_budget(
    pairs: int = 300, size: int = 32, image_size: int = 64, frames: int = 16, seed: int = 0, light: str = "head"
) -> dict:
    """{"rows": {cause: {"l1": mean, "sem": standard error, "changed_pixels": mean}}, "frames_per_s"}.

    pairs >= 2 (a standard error needs two); size, image_size >= 16 (the renderer's smallest);
    light: the generator's light setting (fabnet.data.synth.LIGHTS).
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
        track = sample_track(np.random.default_rng((seed, p, 0)), frames, light)
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
    return {
        "rows": rows,
        "frames_per_s": rendered / seconds,
        "pairs": pairs,
        "size": size,
        "image_size": image_size,
        "light": light,
    }


def _track_pairs(records, pairs: int, seed: int) -> list[tuple]:
    """``pairs`` (target, source) records drawn from tracks of two or more frames."""
    tracks: dict = {}
    for r in records:
        tracks.setdefault(r.track_key, []).append(r)
    usable = [t for t in tracks.values() if len(t) >= 2]
    if not usable:
        raise ValueError("the oracle needs tracks of at least 2 frames; this data root has none")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(pairs):
        track = usable[rng.integers(len(usable))]
        a, b = rng.choice(len(track), 2, replace=False)
        out.append((track[a], track[b]))
    return out


def oracle_grid(meta: dict, target, source, box: tuple, size: int) -> np.ndarray:
    """(2, size, size) sampling grid (x, y in align_corners=True units of the source's network
    input) that moves every target pixel to where its scene point lies in the source frame.

    meta: the data root's ``fabnet.data.synth.read_meta``; target, source: FrameRecords of one
    track; box: the (x0, y0, x1, y1) crop of the stored frames that the network input resizes.
    """
    from fabnet.data.synth import render_again

    ident, st_t = render_again(meta, target.identity, target.video, target.frame)
    _, st_s = render_again(meta, source.identity, source.video, source.frame)
    x0, y0, x1, _ = box
    scale = (x1 - x0) / size  # stored pixels per network pixel
    centres = (np.arange(size) + 0.5) * scale
    u, v = np.meshgrid(x0 + centres, y0 + centres)
    xy = corresponding_points(ident, st_t, st_s, meta["size"], np.stack([u.ravel(), v.ravel()], 1))
    # Stored pixels -> network pixel index (centres at integers) -> align_corners=True units.
    p = (xy - np.array([x0, y0])) / scale - 0.5
    return (2 * p / (size - 1) - 1).T.reshape(2, size, size)


def _pair_tensors(meta, pairs, size: int, box):
    import torch

    from fabnet.data.pil_backend import read_crop

    def load(rec):
        return torch.from_numpy(read_crop(rec.path, box, size).copy()).permute(2, 0, 1).float().div_(255.0)

    target = torch.stack([load(t) for t, _ in pairs])
    source = torch.stack([load(s) for _, s in pairs])
    grid = torch.from_numpy(np.stack([oracle_grid(meta, t, s, box, size) for t, s in pairs])).float()
    return target, source, grid


def _learned_l1(checkpoint: str, target, source, batch: int) -> np.ndarray:
    import torch

    from fabnet.model.checkpoint import build_model, load_checkpoint

    model = build_model(load_checkpoint(checkpoint), checkpoint).eval()
    if model.num_sources != 1 or model.size != target.shape[-1]:
        raise ValueError(
            f"the oracle compares a 1-source model at size {target.shape[-1]}; {checkpoint!r} has "
            f"{model.num_sources} sources at size {model.size}"
        )
    with torch.no_grad():
        parts = [model(target[i : i + batch], source[i : i + batch, None]) for i in range(0, len(target), batch)]
    return torch.cat(parts).double().numpy()


def oracle_budget(
    root: str,
    *,
    size: int = 32,
    pairs: int = 256,
    seed: int = 0,
    split: str | None = "test",
    checkpoint=None,
    bootstrap: int = 1000,
) -> dict:
    """{no_warp_l1, oracle_l1, learned_l1, share, share_ci95, ...} (module docstring).

    root: a data root written by ``fabnet synth`` (it reads ``synth.json``); split: the frames
    the pairs come from (None: all); checkpoint: a 1-source FAb-Net at ``size``, or a list of
    them (e.g. one per training seed: ``learned_l1`` is then their mean, with each one's in
    ``learned_l1_each`` and ``share_each``), for ``learned_l1`` and ``share`` (None leaves them
    None). bootstrap: pair resamples of the share's 95 % interval.
    """
    from fabnet import ops
    from fabnet.data.index import load_index
    from fabnet.data.sampling import crop_box
    from fabnet.data.synth import read_meta
    from fabnet.model.fabnet import OP_KWARGS

    require_int("pairs", pairs, 2)
    require_int("size", size, 2)
    meta = read_meta(root)
    records = load_index(root, split)
    if not records:
        raise ValueError(f"split {split!r} of {root!r} has no frames")
    box = crop_box(meta["size"], meta["size"], "center")
    target, source, grid = _pair_tensors(meta, _track_pairs(records, pairs, seed), size, box)
    no_warp = (source - target).abs().flatten(1).mean(1).double().numpy()
    kwargs = dict(OP_KWARGS, residual=False)  # the oracle gives where to sample, not an offset
    oracle = ops.warp_blend_l1(source[:, None], grid[:, None], None, target, **kwargs).double().numpy()
    out = {
        "no_warp_l1": float(no_warp.mean()),
        "oracle_l1": float(oracle.mean()),
        "learned_l1": None,
        "share": None,
        "share_ci95": None,
        "oracle_gain_pct": float(100 * (1 - oracle.mean() / no_warp.mean())),
        "pairs": pairs,
        "size": size,
        "split": split,
        "light": meta["light"],
    }
    if checkpoint is None:
        return out
    each = [_learned_l1(c, target, source, 64) for c in ([checkpoint] if isinstance(checkpoint, str) else checkpoint)]
    learned = np.mean(each, axis=0)

    def share(rows, learned=learned):
        no, orc = no_warp[rows].mean(-1), oracle[rows].mean(-1)
        return (no - learned[rows].mean(-1)) / (no - orc)

    rows = np.random.default_rng(seed).integers(0, pairs, (bootstrap, pairs))
    lo, hi = np.percentile(share(rows), [2.5, 97.5]) if bootstrap else (np.nan, np.nan)
    everything = np.arange(pairs)
    out.update(
        learned_l1=float(learned.mean()),
        share=float(share(everything)),
        share_ci95=[float(lo), float(hi)],
        learned_l1_each=[float(e.mean()) for e in each],
        share_each=[float(share(everything, e)) for e in each],
    )
    return out


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


def oracle_markdown(o: dict) -> str:
    """The oracle budget as a Markdown table (learned rows only with a checkpoint)."""
    lines = [
        f"| at {o['size']} px, {o['pairs']} pairs of {o['split'] or 'all'} frames ({o['light']} light) | mean L1 |",
        "|---|---|",
        f"| not warping | {o['no_warp_l1']:.4f} |",
        f"| exact-geometry warp (oracle) | {o['oracle_l1']:.4f} ({o['oracle_gain_pct']:.0f} % below not warping) |",
    ]
    if o["learned_l1"] is not None:
        lo, hi = o["share_ci95"]
        lines.append(
            f"| learned warp | {o['learned_l1']:.4f}: {100 * o['share']:.0f} % of the oracle's gain "
            f"[{100 * lo:.0f}, {100 * hi:.0f}] |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fabnet.data.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int_at_least(2), default=300, help="frame pairs, >= 2 (default 300)")
    p.add_argument("--size", type=int_at_least(16), default=32, help="network input side (default 32, the demo's)")
    p.add_argument("--image-size", type=int_at_least(16), default=64, help="rendered side (default 64, the demo's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--light", choices=("head", "camera"), default="head", help="the generator's light (default head)")
    p.add_argument("--oracle", metavar="ROOT", help="the oracle budget of a data root written by `fabnet synth`")
    p.add_argument("--split", default="test", help="with --oracle: the frames the pairs come from (default test)")
    p.add_argument("--checkpoint", help="with --oracle: a 1-source FAb-Net checkpoint, for its share of the gain")
    args = p.parse_args(argv)
    if args.oracle:
        o = oracle_budget(
            args.oracle, size=args.size, pairs=args.pairs, seed=args.seed, split=args.split, checkpoint=args.checkpoint
        )
        print(oracle_markdown(o))
        return 0
    budget = l1_budget(args.pairs, args.size, args.image_size, seed=args.seed, light=args.light)
    print(markdown(budget))
    print(f"\n{budget['pairs']} pairs; rendering at {args.image_size} px: {budget['frames_per_s']:.1f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
