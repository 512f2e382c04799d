"""Shared CLI plumbing: exit codes, JSON output, user-facing errors."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer

from llmtune.errors import TrainingDiverged, UserError

try:  # typer >= 0.20 vendors its own copy of click
    from typer._click.exceptions import ClickException

    _EXIT, _ABORT = (typer.Exit,), (typer.Abort,)
except ImportError:  # older typer raises click's own exceptions
    import click
    from click import ClickException

    _EXIT = (typer.Exit, click.exceptions.Exit)
    _ABORT = (typer.Abort, click.exceptions.Abort)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_app(app) -> int:
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int):
            return code
    except UserError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return EXIT_USAGE
    except _ABORT:
        print("aborted", file=sys.stderr)
        return 130
    except ClickException as exc:  # bad flags or arguments: the user's input
        exc.show(file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except _EXIT as exc:
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    except Exception:
        if os.environ.get("LLMTUNE_DEBUG"):
            raise
        import traceback

        traceback.print_exc()
        print("error: llmtune failed unexpectedly (exit 1); the traceback above is a bug report", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def emit_json(obj: Any) -> None:
    """One JSON document on stdout (CI reads it)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
