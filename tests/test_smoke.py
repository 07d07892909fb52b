from kongish_pdk.testing import KongClient


def test_hello_event_over_pooled_connections(kong: KongClient) -> None:
    iid = kong.start_instance("hello", {"message": "hi"})
    answers = {"kong.request.get_header": "example.com"}
    trace = kong.run_event(iid, "access", lambda m, a: answers.get(m))
    assert trace.calls == [
        ("kong.request.get_header", ["host"]),
        ("kong.response.set_header", ["x-hello", "hi example.com"]),
        ("kong.response.set_header", ["x-done", "yes"]),
    ]
    assert trace.ended_by == "ret"
