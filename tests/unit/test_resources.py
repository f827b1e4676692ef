"""The one resource-request model: types, limits, groups, live data, injection attempts."""

from __future__ import annotations

from datetime import datetime

import pytest

from shopfloor.resources import (
    LiveCluster,
    RequestError,
    RequestPolicy,
    UserContext,
)
from shopfloor.site import parse_site
from shopfloor.slurm.reservations import Reservation, parse_reservations
from shopfloor.slurm.seam import PartitionInfo

SITE = parse_site({
    "partitions": {
        "cpu": {"max_cpus": 8, "max_memory_gb": 16, "max_walltime": "8:00:00",
                "default_cpus": 2, "default_memory_gb": 4, "default_walltime": "2:00:00"},
        "gpu": {"max_cpus": 4, "max_gpus": 2, "max_walltime": "4:00:00", "groups": ["gpuusers"],
                "qos": ["high"]},
        "debug": {"max_cpus": 2, "max_walltime": "0:30:00", "default_walltime": "0:10:00"},
    },
    "default_partition": "cpu",
    "group_limits": {"workshop": {"max_cpus": 1, "max_walltime": "1:00:00"}},
    "group_accounts": {"gpuusers": ["ml-2026", "shared"]},
})
POLICY = RequestPolicy(SITE)
ALICE = UserContext("alice", frozenset({"gpuusers"}))
BOB = UserContext("bob")


def live(**overrides: object) -> LiveCluster:
    cpu = PartitionInfo(
        name="cpu", default=True, up=True, max_time_minutes=480, nodes_allocated=0,
        nodes_idle=2, nodes_other=0, nodes_total=2, cpus_allocated=0, cpus_idle=8,
        cpus_other=0, cpus_total=8, memory_per_node_mb=4000, gpus_per_node=0, gres="(null)",
        node_names=frozenset({"node1", "node2"}),
    )
    gpu = PartitionInfo(
        name="gpu", default=False, up=True, max_time_minutes=240, nodes_allocated=0,
        nodes_idle=1, nodes_other=0, nodes_total=1, cpus_allocated=0, cpus_idle=4,
        cpus_other=0, cpus_total=4, memory_per_node_mb=4000, gpus_per_node=2, gres="gpu:2",
    )
    debug = PartitionInfo(
        name="debug", default=False, up=True, max_time_minutes=30, nodes_allocated=0,
        nodes_idle=1, nodes_other=0, nodes_total=1, cpus_allocated=0, cpus_idle=4,
        cpus_other=0, cpus_total=4, memory_per_node_mb=4000, gpus_per_node=0, gres="(null)",
        node_names=frozenset({"debug1"}),
    )
    res = Reservation("workshop1", "cpu", frozenset({"alice"}), datetime(2026, 1, 1), None)
    fields: dict[str, object] = {
        "partitions": {"cpu": cpu, "gpu": gpu, "debug": debug},
        "reservations": {"workshop1": res},
        **overrides,
    }
    return LiveCluster(**fields)  # type: ignore[arg-type]


def test_defaults_fill_in_an_empty_request() -> None:
    req = POLICY.validate({}, BOB, live())
    assert req.partition == "cpu"
    assert (req.cpus, req.walltime_minutes) == (2, 120)
    # the site default (4 GiB) is clipped to what a node has (4000 MB)
    assert req.memory_gb == 4000 / 1024


def test_form_strings_are_typed() -> None:
    req = POLICY.validate(
        {"partition": "gpu", "cpus": "2", "memory_gb": "1.5", "gpus": "1", "walltime": "1:30:00"},
        ALICE, live(),
    )
    assert (req.partition, req.cpus, req.memory_gb, req.gpus) == ("gpu", 2, 1.5, 1)
    assert req.walltime_minutes == 90
    assert req.memory_mb == 1536


def test_live_cluster_caps_site_limits() -> None:
    # The site allows 16 GiB on cpu, but the nodes only have ~3.9 GiB.
    with pytest.raises(RequestError) as err:
        POLICY.validate({"memory_gb": 8}, BOB, live())
    assert "memory_gb" in err.value.problems
    assert "3.90625 GiB" in err.value.problems["memory_gb"]


def test_walltime_message_is_in_users_words() -> None:
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "gpu", "walltime": "8:00:00"}, ALICE, live())
    assert err.value.problems["walltime"] == (
        "the gpu partition allows at most 4 hours; you asked for 8 hours"
    )


@pytest.mark.parametrize("key", ["cmd", "prologue", "output", "req_options", "batch_script",
                                 "partition\n#SBATCH --uid=0", ""])
def test_unknown_keys_are_refused(key: str) -> None:
    with pytest.raises(RequestError) as err:
        POLICY.validate({key: "x"}, BOB)
    assert "is not a setting you can choose" in str(err.value)


@pytest.mark.parametrize(
    "field,value",
    [
        ("partition", "cpu\n#SBATCH --partition=gpu"),
        ("partition", "cpu\r"),
        ("partition", "cpu;rm -rf ~"),
        ("partition", "$(id)"),
        ("partition", "'cpu'"),
        ("partition", "cpu\u200b"),
        ("partition", "çpu"),
        ("account", "a" * 65),
        ("cpus", "1; echo"),
        ("cpus", "10000000000"),
        ("cpus", True),
        ("cpus", 1.5),
        ("cpus", {"a": 1}),
        ("memory_gb", "1e9"),
        ("memory_gb", "NaN"),
        ("walltime", "1:99"),
        ("walltime", "forever"),
        ("reservation", "x`id`"),
        ("qos", ["a", "b"]),
    ],
)
def test_injection_and_bad_types_are_refused(field: str, value: object) -> None:
    with pytest.raises(RequestError) as err:
        POLICY.validate({field: value}, ALICE, live())
    assert field in err.value.problems


def test_huge_values_are_refused_with_the_limit() -> None:
    with pytest.raises(RequestError) as err:
        POLICY.validate({"cpus": 999999, "nodes": 50}, BOB, live())
    assert err.value.problems["cpus"] == "the cpu partition allows 1 to 4; you asked for 999999"
    assert err.value.problems["nodes"] == "the cpu partition allows 1 to 2; you asked for 50"


def test_memory_floor_is_ten_mebibytes() -> None:
    req = POLICY.validate({"memory_gb": "0.01"}, BOB, live())
    assert (req.memory_gb, req.memory_mb) == (0.01, 11)
    with pytest.raises(RequestError) as err:
        POLICY.validate({"memory_gb": "0.005"}, BOB, live())
    assert err.value.problems["memory_gb"] == (
        "the cpu partition allows 0.01 to 3.90625 GiB; you asked for 0.005 GiB"
    )


def test_partition_groups_are_enforced() -> None:
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "gpu"}, BOB, live())
    assert err.value.problems["partition"] == (
        "'gpu' is not a partition you may use; choose one of cpu, debug"
    )
    assert POLICY.partitions_for(BOB) == ["cpu", "debug"]
    assert POLICY.partitions_for(ALICE) == ["cpu", "gpu", "debug"]


def test_group_limits_tighten() -> None:
    carol = UserContext("carol", frozenset({"workshop"}))
    with pytest.raises(RequestError) as err:
        POLICY.validate({"cpus": 2}, carol, live())
    assert "allows 1 to 1" in err.value.problems["cpus"]
    # defaults are clipped to what the user may ask
    assert POLICY.defaults(carol, "cpu", live())["walltime_minutes"] == 60


def test_reservations_checked_against_live_cluster() -> None:
    assert POLICY.validate({"reservation": "workshop1"}, ALICE, live()).reservation == "workshop1"
    with pytest.raises(RequestError) as err:
        POLICY.validate({"reservation": "workshop1"}, BOB, live())
    assert err.value.problems["reservation"] == "reservation 'workshop1' is not open to you"
    with pytest.raises(RequestError) as err:
        POLICY.validate({"reservation": "nope"}, ALICE, live())
    assert "there is no reservation 'nope'" in err.value.problems["reservation"]
    with pytest.raises(RequestError) as err:
        POLICY.validate({"reservation": "workshop1", "partition": "debug"}, ALICE, live())
    assert "is for the cpu partition" in err.value.problems["reservation"]


def test_qos_only_from_the_site_list() -> None:
    assert POLICY.validate({"partition": "gpu", "qos": "high"}, ALICE, live()).qos == "high"
    with pytest.raises(RequestError) as err:
        POLICY.validate({"qos": "high"}, ALICE, live())
    assert "qos" in err.value.problems


def test_partition_missing_from_cluster() -> None:
    only_cpu = LiveCluster(partitions={"cpu": live().partitions["cpu"]})
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "debug"}, BOB, only_cpu)
    assert "does not exist on this cluster now" in err.value.problems["partition"]


def test_as_options_round_trips() -> None:
    req = POLICY.validate({"partition": "debug", "cpus": 2, "walltime": 20}, BOB, live())
    assert POLICY.validate(req.as_options(), BOB, live()) == req


def test_parse_reservations() -> None:
    text = (
        "ReservationName=ws StartTime=2026-11-27T10:00:00 EndTime=2026-11-27T12:00:00 "
        "Duration=02:00:00 Nodes=node[1-2] NodeCnt=2 CoreCnt=8 Features=(null) "
        "PartitionName=cpu Flags= TRES=cpu=8 Users=alice,bob Groups=(null) Accounts=(null) "
        "Licenses=(null) State=INACTIVE BurstBuffer=(null) Watts=n/a\n"
    )
    res = parse_reservations(text)["ws"]
    assert res.partition == "cpu" and res.users == {"alice", "bob"} and res.state == "INACTIVE"
    assert res.start == datetime(2026, 11, 27, 10)


@pytest.mark.parametrize(
    "text,minutes",
    [("90", 90), ("30:00", 30), ("1:30:00", 90), ("0-06", 360), ("0-6:30", 390),
     ("0-06:30:00", 390), ("0:30", 1), ("30:01", 31)],
)
def test_walltime_is_slurms_grammar(text: str, minutes: int) -> None:
    """The forms of ``sbatch --time``: "30:00" is 30 minutes, as Slurm and sinfo mean it."""
    assert POLICY.validate({"partition": "cpu", "walltime": text}, BOB, live()).walltime_minutes \
        == minutes


def _reservation(line: str) -> LiveCluster:
    text = ("ReservationName=r StartTime=2026-11-27T10:00:00 EndTime=2026-11-27T12:00:00 "
            "Flags=SPEC_NODES State=ACTIVE " + line)
    return live(reservations=parse_reservations(text))


def test_reservation_groups_bind() -> None:
    snap = _reservation("Nodes=debug1 PartitionName=(null) Users=(null) Groups=gpuusers")
    assert POLICY.validate({"partition": "debug", "reservation": "r"}, ALICE, snap).reservation
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "debug", "reservation": "r"}, BOB, snap)
    assert err.value.problems["reservation"] == "reservation 'r' is not open to you"


def test_reservation_exclusions_and_accounts_bind() -> None:
    snap = _reservation("Nodes=debug1 Users=-bob Groups=(null) Accounts=(null)")
    assert POLICY.validate({"partition": "debug", "reservation": "r"}, ALICE, snap)
    with pytest.raises(RequestError):
        POLICY.validate({"partition": "debug", "reservation": "r"}, BOB, snap)
    snap = _reservation("Nodes=debug1 Users=(null) Accounts=ml-2026")
    assert POLICY.validate({"partition": "debug", "reservation": "r", "account": "ml-2026"},
                           ALICE, snap)
    with pytest.raises(RequestError):
        POLICY.validate({"partition": "debug", "reservation": "r"}, ALICE, snap)


def test_reservation_partition_comes_from_its_nodes() -> None:
    """Slurm reports the default partition for a reservation made by node names."""
    snap = _reservation("Nodes=debug1 PartitionName=cpu Users=alice")
    assert POLICY.validate({"partition": "debug", "reservation": "r"}, ALICE, snap).reservation
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "cpu", "reservation": "r"}, ALICE, snap)
    assert "holds no nodes of the cpu partition" in err.value.problems["reservation"]


def test_accounts_are_bound_by_the_site_file() -> None:
    req = POLICY.validate({"partition": "cpu", "account": "ml-2026"}, ALICE, live())
    assert req.account == "ml-2026"
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "cpu", "account": "physics"}, ALICE, live())
    assert err.value.problems["account"] == (
        "'physics' is not an account you may charge; choose one of ml-2026, shared"
    )
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "cpu", "account": "ml-2026"}, BOB, live())
    assert "leave it empty" in err.value.problems["account"]
