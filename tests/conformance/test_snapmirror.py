"""Conformance: disaster recovery between two simulated clusters, driven by NetApp's own
Python client (netapp-ontap): cluster and SVM peering, SnapMirror relationship create,
initialize, update, break, resync and reverse resync.

Cluster A is the suite's simulator (ONTAP_SIM_PORT, SVM svm0); cluster B a second one
(ONTAP_SIM_B_PORT, cluster "sim-b", SVM "svm1"), both started by tests/tests/conformance.rs.
As on ONTAP, relationships are created and listed on the destination cluster, state
changes are PATCHes of `state` that only trigger the transition (the client polls), and
transfers are POSTs answered 201 without a job.
"""

import os
import time
import uuid as uuidlib

import pytest
import requests
from netapp_ontap import HostConnection
from netapp_ontap.error import NetAppRestError
from netapp_ontap.resources import (
    ClusterPeer,
    SnapmirrorPolicy,
    SnapmirrorRelationship,
    SnapmirrorTransfer,
    Snapshot,
    SvmPeer,
    Volume,
)

HOST = os.environ.get("ONTAP_SIM_HOST", "127.0.0.1")
SCHEME = os.environ.get("ONTAP_SIM_SCHEME", "http")
SVM_A = os.environ.get("ONTAP_SIM_SVM", "svm0")
AGGR = os.environ.get("ONTAP_SIM_AGGR", "aggr1")
CLUSTER_B, SVM_B = "sim-b", "svm1"
USER, PASSWORD = "admin", "admin"
PASSPHRASE = "conformance-passphrase"
MIB = 1024 * 1024


def _port(var):
    port = os.environ.get(var)
    if not port:
        pytest.fail(
            f"{var} is not set: run this suite through "
            "`cargo test -p stasis-tests --test conformance`, which starts both simulators",
            pytrace=False,
        )
    return int(port)


def _conn(port):
    return HostConnection(HOST, port=port, scheme=SCHEME, username=USER, password=PASSWORD, verify=False, poll_interval=0.2, poll_timeout=30)


def on(conn, resource):
    resource.set_connection(conn)
    return resource


def wait_for(what, resource, fields, done, timeout=30):
    """Re-read `resource` until `done(resource)`. `get()` returns a truthy
    NetAppResponse, so it must never be the condition itself."""
    def check():
        resource.get(fields=fields)
        try:
            return done(resource)
        except AttributeError:  # the field is absent until the first transfer starts
            return False
    return wait(what, check, timeout)


def wait(what, check, timeout=30):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def sim_put(port, vol_uuid, path, data):
    r = requests.put(f"{SCHEME}://{HOST}:{port}/sim/v1/volumes/{vol_uuid}/files/{path}", data=data, auth=(USER, PASSWORD))
    return r.status_code


def sim_get(port, vol_uuid, path):
    r = requests.get(f"{SCHEME}://{HOST}:{port}/sim/v1/volumes/{vol_uuid}/files/{path}", auth=(USER, PASSWORD))
    return r.status_code, r.content


@pytest.fixture(scope="module")
def sites():
    port_a, port_b = _port("ONTAP_SIM_PORT"), _port("ONTAP_SIM_B_PORT")
    a, b = _conn(port_a), _conn(port_b)
    # Cluster peering: each side names the other; the simulator takes IP:PORT.
    peer_a = on(a, ClusterPeer(remote={"ip_addresses": [f"{HOST}:{port_b}"]}, authentication={"passphrase": PASSPHRASE}))
    peer_a.post()
    assert peer_a.uuid
    on(a, peer_a).get(fields="status,name")
    assert (peer_a.name, peer_a.status.state) == (CLUSTER_B, "pending")
    peer_b = on(b, ClusterPeer(remote={"ip_addresses": [f"{HOST}:{port_a}"]}, authentication={"passphrase": PASSPHRASE}))
    peer_b.post()
    peer_a.get(fields="status")
    assert peer_a.status.state == "available"
    # SVM peering: initiated on A, accepted on B.
    svm_peer = on(a, SvmPeer(svm={"name": SVM_A}, peer={"svm": {"name": SVM_B}, "cluster": {"name": CLUSTER_B}}, applications=["snapmirror"]))
    svm_peer.post()
    pending = list(SvmPeer.get_collection(connection=b, fields="state,peer"))
    assert [p.state for p in pending] == ["pending"]
    assert pending[0].peer.cluster.name != CLUSTER_B
    accept = on(b, SvmPeer(uuid=pending[0].uuid))
    accept.state = "peered"
    accept.patch()
    assert [p.state for p in SvmPeer.get_collection(connection=a, fields="state")] == ["peered"]
    return {"a": a, "b": b, "port_a": port_a, "port_b": port_b}


def test_policies_are_listed_as_ontap_ships_them(sites):
    policies = {p.name: p for p in SnapmirrorPolicy.get_collection(connection=sites["b"], fields="*")}
    assert {"Asynchronous", "MirrorAllSnapshots", "Sync"} <= set(policies)
    assert policies["MirrorAllSnapshots"].type == "async"
    assert policies["Sync"].type == "sync"
    assert any(r.label == "sm_created" for r in policies["Asynchronous"].retention)


def test_relationship_lifecycle(sites):
    a, b, port_a, port_b = sites["a"], sites["b"], sites["port_a"], sites["port_b"]
    name = "dr" + uuidlib.uuid4().hex[:8]
    src = on(a, Volume(name=name, svm={"name": SVM_A}, aggregates=[{"name": AGGR}], size=64 * MIB))
    src.post()
    assert sim_put(port_a, src.uuid, "db/data.txt", b"version 1") == 204
    on(a, Snapshot(src.uuid, name="app_1")).post()

    # Create on the destination cluster, provisioning the DP volume.
    rel = on(b, SnapmirrorRelationship(
        source={"path": f"{SVM_A}:{name}"},
        destination={"path": f"{SVM_B}:{name}_dst"},
        policy={"name": "MirrorAllSnapshots"},
        create_destination={"enabled": True},
    ))
    rel.post()
    assert rel.uuid, "post() learned the relationship's uuid from its Location"
    rel.get(fields="*")
    assert rel.state == "uninitialized"
    assert rel.source.cluster.name != CLUSTER_B
    dst = list(Volume.get_collection(connection=b, name=f"{name}_dst", fields="type"))[0]
    assert dst.type == "dp"

    # Initialize.
    rel.state = "snapmirrored"
    rel.patch()
    wait_for("initialize", rel, "state,transfer,healthy", lambda r: r.state == "snapmirrored")
    assert rel.healthy
    assert sim_get(port_b, dst.uuid, "db/data.txt") == (200, b"version 1")
    assert sim_put(port_b, dst.uuid, "db/data.txt", b"no") == 400, "a mirrored DP volume is read-only"

    # Update carrying a named source snapshot: a transfer, 201 with its Location, no job.
    assert sim_put(port_a, src.uuid, "db/data.txt", b"version 2") == 204
    on(a, Snapshot(src.uuid, name="app_2")).post()
    transfer = on(b, SnapmirrorTransfer(rel.uuid, source_snapshot="app_2"))
    transfer.post()
    assert transfer.uuid
    wait_for("update", transfer, "state,bytes_transferred", lambda r: r.state in ("success", "failed"))
    assert transfer.state == "success"
    assert 0 < transfer.bytes_transferred < 64 * 1024
    rel.get(fields="exported_snapshot,last_transfer_type")
    assert (rel.exported_snapshot, rel.last_transfer_type) == ("app_2", "update")
    assert sim_get(port_b, dst.uuid, "db/data.txt") == (200, b"version 2")
    assert len(list(SnapmirrorTransfer.get_collection(rel.uuid, connection=b))) == 2

    # Break: B serves.
    rel.state = "broken_off"
    rel.patch()
    rel.get(fields="state")
    assert rel.state == "broken_off"
    dst.get(fields="type")
    assert dst.type == "rw"
    assert sim_put(port_b, dst.uuid, "db/data.txt", b"written at B") == 204

    # Resync: B's writes are discarded, B follows A again.
    rel.state = "snapmirrored"
    rel.patch()
    wait_for("resync", rel, "state,last_transfer_type,transfer", lambda r: (r.state == "snapmirrored" and r.transfer.state == "success"))
    assert rel.last_transfer_type == "resync"
    assert sim_get(port_b, dst.uuid, "db/data.txt") == (200, b"version 2")

    # Failover, then reverse resync: A becomes the destination of B.
    rel.state = "broken_off"
    rel.patch()
    assert sim_put(port_b, dst.uuid, "db/data.txt", b"served by B") == 204
    rel.source = {"path": f"{SVM_B}:{name}_dst"}
    rel.destination = {"path": f"{SVM_A}:{name}"}
    rel.state = "snapmirrored"
    rel.patch()
    assert not any(r.uuid == rel.uuid for r in SnapmirrorRelationship.get_collection(connection=b))
    back = [r for r in SnapmirrorRelationship.get_collection(connection=a, fields="*") if r.destination.path == f"{SVM_A}:{name}"]
    assert len(back) == 1 and back[0].source.path == f"{SVM_B}:{name}_dst"
    back = on(a, back[0])
    wait_for("reverse resync", back, "state,transfer", lambda r: (r.state == "snapmirrored" and r.transfer.state == "success"))
    assert sim_get(port_a, src.uuid, "db/data.txt") == (200, b"served by B")
    src.get(fields="type")
    assert src.type == "dp"


def test_relationship_refusals_carry_ontap_codes(sites):
    b = sites["b"]
    rel = on(b, SnapmirrorRelationship(source={"path": f"{SVM_A}:no_such_volume"}, destination={"path": f"{SVM_B}:nsv_dst"}, create_destination={"enabled": True}))
    with pytest.raises(NetAppRestError):
        rel.post()
    bad = on(b, SnapmirrorRelationship(source={"path": "no-colon"}, destination={"path": f"{SVM_B}:x"}))
    with pytest.raises(NetAppRestError) as err:
        bad.post()
    assert err.value.http_err_response.http_response.json()["error"]["code"] == "13303852"
