"""``python -m fabnet ...`` (also what ``torchrun -m fabnet`` runs)."""

from fabnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
