"""nginx configurations for the labs: a server that runs unprivileged out of one directory.

Every lab writes the same prologue (no daemon, the pid, error log and temp
directories inside its own directory, no access log) around its own `http`
block; `nginx_conf` writes that prologue once.
"""

from __future__ import annotations

from pathlib import Path


def nginx_conf(root: Path, http: str, *, main: str = "master_process off;", worker_connections: int = 64,
               error_level: str = "warn", access_log: str = "access_log off;") -> str:
    """An nginx.conf rooted in `root`, with the directives `http` inside its http {} block.

    `main` holds extra top-level directives (process model, limits); `access_log`
    the http-level logging line.
    """
    return (f"daemon off;\n{main}\npid {root}/nginx.pid;\nerror_log {root}/error.log {error_level};\n"
            f"events {{ worker_connections {worker_connections}; }}\n"
            f"http {{\n    {access_log}\n"
            f"    client_body_temp_path {root}/tmp_body;\n    proxy_temp_path {root}/tmp_proxy;\n"
            f"    fastcgi_temp_path {root}/tmp_fastcgi;\n    uwsgi_temp_path {root}/tmp_uwsgi;\n"
            f"    scgi_temp_path {root}/tmp_scgi;\n{http}\n}}\n")
