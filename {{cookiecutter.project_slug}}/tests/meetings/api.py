"""Helpers for calling the meetings API in tests."""

from __future__ import annotations

from typing import Any

import httpx

Json = dict[str, Any]


async def post(client: httpx.AsyncClient, url: str, body: Any, expected: int = 201) -> Json:
    """POST ``body`` and return the JSON answer, which must have the ``expected`` status."""
    response = await client.post(url, json=body)
    assert response.status_code == expected, response.text
    answer: Json = response.json()
    return answer


def segment(sequence: int, text: str = "hello", speaker: str = "ana") -> Json:
    """A segment body; segment n spans [1000 n, 1000 n + 900] milliseconds."""
    start = sequence * 1000
    return {
        "sequence": sequence,
        "speaker": speaker,
        "start_ms": start,
        "end_ms": start + 900,
        "text": text,
    }
