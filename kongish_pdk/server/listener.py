"""The Unix socket Kong connects to: created with the right mode, replaced when stale,
removed on exit only if it is still ours (after a Kong reload a new server may own the path)."""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass

# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class ListenerError(OSError):
    """The socket cannot be created; the message says why and what to change."""


@dataclass
class UnixListener:
    path: str
    sock: socket.socket
    inode: int

    def close(self) -> None:
        self.sock.close()

    def remove(self) -> None:
        """Unlink the socket file unless another server has replaced it meanwhile."""
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def bind_unix(path: str, mode: int = 0o600, backlog: int = 4096) -> UnixListener:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ListenerError(f"socket path is {len(os.fsencode(path))} bytes, more than the "
                            f"{MAX_SOCKET_PATH} a Unix socket allows: {path} (use a shorter "
                            f"--kong-prefix or --socket-name)")
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise ListenerError(f"socket directory {directory} does not exist (it is the Kong "
                            f"prefix, -p/--kong-prefix; create it or point to Kong's prefix)")
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)  # never let the socket exist with wider permissions
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(backlog)
    return UnixListener(path, sock, os.stat(path).st_ino)


def _remove_stale(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ListenerError(f"{path} exists and is not a socket; refusing to replace it")
    # A socket file left by a crashed server, or by the server a Kong reload is replacing.
    os.unlink(path)
