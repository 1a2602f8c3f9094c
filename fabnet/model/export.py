"""``fabnet export CKPT OUT.safetensors``: the encoder's weights to share, loadable without pickle.

OUT.safetensors holds the encoder's tensors (``encoder.`` prefix dropped) and, as the format's
string metadata, what rebuilds and explains them: ``format``, ``model_config`` (JSON),
``fabnet_version``, ``checkpoint_sha256``, ``step`` and ``train_config`` (JSON; the run's options,
data root included). OUT.md beside it is the model card a person reads: the network, how it was
trained, on what, and how to load it. ``load_exported_encoder`` rebuilds the ``Encoder``.
"""

from __future__ import annotations

import json
import os

from fabnet.model.checkpoint import checkpoint_width, encoder_from_state, load_checkpoint
from fabnet.model.networks import Encoder

FORMAT = "fabnet-encoder/1"
INSTALL_HINT = "pip install safetensors"


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:
        raise ImportError(f"fabnet export writes safetensors, which is not installed: {INSTALL_HINT}") from None
    return st


def export_encoder(checkpoint: str, out: str, *, command: str | None = None) -> tuple[str, str]:
    """Write the encoder of ``checkpoint`` to ``out`` (.safetensors) and its model card beside it
    (.md); returns both paths."""
    from fabnet import __version__
    from fabnet.probe.embedding_files import file_sha256

    if not out.endswith(".safetensors"):
        raise ValueError(f"OUT must end in .safetensors, got {out!r}")
    st = _safetensors()
    state = load_checkpoint(checkpoint)
    encoder = encoder_from_state(state, checkpoint)  # the one load above serves weights and metadata
    config = {**state["model_config"], "width": checkpoint_width(state)}
    train_config = state.get("train_config") or state.get("baseline_config") or {}
    metadata = {
        "format": FORMAT,
        "model_config": json.dumps(config),
        "fabnet_version": __version__,
        "checkpoint_sha256": file_sha256(checkpoint),
        "step": str(state.get("step", "")),
        "method": state.get("baseline", "fabnet"),
        "train_config": json.dumps(train_config, default=str),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    st.save_file(tensors, out, metadata=metadata)
    card = os.path.splitext(out)[0] + ".md"
    with open(card, "w") as f:
        f.write(model_card(metadata, tensors, checkpoint, out, command))
    return out, card


def load_exported_encoder(path: str, map_location="cpu") -> Encoder:
    """The ``Encoder`` of an exported .safetensors: eval mode, requires_grad False. (B, 3, S, S) -> (B, D)."""
    st = _safetensors()
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a fabnet encoder export (metadata format {metadata.get('format')!r})")
    config = json.loads(metadata["model_config"])
    encoder = Encoder(config["size"], config.get("embedding_dim", 256), width=config["width"])
    encoder.load_state_dict(st.load_file(path, device="cpu"))
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.to(map_location)


def model_card(metadata: dict, tensors: dict, checkpoint: str, out: str, command: str | None) -> str:
    config = json.loads(metadata["model_config"])
    train = json.loads(metadata["train_config"])
    params = sum(t.numel() for t in tensors.values())
    method = metadata["method"]
    what = (
        "FAb-Net's encoder (Wiles, Koepke and Zisserman, BMVC 2018), trained self-supervised on face tracks"
        if method == "fabnet"
        else f"the encoder of the {method!r} baseline of fabnet's study"
    )
    lines = [
        f"# {os.path.basename(out)}",
        "",
        f"{what}: a face crop of {config['size']} x {config['size']} px -> a "
        f"{config.get('embedding_dim', 256)}-d embedding.",
        "",
        "| | |",
        "|---|---|",
        f"| network | pix2pix-style encoder, width {config['width']}, {params:,} parameters |",
        f"| input | RGB in [0, 1], (B, 3, {config['size']}, {config['size']}), the centre 180/256 of a face crop |",
        f"| training steps | {metadata['step'] or 'unknown'} |",
        f"| training data | {train.get('data', 'not recorded')} |",
        f"| checkpoint | {os.path.abspath(checkpoint)} (sha256 {metadata['checkpoint_sha256']}) |",
        f"| fabnet | {metadata['fabnet_version']} |",
        "",
        "## Load",
        "",
        "```python",
        "from fabnet.model.export import load_exported_encoder",
        f'encoder = load_exported_encoder("{os.path.basename(out)}")  # eval mode, frozen',
        "embedding = encoder(frames)  # (B, 3, S, S) -> (B, D)",
        "```",
        "",
        "Without fabnet, `safetensors.torch.load_file` gives the tensors and `safe_open(...).metadata()` the",
        "configuration (`model_config`, `train_config`: JSON strings).",
        "",
        "## Training options",
        "",
        "```json",
        json.dumps(train, indent=2, default=str),
        "```",
    ]
    if command:
        lines += ["", "## Made by", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


__all__ = ["export_encoder", "load_exported_encoder", "FORMAT"]
