"""Embedding files in the format their name asks for: ``.npz``, ``.pt`` or ``.parquet``.

Every format holds, per frame: the embedding (D floats), the frame's path and its path relative
to the data root, its identity, its split and its crop box; and once, the provenance: the
checkpoint (path and SHA-256 of its bytes, or the pixel baseline), the data root, the crop, the
splits asked for and the fabnet version.

- ``.npz`` (NumPy, no pickle): arrays ``embeddings`` (N, D) float32, ``paths``, ``relpaths``,
  ``identities``, ``splits`` (N,) str, ``boxes`` (N, 4) and ``provenance`` (a JSON string);
- ``.pt`` (``torch.load(weights_only=True)``): {"format", "provenance", "checkpoint", "splits":
  {split: {"embeddings", "paths", "relpaths", "identities", "boxes"}}};
- ``.parquet`` (pyarrow; pandas, polars, DuckDB and Spark read it): one row per frame, columns
  ``path, relpath, identity, split, box`` (4 floats) and ``embedding`` (D floats); the provenance
  is the schema's ``fabnet`` metadata (JSON).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

FORMATS = (".npz", ".pt", ".parquet")
FORMAT_TAG = "fabnet-embeddings/2"


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def provenance(*, checkpoint: str | None, pixels: int | None, data: str, crop, splits) -> dict:
    """What made the embeddings: enough to make them again and to tell two files apart."""
    from fabnet import __version__

    return {
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None,
        "source": f"pixels:{pixels}" if pixels is not None else "checkpoint",
        "data": os.path.abspath(data),
        "crop": crop,
        "splits": list(splits),
        "fabnet_version": __version__,
    }


def write_embeddings(emb: dict, path: str, info: dict) -> str:
    """Write ``emb`` ({split: Embedded}) to ``path`` in the format of its extension."""
    ext = _extension(path)
    if ext == ".pt":
        from fabnet.probe.pipeline import save_embeddings

        return save_embeddings(emb, path, info["checkpoint"] or info["source"], provenance=info)
    rows = _rows(emb)
    if ext == ".npz":
        with open(path, "wb") as f:
            np.savez(f, **rows, provenance=np.array(json.dumps(info)))
        return path
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("writing .parquet needs pyarrow, which is not installed: pip install pyarrow") from None
    e = rows["embeddings"]
    table = pa.table(
        {
            "path": rows["paths"],
            "relpath": rows["relpaths"],
            "identity": rows["identities"],
            "split": rows["splits"],
            "box": pa.FixedSizeListArray.from_arrays(pa.array(rows["boxes"].ravel().astype(np.float32)), 4),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(e.ravel()), e.shape[1]),
        }
    ).replace_schema_metadata({"fabnet": json.dumps(info)})
    pq.write_table(table, path)
    return path


def read_embeddings(path: str) -> dict:
    """Any of the three formats as {"embeddings" (N, D) float32, "paths", "relpaths", "identities",
    "splits" (N,) str arrays, "boxes" (N, 4), "provenance" dict}."""
    ext = _extension(path)
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        out["provenance"] = json.loads(str(out["provenance"]))
        return out
    if ext == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        d = table.num_columns and table.schema.field("embedding").type.list_size
        return {
            "embeddings": table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, d),
            "paths": np.array(table.column("path").to_pylist()),
            "relpaths": np.array(table.column("relpath").to_pylist()),
            "identities": np.array(table.column("identity").to_pylist()),
            "splits": np.array(table.column("split").to_pylist()),
            "boxes": table.column("box").combine_chunks().flatten().to_numpy().reshape(-1, 4),
            "provenance": json.loads(table.schema.metadata[b"fabnet"]),
        }
    import torch

    blob = torch.load(path, weights_only=True)
    parts = blob["splits"]
    cat = lambda key: np.concatenate([np.asarray(p[key]) for p in parts.values()])  # noqa: E731
    return {
        "embeddings": np.concatenate([p["embeddings"].numpy() for p in parts.values()]),
        "paths": cat("paths"),
        "relpaths": cat("relpaths"),
        "identities": cat("identities"),
        "splits": np.concatenate([p.get("splits", [s] * len(p["paths"])) for s, p in parts.items()]).astype(str),
        "boxes": np.concatenate([p["boxes"].numpy() for p in parts.values()]),
        "provenance": blob.get("provenance"),
    }


def _rows(emb: dict) -> dict:
    parts = list(emb.items())
    return {
        "embeddings": np.concatenate([np.asarray(e.embeddings, np.float32) for _, e in parts]),
        "paths": np.array([p for _, e in parts for p in e.paths]),
        "relpaths": np.array([r.relpath for _, e in parts for r in e.records]),
        "identities": np.array([r.identity for _, e in parts for r in e.records]),
        "splits": np.array([r.split or s for s, e in parts for r in e.records]),
        "boxes": np.concatenate([np.asarray(e.boxes, np.float32).reshape(-1, 4) for _, e in parts]),
    }


def _extension(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        expected = ", ".join(FORMATS)
        raise ValueError(f"embedding file {path!r}: expected a name ending in {expected}, got {ext or 'none'}")
    return ext


__all__ = ["write_embeddings", "read_embeddings", "provenance", "file_sha256", "FORMATS"]
