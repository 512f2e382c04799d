"""`python -m llmtune.index.serve --data-dir kb.db --host 127.0.0.1 --port 19530`: Milvus Lite's
own gRPC server (`milvus-lite server`, the same options) with llmtune's fast search path
installed in the serving process, so a served store searches as fast as an embedded one.
`milvus-lite server` itself runs the library's per-row loops (llmtune/index/milvus_lite_patch.py)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from milvus_lite.cmdline import main as milvus_lite_main

    from llmtune.index.milvus_lite_patch import install

    # Said on stderr so whoever starts the server (and the tests) can see which engine serves.
    print(f"llmtune fast search path: {'on' if install() else 'off (the library as it is)'}", file=sys.stderr,
          flush=True)
    return milvus_lite_main(["server", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
