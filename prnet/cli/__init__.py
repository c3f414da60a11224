"""Command-line tools (absl apps). Library code never imports from here."""

import sys

from absl import app, flags


def run_console_app(main, module_name: str, doc: str = None, flag_names=None):
    """``app.run(main)`` for a console-script entry point, with a complete ``--help``.

    absl's ``--help`` prints the main module's docstring and lists the flags of the module named
    by ``sys.argv[0]``; under a console-script wrapper that is the wrapper, so this declares the
    CLI module's flags (or ``flag_names``) as key flags of the wrapper and lends it ``doc``.
    """
    main_module = sys.modules.get("__main__")
    if doc and main_module is not None and not (main_module.__doc__ or "").strip():
        main_module.__doc__ = doc
    fv = flags.FLAGS
    owned = ([fv[name] for name in flag_names] if flag_names is not None
             else fv.get_key_flags_for_module(module_name))
    for flag in owned:
        fv.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
