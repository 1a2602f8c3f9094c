"""``fabnet synth`` (a synthetic data root) and ``fabnet extract-frames`` (a root from videos).

Heavy imports (numpy, Pillow, PyAV) happen inside the command functions so ``fabnet --help``
stays fast.
"""

from __future__ import annotations

import os
import sys

from fabnet.arguments import (
    add_progress_flag,
    existing_file,
    existing_path,
    finite_float,
    int_in,
    positive_int,
    writable_dir,
)


def cmd_synth(args) -> int:
    import time

    from fabnet.data.synth import synthesize

    t0 = time.perf_counter()
    records = synthesize(
        args.out,
        args.identities,
        args.tracks_per_identity,
        args.frames_per_track,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
        progress=args.progress,
        previews=True,
        light=args.light,
    )
    out = os.path.abspath(args.out)
    seconds = time.perf_counter() - t0
    print(
        f"wrote {len(records)} frames of {args.size} px ({args.identities} identities, {args.tracks_per_identity} "
        f"track(s) each, {args.frames_per_track} frames per track) to {out} in {seconds:.1f} s"
    )
    print(f"labels:           {os.path.join(out, 'labels.csv')}")
    print(f"contact sheet:    {os.path.join(out, 'contact_sheet.png')}")
    print(f"landmark preview: {os.path.join(out, 'landmarks.png')}")
    return 0


def cmd_extract_frames(args) -> int:
    from fabnet.data.extract import extract_frames

    try:
        written = extract_frames(args.videos, args.out, fps=args.fps, size=args.size, progress=args.progress)
    except (ImportError, FileNotFoundError, ValueError) as err:
        print(f"fabnet extract-frames: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {written} frames to {os.path.abspath(args.out)} (ROOT/<identity>/<video>/<track>/<frame>.jpg)")
    return 0


def cmd_tracks(args) -> int:
    from fabnet.data.tracks import LABELS, face_tracks

    summary = face_tracks(
        args.videos,
        args.out,
        size=args.size,
        fps=args.fps,
        detect_fps=args.detect_fps,
        margin=args.margin,
        min_face=args.min_face,
        detector=args.detector,
        progress=args.progress,
    )
    out = os.path.abspath(args.out)
    rate = summary.frames_decoded / summary.seconds if summary.seconds > 0 else float("nan")
    print(
        f"{summary.videos_done} video(s) tracked now ({summary.frames_decoded} frames decoded, {summary.detections} "
        f"detected, {rate:.0f} frames/s), {summary.videos_kept} kept from an earlier run, {summary.videos_failed} "
        f"unreadable; {out} holds {summary.tracks} track(s), {summary.crops} crops; boxes in "
        f"{os.path.join(out, LABELS)}"
    )
    return 0


# Frames per second in (0, 1000]: 1000 is above any camera's rate (every frame is kept from fps
# >= the video's rate).
FRAME_RATE = finite_float(0.0, 1000.0, low_open=True)


def _videos_and_out(p) -> None:
    """VIDEOS and OUT, as extract-frames and tracks take them."""
    p.add_argument("videos", metavar="VIDEOS", type=existing_path, help="a video file or a directory of videos")
    p.add_argument("out", metavar="OUT", type=writable_dir, help="output data root")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="render a synthetic face-track data root with pose / landmark / expression labels",
        description="Render procedural talking heads into OUT/<identity>/<video>/<track>/<frame>.jpg with "
        "OUT/labels.csv, plus OUT/contact_sheet.png and OUT/landmarks.png to look at.",
    )
    p.add_argument(
        "out", metavar="OUT", type=writable_dir, help="output directory (created; existing frames are overwritten)"
    )
    p.add_argument("--identities", type=positive_int, default=40, help="number of people (default 40)")
    p.add_argument(
        "--tracks-per-identity", type=positive_int, default=4, help="face tracks per person, one video each (default 4)"
    )
    p.add_argument(
        "--frames-per-track",
        type=positive_int,
        default=16,
        help="frames per track; training needs at least K + 1 (default 16)",
    )
    # 1024: four times the largest training size (256); 100000 would ask for 298 GiB of images.
    p.add_argument(
        "--size",
        type=int_in(16, 1024, "4x the largest training size"),
        default=128,
        help="image side in pixels, 16 to 1024 (default 128)",
    )
    p.add_argument("--seed", type=int, default=0, help="the data set is a function of this seed (default 0)")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="rendering processes; the output does not depend on it (default 1)",
    )
    p.add_argument(
        "--light",
        choices=("head", "camera"),
        default="head",
        help="head: the light turns with the head, so shading moves with the face (default); camera: the light "
        "stays fixed while the head turns (harder: most frame-to-frame change is then no warp)",
    )
    add_progress_flag(p)
    p.set_defaults(func=cmd_synth)

    p = subparsers.add_parser(
        "extract-frames",
        help="build a data root from videos (needs PyAV: pip install av)",
        description="Decode videos at FPS frames per second into OUT/<identity>/<video>/<track>/<frame>.jpg. "
        "VIDEOS is a video file, or a directory of videos laid out as <identity>/<video>.<ext> "
        "(or <identity>/<video>/<track>.<ext>, as VoxCeleb's face tracks); a flat directory "
        "makes one identity per video.",
    )
    _videos_and_out(p)
    p.add_argument(
        "--fps",
        type=FRAME_RATE,
        default=1.0,
        help="frames per second to keep, in (0, 1000] (default 1, as the paper did for VoxCeleb)",
    )
    p.add_argument(
        "--size",
        type=int_in(0, 4096, "4K frames have a 2160 px shorter side"),
        default=0,
        help="resize frames so the shorter side is SIZE px, at most 4096; 0 keeps the video's size (default 0)",
    )
    add_progress_flag(p)
    p.set_defaults(func=cmd_extract_frames)

    p = subparsers.add_parser(
        "tracks",
        help="detect, track and crop the faces of ordinary videos into a data root (needs PyAV and OpenCV)",
        description="Detect faces in DETECT_FPS samples per second of each video (OpenCV's frontal-face cascade, "
        "which ships in its wheel, or --detector MODEL), link them into tracks by overlap and size, break "
        "tracks at shot cuts, smooth and square the boxes with a margin, and write FPS crops per second as "
        "OUT/<identity>/<video>/<track>/<frame>.jpg with each crop's box in OUT/tracks.csv. VIDEOS is a video "
        "file or a directory of <name>.<ext> (one identity per video) or <identity>/<video>.<ext>. Run the "
        "same command again to resume: finished videos are kept; an unreadable video is skipped with a warning.",
    )
    _videos_and_out(p)
    p.add_argument(
        "--size",
        type=int_in(16, 1024, "4x the largest training size"),
        default=256,
        help="crop side in px (default 256)",
    )
    p.add_argument(
        "--fps",
        type=FRAME_RATE,
        default=1.0,
        help="crops kept per second of each track (default 1, as the paper sampled VoxCeleb)",
    )
    p.add_argument(
        "--detect-fps",
        type=FRAME_RATE,
        default=5.0,
        help="frames per second the detector sees, >= --fps; tracks link these (default 5)",
    )
    p.add_argument(
        "--margin",
        type=finite_float(0.0, 2.0),
        default=0.25,
        help="added on each side of the face box, as a fraction of its side (default 0.25: crops 1.5x the box)",
    )
    p.add_argument(
        "--min-face", type=int_in(8, 4096, "a face of the frame's size"), default=32, help="smallest face side in px"
    )
    p.add_argument(
        "--detector",
        metavar="MODEL",
        type=existing_file,
        default=None,
        help="a stronger face detector you have: a YuNet .onnx (cv2.FaceDetectorYN) or an OpenCV cascade .xml "
        "(default: OpenCV's haarcascade_frontalface_alt2, shipped in its wheel)",
    )
    add_progress_flag(p)
    p.set_defaults(func=cmd_tracks)
