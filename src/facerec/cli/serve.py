"""``facerec serve MODEL``: a local page to try a model on your own photos (and its JSON API).

    facerec serve exported/demo                     # http://127.0.0.1:8000, API docs at /docs
    facerec serve best.pt --port 8080 --gallery people/   # + identify and enrol
    facerec serve exported/demo --host 0.0.0.0      # other machines too (a warning says so)

The model is loaded once, before the server starts listening. Needs the ``serve`` extra
(``pip install facerec[serve]``); docs/serve.md describes the page and the API.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

LOCAL = ("127.0.0.1", "localhost", "::1")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A local web page (and JSON API) to try a face model on photos.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("model", type=Path, help="a .pt checkpoint, a model folder or .onnx")
    parser.add_argument("--gallery", type=Path, default=None,
                        help="a gallery folder for identify and enrol (created by the first "
                        "enrolment when it holds none yet)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: this machine only)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--max-upload-mb", type=float, default=20.0,
                        help="the largest photo accepted, per file (MiB)")  # fmt: skip
    parser.add_argument("--max-requests", type=int, default=32,
                        help="requests in flight at once; more are answered 503")  # fmt: skip
    return parser.parse_args(argv)


def build_app(args: argparse.Namespace):
    """The application for ``args``, its model loaded (load time on stderr)."""
    from facerec.inference import FaceEmbedder
    from facerec.serve.app import create_app
    from facerec.serve.service import Service

    started = time.perf_counter()
    model = FaceEmbedder.load(args.model, args.device, prog="facerec serve")
    service = Service(model, args.gallery)
    service.model_info()  # the card read now: a model the page cannot describe fails here
    print(f"facerec serve: {args.model} loaded in {time.perf_counter() - started:.1f} s on "
          f"{service.model.device}", file=sys.stderr)  # fmt: skip
    return create_app(service, int(args.max_upload_mb * 2**20))


def serve(args: argparse.Namespace) -> int:
    """Load the model, then serve until interrupted."""
    import uvicorn

    app = build_app(args)
    if args.host not in LOCAL:
        print(f"facerec serve: warning: listening on {args.host}: anyone who can reach this "
              "machine can use the model and see the photos sent", file=sys.stderr)  # fmt: skip
    print(f"facerec serve: http://{args.host}:{args.port}  (API docs: /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=args.max_requests,
                log_level="warning")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    from facerec.cli.errors import run_tool

    args = parse_args(argv)
    return run_tool(lambda: serve(args), "facerec serve")
