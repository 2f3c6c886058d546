"""A fork server that runs the docs' examples as real processes without paying for a torch import each.

tests/test_docs_examples.py runs every shell example in bash, as a user would, with `nndiag` on the
PATH. Starting Python and importing torch costs seconds per command on a small machine, and the docs
hold dozens of commands. So the `nndiag` on that PATH is a thin client (this file, run as a script
with `nndiag ARGS`): it hands its argv, working directory, environment and its stdin/stdout/stderr
file descriptors to this server, which has torch and nndiag imported already, forks, and runs the
console script's `main()` in the child. The child is a real process with the caller's fds, cwd and
environment, so pipes, redirections, exit codes (3 for a crash included) behave exactly as with the
installed command. Python examples run the same way (`--script FILE`, as `python FILE`).

    python tests/docs_server.py --serve SOCKET          # the server (started by the tests)
    NNDIAG_DOCS_SERVER=SOCKET python tests/docs_server.py ARGS...   # the client: `nndiag ARGS...`

One request is served at a time (the examples run one command at a time).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys

HEADER = struct.Struct("!Q")


def _read(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the client went away")
        data += chunk
    return data


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the process the client would have started, then run it."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]  # `python -m nndiag` and `python FILE` put the working directory / the file's folder first
    code: object = 0
    try:
        if "script" in request:
            import runpy

            sys.path[0] = os.path.dirname(os.path.abspath(request["script"]))
            sys.argv = [request["script"], *request["argv"]]
            runpy.run_path(request["script"], run_name="__main__")
        else:
            from nndiag.cli import main

            sys.argv = ["nndiag", *request["argv"]]
            main()
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # what the interpreter does with an uncaught exception in a script
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def serve(path: str) -> None:
    # everything the examples import, imported once (no torch operation runs here: forking stays safe)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import optuna  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import torch  # noqa: F401

    import nndiag.api  # noqa: F401
    import nndiag.cli  # noqa: F401
    import nndiag.diagnosis.babysit  # noqa: F401
    import nndiag.diagnostics.curves  # noqa: F401
    import nndiag.diagnostics.lr_find  # noqa: F401
    import nndiag.diagnostics.probe  # noqa: F401
    import nndiag.diagnostics.search  # noqa: F401
    import nndiag.output.files  # noqa: F401
    import nndiag.output.terminal  # noqa: F401

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
                request = json.loads(_read(conn, HEADER.unpack(header)[0]))
            except (ConnectionError, struct.error, ValueError):
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                conn.close()
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            _, status = os.waitpid(pid, 0)
            try:
                conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())
            except OSError:
                pass


def client(argv: list[str]) -> int:
    request: dict = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    if argv[:1] == ["--script"]:
        request.update(script=argv[1], argv=argv[2:])
    body = json.dumps(request).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(os.environ["NNDIAG_DOCS_SERVER"])
        socket.send_fds(conn, [HEADER.pack(len(body))], [0, 1, 2])
        conn.sendall(body)
        reply = b""
        while chunk := conn.recv(16):
            reply += chunk
    code = int(reply or b"70")  # 70: the server died under us
    return 128 - code if code < 0 else code  # killed by signal N -> 128+N, as a shell reports it


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[1:]))
