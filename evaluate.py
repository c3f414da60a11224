"""Evaluate PRNet: ``python evaluate.py ...`` runs ``prnet-evaluate`` (code and --help: prnet/cli/evaluate.py)."""

from prnet.cli.evaluate import run

if __name__ == "__main__":
    run("evaluate.py")
