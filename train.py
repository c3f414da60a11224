"""Train PRNet: ``python train.py ...`` runs ``prnet-train`` (code and --help: prnet/cli/train.py)."""

from prnet.cli.train import run

if __name__ == "__main__":
    run("train.py")
