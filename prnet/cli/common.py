"""What every prnet tool shares: the flags several tools take (defined once, here), the tool
registry, and :func:`run_tool`, which gives every tool the same start, error line and exit codes.

Flags. A tool module calls the ``define_*_flags()`` it needs at import; each defines its flags
once per process (owned by this module, so that several tool modules can be imported together)
and makes them key flags of the calling tool module, so that the tool's ``--help`` lists them.
A tool may give a flag its own default (e.g. ``--model_size`` is 16 for training and inferred from
the weights when exporting); the help says so. Old spellings stay as deprecated aliases
(:data:`ALIASES`, and :data:`TOOL_ALIASES` where the old name is another flag elsewhere): they
still work, and a run using one says so once on stderr.

Exit codes (:func:`run_tool`): 0 done (and ``--help``); 1 partial failure (some inputs failed,
each reported); 2 usage or setup error (flags, including an unknown flag, weights, UV template,
data, output folder), found before any work where possible; 130 interrupted (Ctrl-C), with a
summary. absl alone exits 1 after ``--help`` and on a flag error; the tools, like argparse, exit 0
and 2. Every error is one line on stderr, ``<tool>: error: <what to do>``.

Logs. A normal run prints only the tool's own progress and messages: absl logging at WARNING,
TensorFlow's Python logger at ERROR, and the native lines of :data:`prnet.cli.NOISE` filtered from
stderr (:func:`prnet.cli.filtered_stderr`). ``--verbosity N`` (absl's flag: -1 warnings, 0 info,
1 debug) shows everything at that level, and sets ``TF_CPP_MIN_LOG_LEVEL`` to match (0 for N >= 0,
1 for -1) unless the user set that variable.
"""

import logging as _pylogging
import os
import sys
from contextlib import nullcontext

from absl import app, flags, logging

from prnet.cli import USER_TF_LOG_LEVEL, filtered_stderr

FLAGS = flags.FLAGS

#: Installed command -> the module that defines its flags and ``main`` (``python train.py`` ==
#: ``prnet-train``, the same for evaluate.py and export.py).
TOOLS = {
    "prnet-demo": "prnet.cli.demo",
    "prnet-swap": "prnet.cli.swap",
    "prnet-convert": "prnet.cli.convert",
    "prnet-build-data": "prnet.cli.build_data",
    "prnet-train": "prnet.cli.train",
    "prnet-evaluate": "prnet.cli.evaluate",
    "prnet-export": "prnet.cli.export",
    "prnet-prepare-bfm": "prnet.cli.prepare_bfm",
    "prnet-reproduce": "prnet.cli.reproduce",
    "prnet-app": "prnet.cli.app",
}

#: Deprecated flag name -> its name now, in every tool that has it. ``--config C`` appends ``/C``
#: to ``--dataset`` (``--dataset prnet_synthetic --config tiny`` == ``--dataset prnet_synthetic/tiny``).
ALIASES = {
    "uv_dir": "assets_dir",      # prnet-demo, prnet-swap
    "size": "model_size",        # export.py
    "tfds_name": "dataset",      # evaluate.py
    "config": "dataset",         # prnet-build-data
    "model_dir": "output_dir",   # train.py: the run folder (checkpoints, logs, final weights) is its output folder
}

#: Deprecated names of one tool whose old name is a different flag in other tools: prnet-demo's
#: ``--output`` was its output folder; ``--output`` is a single output file everywhere else.
TOOL_ALIASES = {"prnet-demo": {"output": "output_dir"}}

EXIT_OK, EXIT_PARTIAL, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130


class ToolError(Exception):
    """Stops a tool with ``<tool>: error: <message>`` on stderr and exit status ``code``."""

    def __init__(self, message, code: int = EXIT_SETUP):
        super().__init__(str(message))
        self.code = code


def fail(message, code: int = EXIT_SETUP):
    """Stop the running tool: raises :class:`ToolError` (caught by :func:`run_tool`)."""
    raise ToolError(message, code)


_PROG = ["prnet"]
_STDERR_IS_TERMINAL = [os.isatty(2)]


def prog() -> str:
    """The name of the running tool as the user typed it (``prnet-train`` or ``train.py``)."""
    return _PROG[0]


def stderr_is_terminal() -> bool:
    """Whether the user's stderr is a terminal (``sys.stderr.isatty()`` is False while the run's
    stderr passes through :func:`prnet.cli.filtered_stderr`'s pipe)."""
    return _STDERR_IS_TERMINAL[0]


def say(message: str) -> None:
    """Print ``<tool>: <message>`` on stderr (progress and notes; results go to stdout)."""
    print(f"{prog()}: {message}", file=sys.stderr, flush=True)


def error_line(message) -> str:
    """``<tool>: error: <first line>`` with any further lines indented."""
    first, *rest = str(message).splitlines() or [""]
    return "\n".join([f"{prog()}: error: {first}", *(f"  {line}" for line in rest)])


# --------------------------------------------------------------------------------------------- flags

def _caller_module(depth: int = 2) -> str:
    """The module name absl files a caller's flags under (``sys.argv[0]`` for ``__main__``)."""
    name = sys._getframe(depth).f_globals.get("__name__", "__main__")
    return sys.argv[0] if name == "__main__" else name


def define_flag(define, name: str, default, help: str, *, module: str = None, **kwargs):
    """Define flag ``name`` with ``define`` (``flags.DEFINE_string``, ...) once per process, make it a
    key flag of ``module`` (default: the calling tool module) and give it that tool's ``default``
    and ``help``.

    Tools that share a name share the flag (one definition, owned by this module); each tool's
    default and help are recorded (:func:`tool_flags`) and set when it imports and when it runs
    (:func:`run_tool`), so each tool's ``--help`` is its own whatever else was imported."""
    module = module or _caller_module()
    _TOOL_FLAGS.setdefault(module, {})[name] = (help, default)
    if name not in FLAGS:
        if "enum_values" in kwargs:  # DEFINE_enum(name, default, enum_values, help)
            define(name, default, kwargs.pop("enum_values"), help, **kwargs)
        else:
            define(name, default, help, **kwargs)
    else:
        FLAGS[name].help = help
        FLAGS.set_default(name, default)
    FLAGS.register_key_flag_for_module(module, FLAGS[name])
    return FLAGS[name]


#: tool module -> {flag name: (help, default)} as the tool defined them.
_TOOL_FLAGS = {}


def tool_flags(tool: str) -> dict:
    """``{flag name: help}`` of every flag ``tool`` (a :data:`TOOLS` key, its module imported)
    accepts, with that tool's own help text (a shared flag may read differently in another tool)."""
    module = TOOLS[tool]
    own = _TOOL_FLAGS.get(module, {})
    return {flag.name: own.get(flag.name, (flag.help, None))[0] for flag in key_flags(module)}


def _alias(module: str, define, old: str, new: str, note: str = "", **kwargs):
    return define_flag(define, old, None, f"Deprecated alias of --{new}{note}.", module=module, **kwargs)


WEIGHTS_HELP = ("Network weights: a Keras .weights.h5 (or .keras) file, a SavedModel folder, a .tflite file, a "
                "training checkpoint folder (prnet-train's <output_dir>/checkpoints) or a TF2 / official TF1 "
                "checkpoint prefix (prnet-export: the Keras formats and checkpoints). Default: the official weights "
                "from the cache ($PRNET_CACHE_DIR or ~/.cache/prnet), downloaded and converted on first use, then "
                "run through the fastest accurate export for this machine, made once into the cache (see --backend).")
BACKEND_HELP = ("How to run the network. auto: the official weights through the fastest path of float32 accuracy "
                "for this machine (TFLite float32 on CPUs without bf16 units; the bf16 SavedModel, within the bf16 "
                "bound, on CPUs with AVX512_BF16/AMX and on bf16 GPUs; exported once into the cache; the "
                "'using weights:' line says what was chosen and why), any --weights in its own format; "
                "saved_model / tflite / onnxruntime: require that runtime (the official weights' cached export, or "
                "a --weights SavedModel folder / .tflite / .onnx; onnxruntime: pip install -e \".[onnx]\"); keras: "
                "require a Keras model (official Keras weights, or --weights .weights.h5 / .keras / checkpoint); "
                "openvino: run any --weights (SavedModel, .tflite, Keras "
                "weights; the official weights converted in memory) in OpenVINO at --precision "
                "(optional: pip install -e \".[openvino]\"). prnet-export always reads the weights into Keras "
                "(auto or keras).")
PRECISION_HELP = ("Network precision. auto: bfloat16 where the hardware has bf16 units (AVX512_BF16 or AMX in "
                  "/proc/cpuinfo, a GPU of compute capability >= 8.0) with --backend auto, saved_model or openvino, "
                  "else float32; an exported file's own precision. float32: as trained. bfloat16: bf16 weights and "
                  "activations (the output layer in float32), faster on CPUs with bf16 units and GPUs, within the "
                  "measured bf16 bound (+-0.1 % NME); the official weights run their cached bf16 SavedModel, Keras "
                  "weights and checkpoints their bf16 graph in-process, a SavedModel must be a bf16 export "
                  "(prnet-export --formats=saved_model_bf16, which is also how prnet-export writes bf16). An "
                  "exported file's own precision must match.")
DOWNLOAD_HELP = ("Download the official weights / UV template into the cache when they are missing there "
                 "(SHA-256 checked; mirrors: PRNET_WEIGHTS_BASE_URL, PRNET_UV_BASE_URL); --nodownload: fail with "
                 "instructions instead. prnet-convert: off by default, and --download fetches and converts now.")
RANDOM_HELP = ("Use an UNTRAINED, randomly initialised network to test the pipeline (no weights needed): every "
               "output is marked as random weights (file names carry _RANDOM_WEIGHTS, headers and overlays say "
               "so). Cannot be combined with --weights.")
DETECTOR_HELP = ("Face detector: auto (blazeface if installed, else opencv, else dlib), blazeface (MediaPipe "
                 "BlazeFace on TFLite; large poses), opencv (Haar cascade, OpenCV 4), dlib (HOG; pip install "
                 "dlib-bin); prnet-evaluate also dlib_cnn (--detector_model). prnet-export: the detector inside "
                 "the SavedModel's predict_images_detect signature, auto (= blazeface) or none (no signature).")
ANNOTATIONS_HELP = ("auto: crop an image from its sibling 68-landmark annotation file when there is one "
                    "(<name>.pts menpo/iBUG, or <name>.mat 300W-LP / AFLW2000-3D fit with pt2d / pt3d_68), by the "
                    "original x1.6 landmark rule, instead of detecting the face; never: always use the face "
                    "detector.")
REFINE_HELP = ("Landmark re-cropping of detected faces: crop each face again by the x1.6 landmark rule from the "
               "landmarks the first network pass predicted, and run the network again (twice the network time per "
               "detected face; --norefine: one pass on the detector's crop).")
ASSETS_HELP = ("UV template folder (uv-data: the face mask, landmark indices, triangles; or its parent). Default: "
               "$PRNET_ASSETS_DIR, else the cache (downloaded on first use; prnet-convert --download).")
MODEL_SIZE_HELP = ("Base width of ResFCN256 (16 = the paper's network; 4 = tiny, for CPU smoke runs). prnet-train: "
                   "default 16; prnet-export: inferred from the weights when not given.")
DATASET_HELP = ("TFDS dataset name[/config], e.g. prnet_synthetic/tiny, prnet_300w_lp, prnet_aflw2000_3d/posmap "
                "(configs: prnet_synthetic tiny|small|medium|large, default small; prnet_300w_lp default|jitter; "
                "prnet_aflw2000_3d default|posmap). The project's builders are registered automatically.")
DATA_DIR_HELP = "TFDS data directory (default: ~/tensorflow_datasets)."
OUTPUT_DIR_HELP = "Output folder (created if missing)."
OUTPUT_HELP = "Output file (a single file; its folder is created if missing)."


def define_weights_flags(**defaults):
    """``--weights --backend --precision --download --smoke_test_random_weights`` for the calling
    tool; ``defaults`` overrides a flag's default for it (e.g. ``download=False``)."""
    m = _caller_module()
    define_flag(flags.DEFINE_string, "weights", defaults.get("weights"), WEIGHTS_HELP, module=m)
    define_flag(flags.DEFINE_enum, "backend", defaults.get("backend", "auto"), BACKEND_HELP, module=m,
                enum_values=["auto", "saved_model", "tflite", "keras", "openvino", "onnxruntime"])
    define_flag(flags.DEFINE_enum, "precision", defaults.get("precision", "auto"), PRECISION_HELP, module=m,
                enum_values=["auto", "float32", "bfloat16"])
    define_download_flag(m, defaults.get("download", True))
    define_flag(flags.DEFINE_bool, "smoke_test_random_weights", False, RANDOM_HELP, module=m)


def define_download_flag(module: str = None, default: bool = True):
    """``--download`` alone (prnet-convert, which fetches weights but runs no network)."""
    define_flag(flags.DEFINE_bool, "download", default, DOWNLOAD_HELP, module=module or _caller_module())


def define_detection_flags(annotations: bool = True, refine: bool = True):
    """``--detector``, ``--refine`` and ``--annotations`` (the last two unless ``False``: tools that
    crop no photo from a detection or an annotation file)."""
    m = _caller_module()
    define_flag(flags.DEFINE_string, "detector", "auto", DETECTOR_HELP, module=m)
    if refine:
        define_flag(flags.DEFINE_bool, "refine", True, REFINE_HELP, module=m)
    if annotations:
        define_flag(flags.DEFINE_enum, "annotations", "auto", ANNOTATIONS_HELP, module=m,
                    enum_values=["auto", "never"])


def define_assets_flags():
    """``--assets_dir`` (and the deprecated ``--uv_dir``)."""
    m = _caller_module()
    define_flag(flags.DEFINE_string, "assets_dir", None, ASSETS_HELP, module=m)
    _alias(m, flags.DEFINE_string, "uv_dir", "assets_dir")


def define_model_size_flag(default=None, size_alias: bool = True):
    """``--model_size`` (and, unless ``size_alias=False``, export.py's deprecated ``--size``: 0 there
    meant "infer")."""
    m = _caller_module()
    define_flag(flags.DEFINE_integer, "model_size", default, MODEL_SIZE_HELP, lower_bound=1, module=m)
    if size_alias:
        _alias(m, flags.DEFINE_integer, "size", "model_size", " (0: infer it from the weights)", lower_bound=0)


def define_dataset_flags(default=None, tfds_name: bool = False, config: bool = False):
    """``--dataset name[/config]`` and ``--data_dir``; the deprecated ``--tfds_name`` (evaluate.py)
    and ``--config`` (prnet-build-data) when asked."""
    m = _caller_module()
    define_flag(flags.DEFINE_string, "dataset", default, DATASET_HELP, module=m)
    define_flag(flags.DEFINE_string, "data_dir", None, DATA_DIR_HELP, module=m)
    if tfds_name:
        _alias(m, flags.DEFINE_string, "tfds_name", "dataset")
    if config:
        _alias(m, flags.DEFINE_string, "config", "dataset", " (appended as /CONFIG: --dataset NAME --config "
               "CONFIG is --dataset NAME/CONFIG)")


def define_output_dir_flag(default=None, help: str = OUTPUT_DIR_HELP, model_dir: bool = False,
                           output: bool = False):
    """``--output_dir`` (a folder); the deprecated ``--model_dir`` (train.py) or ``--output``
    (prnet-demo, where it was the folder) when asked."""
    m = _caller_module()
    define_flag(flags.DEFINE_string, "output_dir", default, help, module=m)
    if model_dir:
        _alias(m, flags.DEFINE_string, "model_dir", "output_dir")
    if output:
        _alias(m, flags.DEFINE_string, "output", "output_dir", " (prnet-demo's output folder; --output is a "
               "single file in the other tools)")


def define_output_flag(default=None, help: str = OUTPUT_HELP):
    """``--output`` (a single file)."""
    define_flag(flags.DEFINE_string, "output", default, help, module=_caller_module())


def key_flags(module: str) -> list:
    """The flags of a tool module (its own and the shared ones), as ``--help`` lists them."""
    return FLAGS.get_key_flags_for_module(module)


def _apply_aliases(names, aliases: dict) -> None:
    """Give each new flag the value of its deprecated alias (one note per alias used)."""
    for old, new in aliases.items():
        if old not in names or not FLAGS[old].present:
            continue
        value = FLAGS[old].value
        if old == "config":
            if FLAGS["dataset"].value and "/" in FLAGS["dataset"].value:
                fail(f"--config {value}: --dataset {FLAGS['dataset'].value} already names a config")
            say(f"note: --config is deprecated; use --dataset {FLAGS['dataset'].value}/{value}")
            value = f"{FLAGS['dataset'].value}/{value}" if FLAGS["dataset"].value else None
            if value is None:
                fail("--config needs --dataset NAME (better: --dataset NAME/CONFIG)")
        else:
            if FLAGS[new].present and FLAGS[new].value != value:
                fail(f"--{old} is a deprecated alias of --{new}; give only --{new}")
            say(f"note: --{old} is deprecated; use --{new}")
            if old == "size" and value == 0:
                value = None  # export.py's --size 0: infer the width from the weights
        FLAGS[new].value = value
        FLAGS[new].present = 1


# ---------------------------------------------------------------------------------------------- run

def _set_up_logging() -> bool:
    """Log levels of a run (see the module docstring); True where native noise is to be filtered."""
    if FLAGS["verbosity"].present:
        level = FLAGS.verbosity
        if USER_TF_LOG_LEVEL is None:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if level >= 0 else str(min(3, -level))
    else:
        logging.set_verbosity(logging.WARNING)
        _pylogging.getLogger("tensorflow").setLevel(_pylogging.ERROR)
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2").strip() not in ("0", "1")


def run_tool(tool: str, main, prog_name: str = None, interrupted: str = "stopped") -> None:
    """Run ``main(argv) -> exit status`` as the command ``tool`` (a :data:`TOOLS` key); never returns.

    Same for every tool: ``--help`` lists every flag of the tool (also under a console-script
    wrapper or a root script) and exits 0; a flag error prints one line and exits 2; deprecated
    aliases are resolved (one note each); quiet logging (module docstring); ``main`` may return a
    status (None = 0) or raise :class:`ToolError` / ``app.UsageError`` / a
    :class:`prnet.errors.PRNetError` (exit 2) — each printed as ``<prog>: error: <message>``; Ctrl-C
    not handled by ``main`` prints ``<prog>: interrupted (Ctrl-C); <interrupted>`` and exits 130.
    ``prog_name``: the name used in messages (default ``tool``; the root scripts pass ``train.py``)."""
    _PROG[0] = prog_name or tool
    _STDERR_IS_TERMINAL[0] = os.isatty(2)
    module_name = TOOLS[tool]
    module = sys.modules.get(module_name)
    if module is None or getattr(main, "__module__", None) == "__main__":  # run as python -m prnet.cli.x
        module_name, module = sys.argv[0], sys.modules["__main__"]
    owned = key_flags(module_name)
    for flag in owned:
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
        if flag.name in _TOOL_FLAGS.get(module_name, {}):  # this tool's help and default of a shared flag
            flag.help, default = _TOOL_FLAGS[module_name][flag.name]
            FLAGS.set_default(flag.name, default)
    main_module = sys.modules.get("__main__")
    if main_module is not None and main_module is not module and module.__doc__:
        main_module.__doc__ = module.__doc__  # absl's --help prints the main module's docstring
    names = {flag.name for flag in owned}
    aliases = {old: new for old, new in {**ALIASES, **TOOL_ALIASES.get(tool, {})}.items() if old in names}

    def parse(argv):
        try:
            rest = FLAGS(argv)
        except flags.Error as e:
            print(error_line(f"{e} (see --help)"), file=sys.stderr)
            sys.exit(EXIT_SETUP)
        except SystemExit as e:  # absl's --help / --helpfull / --helpshort printed the help and exit 1
            sys.exit(EXIT_OK if e.code == 1 else e.code)
        try:
            _apply_aliases(names, aliases)
            check_float_flags()
        except ToolError as e:
            print(error_line(e), file=sys.stderr)
            sys.exit(e.code)
        return rest

    def run_main(argv):
        from prnet.errors import PRNetError

        quiet = _set_up_logging()
        with filtered_stderr() if quiet else nullcontext():
            try:
                status = main(argv)
                return EXIT_OK if status is None else status
            except ToolError as e:
                print(error_line(e), file=sys.stderr)
                return e.code
            except (app.UsageError, PRNetError) as e:
                print(error_line(e), file=sys.stderr)
                return EXIT_SETUP
            except KeyboardInterrupt:
                say(f"interrupted (Ctrl-C); {interrupted}")
                return EXIT_INTERRUPTED

    try:
        app.run(run_main, flags_parser=parse)
    except KeyboardInterrupt:  # before main: while parsing flags or starting up
        say(f"interrupted (Ctrl-C); {interrupted}")
        sys.exit(EXIT_INTERRUPTED)


# ------------------------------------------------------------------------------------- float flags

#: Flag name -> ``(low, high, low_open, high_open)``: the range a float flag's value must lie in, beyond
#: being finite, for ranges absl's inclusive ``lower_bound`` / ``upper_bound`` cannot say (e.g.
#: ``0 <= momentum < 1``). Filled by :func:`float_range`.
FLOAT_RANGES = {}


def float_range(name: str, low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> None:
    """Record the range of float flag ``name`` (``None``: unbounded on that side; ``*_open``: the bound
    itself is excluded), checked with every float flag by :func:`check_float_flags` before any work."""
    FLOAT_RANGES[name] = (low, high, low_open, high_open)


def _range_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"a number {'>' if low_open else '>='} {low:g} and {'<' if high_open else '<='} {high:g}"
    if low is not None:
        return f"a number {'>' if low_open else '>='} {low:g}"
    return f"a number {'<' if high_open else '<='} {high:g}"


def _bounds(flag):
    """``(low, high, low_open, high_open)`` of a float flag: :data:`FLOAT_RANGES`, else absl's bounds."""
    if flag.name in FLOAT_RANGES:
        return FLOAT_RANGES[flag.name]
    return (getattr(flag.parser, "lower_bound", None), getattr(flag.parser, "upper_bound", None), False, False)


def check_float_flags(flag_values=FLAGS) -> None:
    """Every float flag (single or multi) must hold finite numbers in its range: NaN and infinity pass
    absl's bounds (comparisons with NaN are false) and have hung or crashed tools. Raises
    :class:`ToolError` (exit 2) naming the first bad flag and its range. :func:`run_tool` runs it
    right after parsing, before any work."""
    import math

    for name in sorted(set(flag_values)):
        flag = flag_values[name]
        if flag.name != name or not isinstance(flag.parser, flags.FloatParser) or flag.value is None:
            continue
        values = flag.value if isinstance(flag.value, (list, tuple)) else [flag.value]
        low, high, low_open, high_open = _bounds(flag)
        for value in values:
            bad = not math.isfinite(value)
            if low is not None:
                bad = bad or value < low or (low_open and value == low)
            if high is not None:
                bad = bad or value > high or (high_open and value == high)
            if bad:
                wanted = _range_text(low, high, low_open, high_open) if (low, high) != (None, None) else \
                    "a finite number"
                fail(f"--{name}={value}: {'not a finite number' if not math.isfinite(value) else 'out of range'}; "
                     f"give {wanted} (see --help)")
