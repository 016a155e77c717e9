"""``make ui``: the Airflow UI on the demo data, bound to 127.0.0.1.

Starts ``airflow standalone`` (scheduler, API server, DAG processor) with the project's
environment and the sandbox connections, waits for it, and prints the URL and the login.
The sandbox's HTTP API runs beside it. Stop it with Ctrl-C (SIGINT: standalone leaves orphans on SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from datarail.settings import airflow_env, load_settings


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    settings = load_settings()
    port = int(os.environ.get("DATARAIL_UI_PORT", "8080"))
    if not (settings.sandbox_dir / "manifest.json").exists():
        print("no demo data yet: run `make demo` first, then `make ui`", file=sys.stderr)
        return 1
    # The sandbox's HTTP source must be up for the scheduler's extract runs, as in the demo.
    from sandbox.api_server import SandboxApi

    conns = json.loads(settings.connections_file.read_text(encoding="utf-8"))
    http_ids = [cid for cid, c in conns.items() if c.get("conn_type") == "http"]
    token = next((conns[c].get("extra", {}).get("token") for c in http_ids), None)
    api = SandboxApi(settings.sandbox_dir / "api", token=token)
    api.start()
    env = {**os.environ, **airflow_env(settings, overrides={cid: {"port": api.port} for cid in http_ids}),
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "AIRFLOW__CORE__PARALLELISM": "4",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    airflow = str(Path(sys.executable).with_name("airflow"))
    proc = subprocess.Popen([airflow, "standalone"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            cwd=settings.airflow_home, start_new_session=True)
    try:
        for _ in range(120):
            if _up(port):
                break
            if proc.poll() is not None:
                print(f"airflow standalone exited with {proc.returncode}; see {settings.airflow_home}/logs",
                      file=sys.stderr)
                return 1
            time.sleep(1)
        pw_file = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
        password = json.loads(pw_file.read_text()).get("admin") if pw_file.exists() else "(see airflow logs)"
        print(f"Airflow UI: http://127.0.0.1:{port}/   login: admin / {password}\n"
              "DAGs start paused: unpause datarail_* in the UI to schedule them. Ctrl-C stops.")
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
