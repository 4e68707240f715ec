"""`resnet serve`: the local training and inference platform (HTTP API and web app)."""

from __future__ import annotations

import argparse

import uvicorn

from ..serve import ServeSettings, create_app
from ..serve.settings import TOKEN_ENV


def add_parser(sub) -> None:
    """Adds `resnet serve` and its flags (each a field of ServeSettings)."""
    p = sub.add_parser(
        "serve",
        help="the web app and HTTP API: upload data, train, watch, predict, export",
        description="Serve the web app at / and the API at /v1 (OpenAPI at /docs). Everything "
        "is read from and written to ordinary run folders under --runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = ServeSettings()
    p.add_argument("--runs", default=str(d.runs), help="the run folders' root")
    p.add_argument("--datasets", help="where uploaded data sets go (default: beside --runs)")
    p.add_argument("--host", default=d.host, help="0.0.0.0 serves other machines too")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="CKPT_OR_EXPORTED_FILE",
        help="a checkpoint, run folder or exported model to serve (repeatable)",
    )
    p.add_argument("--token", help=f"require Authorization: Bearer TOKEN (or set ${TOKEN_ENV})")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="micro-batch size")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=d.max_wait_ms,
        help="longest wait for a micro-batch to fill",
    )
    p.add_argument(
        "--max-queue", type=int, default=d.max_queue, help="images waiting before requests get 503"
    )
    p.add_argument("--predict-body-mb", type=float, default=d.predict_body_mb)
    p.add_argument("--upload-body-mb", type=float, default=d.upload_body_mb)
    p.add_argument(
        "--max-pixels",
        type=int,
        default=d.max_pixels,
        help="largest decoded image (width x height)",
    )
    p.add_argument("--jobs", type=int, default=d.jobs, help="training jobs at once")
    p.add_argument(
        "--backend", default=d.backend, choices=["auto", "eager", "onnxruntime", "openvino"]
    )
    p.add_argument("--no-warm", dest="warm", action="store_false", help="skip warm-up")
    p.set_defaults(run=run)


def settings_from_args(args) -> ServeSettings:
    """The ServeSettings the flags describe."""
    return ServeSettings(
        runs=args.runs,
        datasets=args.datasets,
        host=args.host,
        port=args.port,
        models=list(args.model),
        token=args.token,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        predict_body_mb=args.predict_body_mb,
        upload_body_mb=args.upload_body_mb,
        max_pixels=args.max_pixels,
        jobs=args.jobs,
        backend=args.backend,
        warm=args.warm,
    )


def run(args) -> int:
    """Serves until Ctrl-C or SIGTERM, then drains: queued requests finish, training stops
    resumably."""
    settings = settings_from_args(args)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.token:
        print(
            f"warning: serving on {settings.host} without --token: anyone who can reach "
            "this port can train, read runs and predict"
        )
    page = f"http://{settings.host}:{settings.port}/"
    # The page keeps the token in a cookie once opened with it: open this address directly.
    print(
        f"resnet serve: {page}{'?token=' + settings.token if settings.token else ''} "
        f"(API docs at {page}docs)"
    )
    app = create_app(settings)
    app.state.models.load_all()  # a bad --model is refused in one line, before the port is bound
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
    return 0
