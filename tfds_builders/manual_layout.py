"""The manual folder's layout, checked before a real-data builder generates anything, and per-config
builds under TFDS's ``tfds build`` command.

Each builder lists what its config needs (:meth:`PerConfigBuild.manual_problems`); every problem
names the missing file or folder and the command or download that makes it (docs/datasets.md has
the sources, licences and the layout as a tree)::

    <manual_dir>/
      300W_LP/AFW/ ... LFPW_Flip/       prnet_300w_lp (every config)
      AFLW2000/image00002.jpg + .mat    prnet_aflw2000_3d (every config)
      BFM.mat, BFM_UV.mat               prnet_300w_lp, prnet_aflw2000_3d/posmap (or in BFM/):
                                        prnet-prepare-bfm --raw_dir DIR --output_dir <manual_dir>/BFM

``tfds build tfds_builders/<name> --manual_dir DIR`` without ``--config`` builds every config (TFDS's
rule). Here it builds what it can: a config whose files are missing (or whose data is unusable: a
:class:`prnet.errors.PRNetError`) is not built, with one line ``tfds build: <name>/<config> not built:
<why>`` on stderr; after the last config, one line per config not built again, and the exit status
is 1 when some config was built, 2 when none was (0 when all were). A config named explicitly
(``--config C`` or ``<name>/C``) that cannot be built stops with its one line and exit status 2. No
traceback in either case. Outside the ``tfds`` command (``prnet-build-data``, ``tfds.load``,
Python) the same problems raise :class:`prnet.errors.DatasetError` before anything is written.
"""

import re
import sys
from pathlib import Path

from prnet.errors import DatasetError, PRNetError

PREPARE_BFM = "prnet-prepare-bfm --raw_dir <folder with the BFM downloads> --output_dir {dir}"

#: ``tfds build`` in this process: builder name -> [(config, None or why it was not built)].
_CLI_OUTCOMES = {}


def bfm_problems(manual) -> list:
    """What is missing for the builders' BFM files in ``manual`` (``BFM.mat`` + ``BFM_UV.mat`` in
    ``manual`` or ``manual/BFM``): ``[]`` or one message naming the file and the command."""
    manual = Path(manual)
    for d in (manual, manual / "BFM"):
        if (d / "BFM.mat").is_file():
            if not (d / "BFM_UV.mat").is_file():
                return [f"BFM_UV.mat missing beside {d / 'BFM.mat'}: run "
                        f"{PREPARE_BFM.format(dir=d)} (it writes both; docs/datasets.md)"]
            return []
    return [f"BFM.mat missing in {manual} (or {manual / 'BFM'}): run {PREPARE_BFM.format(dir=manual / 'BFM')} "
            "(a Python replacement of face3d's generate.m; inputs and sources in docs/datasets.md)"]


def folder_problems(manual, folder: str, what: str, archive: str, subfolders=None) -> list:
    """``[]`` when ``manual/folder`` (or ``manual`` itself) holds ``.mat`` annotations (in one of
    ``subfolders`` if given), else one message naming the folder and the archive to extract there."""
    manual = Path(manual)
    for root in (manual / folder, manual):
        dirs = [root / s for s in subfolders] if subfolders else [root]
        if any(d.is_dir() and next(d.glob("*.mat"), None) is not None for d in dirs):
            return []
    inside = f" ({', '.join(subfolders)} with <name>.jpg + <name>.mat)" if subfolders else " (<name>.jpg + <name>.mat)"
    return [f"{folder}/ missing in {manual}{inside}: extract {archive} there ({what}; docs/datasets.md)"]


def _under_tfds_cli() -> bool:
    return "tensorflow_datasets.scripts.cli.build" in sys.modules


def _config_requested(name: str, configs) -> bool:
    """Whether the ``tfds build`` command line names a config (``--config``, ``--config_idx``, ``name/C``)."""
    for arg in sys.argv[1:]:
        if arg.startswith("--config"):
            return True
        m = re.search(rf"(?:^|/){re.escape(name)}/([^/:]+)(?::[\w.]+)?/?$", arg)
        if m and m.group(1) in configs:
            return True
    return False


class PerConfigBuild:
    """Builder mixin: checks the manual folder before generating (:meth:`manual_problems`) and builds
    per config under ``tfds build`` (module docstring)."""

    def manual_problems(self, manual: Path) -> list:
        """Messages naming each missing input of this config in ``manual`` (``[]``: complete)."""
        return []

    def checked_manual_dir(self, dl_manager) -> Path:
        """``dl_manager.manual_dir`` once :meth:`manual_problems` finds nothing missing there; else
        :class:`DatasetError` listing each missing input and the command or download that makes it
        (before anything is generated)."""
        label = f"{self.name}/{self.builder_config.name}"
        try:
            manual = Path(dl_manager.manual_dir)
        except AssertionError:   # TFDS: the folder does not exist or is empty
            manual = Path(str(getattr(dl_manager, "_manual_dir", None) or "<manual_dir>"))
            raise DatasetError(f"{label}: the manual folder {manual} does not exist or is empty: "
                               + "; ".join(self.manual_problems(manual))) from None
        problems = self.manual_problems(manual)
        if problems:
            raise DatasetError(f"{label}: " + "; ".join(problems))
        return manual

    def download_and_prepare(self, *args, **kwargs):
        label = f"{self.name}/{self.builder_config.name}"
        try:
            super().download_and_prepare(*args, **kwargs)
        except PRNetError as e:
            if not _under_tfds_cli():
                raise
            self._cli_outcome(label, str(e).removeprefix(f"{label}: ").splitlines()[0])
            return
        if _under_tfds_cli():
            self._cli_outcome(label, None)

    def _cli_outcome(self, label, why):
        configs = [c.name for c in self.BUILDER_CONFIGS]
        if why is not None:
            print(f"tfds build: {label} not built: {why}", file=sys.stderr, flush=True)
            if _config_requested(self.name, configs):
                raise SystemExit(2)
        outcomes = _CLI_OUTCOMES.setdefault(self.name, [])
        outcomes.append((self.builder_config.name, why))
        if self.builder_config.name != configs[-1] or _config_requested(self.name, configs):
            return
        failed = [(c, w) for c, w in outcomes if w is not None]
        _CLI_OUTCOMES.pop(self.name, None)
        if not failed:
            return
        built = [c for c, w in outcomes if w is None]
        print(f"tfds build: {self.name}: built {', '.join(built) or 'no config'}; not built:", file=sys.stderr)
        for config, why in failed:
            print(f"  {self.name}/{config}: {why}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(1 if built else 2)
