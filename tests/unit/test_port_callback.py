"""The port callback accepts exactly one integer port."""

from __future__ import annotations

import pytest

from shopfloor.extensions.spawn_callback import parse_port_body


def test_accepts_one_port() -> None:
    assert parse_port_body(b'{"port": 45678}') == 45678


@pytest.mark.parametrize(
    "body",
    [
        b'{"port": 45678, "cancel_cmd": "touch /tmp/pwned"}',
        b'{"cancel_cmd": "x"}',
        b'{"port": "45678"}',
        b'{"port": true}',
        b'{"port": 80}',
        b'{"port": 70000}',
        b'{"port": 4.5e4}',
        b"[45678]",
        b"not json",
        b"",
    ],
)
def test_refuses_anything_else(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_port_body(body)
