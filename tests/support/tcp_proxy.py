"""Kept for imports that predate the move: the proxy lives in `bench.tcp_proxy`, shared by
the tests and the fault suite (`make chaos`)."""

from bench.tcp_proxy import TcpProxy

__all__ = ["TcpProxy"]
