"""/summaries: summarising a transcript again and again, and fetching the latest."""

from __future__ import annotations

import httpx

from tests.meetings.api import Json, post


async def summarise(
    client: httpx.AsyncClient, transcript: Json, content: str, **extra: str
) -> Json:
    body = {"transcript_id": transcript["id"], "content": content, "model": "gpt-x", **extra}
    return await post(client, "/summaries", body)


async def test_create_and_read_a_summary(client: httpx.AsyncClient, transcript: Json) -> None:
    summary = await summarise(client, transcript, "We agreed.")
    assert (summary["kind"], summary["content"], summary["model"]) == (
        "abstract",
        "We agreed.",
        "gpt-x",
    )
    assert (await client.get(f"/summaries/{summary['id']}")).json() == summary


async def test_latest_summary_is_the_newest_of_its_kind(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    await summarise(client, transcript, "first")
    second = await summarise(client, transcript, "second")
    actions = await summarise(client, transcript, "- ship it", kind="action_items")
    params = {"transcript_id": transcript["id"]}
    latest = await client.get("/summaries/latest", params=params)
    assert latest.json() == second
    latest_actions = await client.get(
        "/summaries/latest", params={**params, "kind": "action_items"}
    )
    assert latest_actions.json() == actions


async def test_latest_summary_explains_why_there_is_none(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    params = {"transcript_id": transcript["id"], "kind": "decisions"}
    response = await client.get("/summaries/latest", params=params)
    assert response.status_code == 404
    assert response.json() == {
        "detail": f"transcript {transcript['id']} has no decisions summary yet"
    }
    missing = await client.get("/summaries/latest", params={"transcript_id": 4040404})
    assert missing.json() == {"detail": "transcript 4040404 not found"}


async def test_summaries_list_newest_first_and_filter(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    first = await summarise(client, transcript, "a")
    second = await summarise(client, transcript, "b", kind="decisions")
    listed = (await client.get("/summaries", params={"transcript_id": transcript["id"]})).json()
    assert [item["id"] for item in listed["items"]] == [second["id"], first["id"]]
    decisions = (await client.get("/summaries", params={"kind": "decisions"})).json()
    assert [item["id"] for item in decisions["items"]] == [second["id"]]


async def test_summarising_a_missing_transcript_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/summaries", json={"transcript_id": 90909, "content": "c", "model": "m"}
    )
    assert response.status_code == 404
    assert response.json() == {"detail": "transcript 90909 not found"}


async def test_delete_a_summary(client: httpx.AsyncClient, transcript: Json) -> None:
    summary = await summarise(client, transcript, "gone soon")
    assert (await client.delete(f"/summaries/{summary['id']}")).status_code == 204
    assert (await client.get(f"/summaries/{summary['id']}")).status_code == 404
    assert (await client.delete(f"/summaries/{summary['id']}")).status_code == 404
