"""Export PRNet for serving: ``python export.py ...`` runs ``prnet-export`` (code and --help: prnet/cli/export.py)."""

from prnet.cli.export import run

if __name__ == "__main__":
    run("export.py")
