"""The spawner's saved state: what a hub restart reads back, made cheaply for API models."""

from __future__ import annotations

from types import SimpleNamespace

from shopfloor.resources import ResourceRequest


class Watcher:
    def __init__(self) -> None:
        self.watched: list[str] = []

    def watch(self, job_id: str) -> None:
        self.watched.append(job_id)

    def unwatch(self, job_id: str) -> None:
        pass


def spawner():  # type: ignore[no-untyped-def]
    from shopfloor.extensions.spawner import ShopfloorSpawner

    return ShopfloorSpawner(context=SimpleNamespace(job_watcher=Watcher()),
                            user=SimpleNamespace(name="alice"))


def test_state_round_trips_the_request_and_job() -> None:
    first = spawner()
    first.job_id, first.node_name, first.job_ready = "42", "node1", True
    first.request = ResourceRequest(partition="cpu", cpus=2, account="proj-ml")
    state = first.get_state()
    assert state["request"] == first.request.model_dump()

    second = spawner()
    second.load_state(state)
    assert (second.job_id, second.node_name, second.job_ready) == ("42", "node1", True)
    assert second.request == first.request
    assert second.ctx.job_watcher.watched == ["42"]


def test_the_dumped_request_follows_a_new_request_and_is_not_shared() -> None:
    one = spawner()
    one.request = ResourceRequest(partition="cpu", cpus=2)
    state = one.get_state()
    state["request"]["cpus"] = 99  # a caller changing its copy
    assert one.get_state()["request"]["cpus"] == 2
    one.request = ResourceRequest(partition="gpu", gpus=1)
    assert one.get_state()["request"]["partition"] == "gpu"
    one.request = None
    assert "request" not in one.get_state()
