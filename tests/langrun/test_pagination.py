"""langrun/pagination.py: limit/offset pages whose links never carry the caller's API key."""

from urllib.parse import parse_qs, urlsplit


def test_a_key_in_the_query_never_comes_back_in_the_links(client, api_key, user, make_flow):
    for name in ("one", "two", "three"):
        make_flow(user, endpoint_name=name, name=name)
    page = client.get(f"/api/v1/flows/?x-api-key={api_key}&limit=1&offset=1").json()
    assert page["next"] and page["previous"]
    for link in (page["next"], page["previous"]):
        assert api_key not in link
        assert "x-api-key" not in parse_qs(urlsplit(link).query)
    assert parse_qs(urlsplit(page["next"]).query) == {"limit": ["1"], "offset": ["2"]}
    assert parse_qs(urlsplit(page["previous"]).query) == {"limit": ["1"]}


def test_other_query_parameters_stay_in_the_links(key_client, user, make_flow):
    for name in ("one", "two"):
        make_flow(user, endpoint_name=name, name=name)
    page = key_client.get("/api/v1/flows/?limit=1&search=o").json()
    assert page["next"] and parse_qs(urlsplit(page["next"]).query)["search"] == ["o"]
