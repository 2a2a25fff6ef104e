"""langrun/renderers.py: the browsable API's pages never echo an API key given as `?x-api-key=`."""

from langrun.services import api_key_create


def test_a_list_page_never_echoes_the_key(client, api_key, user, make_flow):
    for name in ("one", "two", "three"):
        make_flow(user, endpoint_name=name, name=name)
    response = client.get(f"/api/v1/flows/?x-api-key={api_key}&limit=1&offset=1&search=o", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert "format=json" in body and "ordering=name" in body  # the format toggles and the ordering links are there
    assert "search=o" in body  # other parameters stay in them
    assert api_key not in body
    assert "x-api-key=" not in body


def test_page_links_never_echo_the_key(client, api_key, user):
    for name in ("two", "three"):
        api_key_create(user=user, name=name)
    body = client.get(f"/api/v1/api_key/?x-api-key={api_key}&limit=1&offset=1", HTTP_ACCEPT="text/html").content.decode()
    assert 'class="pagination"' in body and "offset=2" in body
    assert api_key not in body
    assert "x-api-key=" not in body


def test_a_detail_page_never_echoes_the_key(client, api_key, flow):
    response = client.get(f"/api/v1/flows/{flow.id}?x-api-key={api_key}", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    body = response.content.decode()
    assert str(flow.id) in body
    assert api_key not in body
    assert "x-api-key=" not in body
