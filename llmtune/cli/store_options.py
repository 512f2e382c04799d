"""Options every store command shares (index, query, ask): where the store is."""

from __future__ import annotations

import typer

STORE_HELP = ("A local path ending in .db (Milvus Lite: embedded, no server) or a Milvus server URI such as "
              "http://127.0.0.1:19530.")


def store_option():
    return typer.Option(..., "--store", "-s", metavar="STORE", help=STORE_HELP)


def token_option():
    return typer.Option(None, "--token", envvar="MILVUS_TOKEN", show_envvar=True,
                        help="Token (or user:password) of an authenticated Milvus server.")


def collection_option():
    return typer.Option("llmtune", "--collection", help="Name of the store inside the database (several stores can "
                                                        "share one server or .db).")
