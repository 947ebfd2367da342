"""The images' HEALTHCHECK: exit 0 when GET URL answers 2xx within 4 s, else 1 with the reason.

Standard library only: the slim runtime images carry no curl or wget. URL is the first
argument, else http://127.0.0.1:$PORT/health (the service's liveness probe; /ready also checks
the index, model and database, which a restart would not fix).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = int(response.status)
    except (urllib.error.URLError, OSError) as exc:  # HTTPError (4xx/5xx) is a URLError
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
