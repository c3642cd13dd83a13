"""nginx on 127.0.0.1 for the tests: the servers live with the bench
(:mod:`pullweights.bench.serve`)."""

from pullweights.bench.serve import SKIP_REASON, NginxServer, free_port, nginx_binary, wait_for_port

__all__ = ["SKIP_REASON", "NginxServer", "free_port", "nginx_binary", "wait_for_port"]
