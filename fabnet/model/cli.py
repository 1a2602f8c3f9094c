"""``fabnet export``: a checkpoint's encoder as .safetensors with a model card (fabnet.model.export)."""

from __future__ import annotations

import os

from fabnet.arguments import existing_file, output_file, refuse_inputs_as_outputs


def cmd_export(args) -> int:
    import shlex

    from fabnet.model.export import export_encoder

    refuse_inputs_as_outputs({"OUT": args.out}, {"CKPT": args.checkpoint})
    command = shlex.join(["fabnet", "export", args.checkpoint, args.out])
    weights, card = export_encoder(args.checkpoint, args.out, command=command)
    size = os.path.getsize(weights) / 2**20
    print(f"wrote the encoder to {weights} ({size:.1f} MiB) and its model card to {card}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="a checkpoint's encoder as .safetensors (no pickle) with a model card",
        description="Write the encoder of CKPT (a fabnet train or study checkpoint) to OUT.safetensors, its "
        "configuration, training options, checkpoint hash and fabnet version in the file's metadata, and a "
        "model card OUT.md beside it. Load it with fabnet.model.load_exported_encoder(OUT).",
    )
    p.add_argument("checkpoint", metavar="CKPT", type=existing_file, help="a checkpoint (RUN/checkpoints/last.pt)")
    p.add_argument("out", metavar="OUT", type=output_file(".safetensors"), help="the .safetensors file to write")
    p.set_defaults(func=cmd_export)


__all__ = ["register"]
