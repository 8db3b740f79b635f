"""`caption serve`: the explorer page on a local server; drop or choose an image in it and get the
same view as `caption explore` (caption/explorer/serve.py)."""
from __future__ import annotations

import sys

from ..errors import OptionError
from .explore import add_model_flags, load_models
from .flags import decode_options


def add_parsers(sub) -> None:
    from ..explorer.serve import MAX_UPLOAD_MB
    sv = sub.add_parser(
        "serve", help="the attention explorer on a local server: drop an image in the page to caption it",
        description="Load the models once and serve the explorer page (as `caption explore` writes it) with "
                    "an upload form: choose or drop an image and every model's caption and maps appear "
                    "at the top, as in the offline page. Only two routes (GET / and POST /caption), no file "
                    "is served; uploads are bounded in size and an unreadable one is a message in the page. "
                    "Ctrl-C stops it.")
    sv.add_argument("--title", default="caption serve", help="the page's title (default: caption serve)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="the address to listen on (default: 127.0.0.1, this machine only; another address "
                         "lets anyone who can reach it use the server, and a warning says so)")
    sv.add_argument("--port", type=int, default=8000,
                    help="the port to listen on; 0 picks a free one (the URL printed says which) (default: 8000)")
    sv.add_argument("--max-upload", type=float, default=20, metavar="MB",
                    help="the largest image file taken, in MB (MiB); a larger one is refused before it is "
                         f"read, in the page too (default: 20, at most {MAX_UPLOAD_MB})")
    sv.add_argument("--verbose", action="store_true",
                    help="print one line per request on standard error (default: quiet)")
    add_model_flags(sv)
    sv.set_defaults(run=cmd_serve)


def cmd_serve(args) -> int:
    from ..explorer.serve import MAX_UPLOAD_MB, MB, Live, make_server
    options = decode_options(args)
    if not 0 < args.max_upload <= MAX_UPLOAD_MB:     # also NaN
        raise OptionError("max_upload", f"must be more than 0 and at most {MAX_UPLOAD_MB} (MB), "
                                        f"got {args.max_upload:g}")
    if not 0 <= args.port <= 65535:
        raise OptionError("port", f"must be from 0 to 65535, got {args.port}")
    loaded = load_models(args)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
    live = Live(loaded, options, tuple(dict.fromkeys(args.hard_modes)), args.title, int(args.max_upload * MB))
    try:
        server = make_server(live, args.host, args.port, log=say if args.verbose else None,
                             warn=lambda m: say(f"caption: warning: {m}"))
        with server:
            runs = ", ".join(r["label"] for r in live.runs)
            print(f"serving {server.url} ({runs}); uploads up to {args.max_upload:g} MB; Ctrl-C stops it",
                  flush=True)
            server.serve_forever()     # Ctrl-C: KeyboardInterrupt, which main() turns into exit status 130
    finally:
        live.close()
    return 0

