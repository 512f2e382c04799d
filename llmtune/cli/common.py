"""Shared CLI plumbing: exit codes, JSON output, user-facing errors."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from llmtune.errors import TrainingDiverged, UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_app(app) -> int:
    try:
        app(standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return EXIT_USAGE
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.ClickException as exc:  # bad flags or arguments: the user's input
        exc.show(file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except click.exceptions.Exit as exc:
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
