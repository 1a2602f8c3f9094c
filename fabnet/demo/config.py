"""The sizes of a demo run (``DemoConfig``) and of what the demo and the study share; the methods
they compare are fabnet.demo.methods' table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SyntheticRunConfig:
    """What ``fabnet demo`` and ``fabnet study`` share.

    identities, tracks_per_identity, frames_per_track, image_size: the synthetic training data
    (frames are rendered at ``image_size`` and the evaluation crop, 180/256 of the side, is
    resized to ``size``). size: network input side S. probe_identities, probe_frames: the probe
    set. val_every, val_batches: FAb-Net's validation period (steps) and size (batches).
    optimizer, lr, momentum, weight_decay: the recipe of FAb-Net and of the trained baselines.
    probe_*: the linear probes. heatmap_samples: rows of the confidence figure (test tracks).
    seed: draws the training data's people (and, offset, the probe set's). light: the
    generator's light ("head" or "camera", fabnet.data.synth.LIGHTS). device: where every
    network trains and embeds ("cpu", "cuda").
    """

    identities: int = 60
    tracks_per_identity: int = 3
    frames_per_track: int = 16
    image_size: int = 64
    size: int = 32
    # The probe set: people never seen in training, rendered apart (another seed), split by
    # identity 60/10/30 into probe-fit / probe-validation / test. 500 identities give 150 test
    # identities: enough for identity-bootstrap intervals narrower than the gaps between methods.
    probe_identities: int = 500
    probe_frames: int = 4
    val_every: int = 50
    val_batches: int = 8  # x 16 = 128 fixed validation pairs
    # Adam from the identity warp (fabnet.train.config.PAPER has the paper's SGD): the flow
    # decoder's last conv starts near zero, so the warp starts near the no-warp loss and improves.
    optimizer: str = "adam"
    lr: float = 2e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    probe_max_epochs: int = 200
    probe_patience: int = 15
    probe_batch: int = 64
    heatmap_samples: int = 4
    seed: int = 0
    light: str = "head"
    device: str = "cpu"
    name: str = "custom"


@dataclass
class DemoConfig(SyntheticRunConfig):
    """Sizes of one demo run (the shared fields: ``SyntheticRunConfig``; ``seed`` also seeds
    training and probes).

    steps_1src / steps_3src: FAb-Net optimiser steps per stage, batch_1src / batch_3src their
    batch sizes. patience_1src: validation rounds without improvement before stage 1 divides the
    LR by 10; patience: the curriculum's plateau patience in stage 2. ae_steps / ae_batch:
    autoencoder and contrastive encoder. rotation_steps: 0 leaves the rotation baseline out.
    retrieval_queries / retrieval_k: rows and columns of the retrieval figures. oracle_pairs:
    test pairs of the oracle warp budget (fabnet.data.budget).
    """

    steps_1src: int = 2000
    batch_1src: int = 16
    # Stage 2 at batch 16: the curriculum's first window (0-50 % of the sorted losses) is 8 samples.
    # 700 steps (0.40 s each on 2 cores) keep the demo under 15 min: with 1000 it took 935 s.
    steps_3src: int = 700
    batch_3src: int = 16
    patience_1src: int = 16
    patience: int = 16
    ae_steps: int = 2000  # as many as FAb-Net's stage 1 (the contrastive encoder's too)
    ae_batch: int = 16
    oracle_pairs: int = 256
    rotation_steps: int = 0
    retrieval_queries: int = 6
    retrieval_k: int = 6

    @classmethod
    def full(cls) -> DemoConfig:
        return cls(name="full")

    @classmethod
    def quick(cls) -> DemoConfig:
        # Every stage runs, on a toy budget: the numbers of a quick run say nothing about the method.
        return cls(
            identities=24,
            tracks_per_identity=2,
            frames_per_track=8,
            image_size=48,
            size=32,
            probe_identities=40,
            probe_frames=3,
            steps_1src=20,
            batch_1src=8,
            steps_3src=8,
            batch_3src=4,
            val_every=10,
            val_batches=2,
            patience_1src=2,
            ae_steps=20,
            ae_batch=8,
            probe_max_epochs=40,
            probe_patience=8,
            probe_batch=64,
            retrieval_queries=4,
            retrieval_k=5,
            heatmap_samples=3,
            oracle_pairs=16,
            name="quick",
        )


# Split of the probe set by identity: fit the probes / stop their training / test.
PROBE_SPLIT = (0.6, 0.1, 0.3)
# The probe set's people are drawn with this seed offset: fabnet.data.synth draws identity i
# from (seed, i), so another seed gives other people than the training data's.
PROBE_SEED_OFFSET = 10_000

__all__ = ["PROBE_SEED_OFFSET", "PROBE_SPLIT", "DemoConfig", "SyntheticRunConfig"]
