"""`benchmarks.server_load`'s command line: options it does not name itself are the server's,
checked by the server's own parser and forwarded to the server it starts, and the values the
benchmark reads (its in-process engine, the JSON's config fields) are the server's."""

from __future__ import annotations

import pytest

from benchmarks.server_load import SERVER_DEFAULTS, parse_args
from nemotron_speech.server.__main__ import build_parser


def served(args) -> dict:
    """What the server started by `serve(args)` parses from its command line."""
    return vars(build_parser().parse_args(["--model", str(args.model), *args.server_argv]))


def test_without_server_options_the_server_gets_the_benchmarks_defaults():
    args = parse_args([])
    server = served(args)
    assert args.server_argv == list(SERVER_DEFAULTS)
    limits = (server["right_context"], server["max_streams"], server["max_message_bytes"])
    assert limits == (1, 4096, 2**20)
    config = ("device", "precision", "right_context", "batch_wait_ms", "workers")
    config += ("engine_process", "engine_processes", "cuda_graphs")
    assert {k: getattr(args, k) for k in config} == {k: server[k] for k in config}
    assert (args.device, args.precision, args.workers) == ("cpu", "fp32", 1)


def test_any_server_option_is_forwarded_and_read_back():
    argv = ["--clients", "4", "--workers", "2", "--engine-processes", "2", "--right-context", "6"]
    argv += ["--idle-timeout", "7", "--no-cuda-graphs", "--precision", "bf16"]
    args = parse_args(argv)
    server = served(args)
    assert args.clients == "4"  # the benchmark's own option stays here
    assert "--clients" not in args.server_argv
    # a later --right-context wins over the benchmark's default, here and in the server
    assert args.right_context == server["right_context"] == 6
    assert server["idle_timeout"] == 7.0  # an option the benchmark never names
    assert args.cuda_graphs is server["cuda_graphs"] is False
    assert (args.workers, args.engine_processes, args.precision) == (2, 2, "bf16")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["--workers", "0"], "argument --workers: must be at least 1"),
        (["--cleints", "2"], "unrecognized arguments: --cleints 2"),
        (["--port-file", "/tmp/port"], "started on a free port"),
    ],
)
def test_a_bad_option_is_the_benchmarks_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        parse_args(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
