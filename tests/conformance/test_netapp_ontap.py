"""Conformance suite: NetApp's official Python client (netapp-ontap) against ontap-sim.

The simulator must speak ONTAP REST well enough that the unmodified client works.
Every expectation here is what the real client needs or what real ONTAP does;
never relax one to match the simulator.

Connection (set by tests/tests/conformance.rs, or by hand):
    ONTAP_SIM_HOST    (default 127.0.0.1)
    ONTAP_SIM_PORT    (required)
    ONTAP_SIM_SCHEME  (default http)
Simulator defaults assumed: cluster "sim-a", SVM "svm0", aggregate "aggr1",
user admin/admin (overridable with ONTAP_SIM_CLUSTER, ONTAP_SIM_SVM,
ONTAP_SIM_AGGR).

Every HTTP exchange of the client is printed (pytest shows it for failing
tests only), so a failure shows exactly what went over the wire.
"""

import json
import os
import time
import uuid as uuidlib
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from requests.structures import CaseInsensitiveDict
from netapp_ontap import HostConnection, config
from netapp_ontap.error import NetAppRestError
from netapp_ontap.resources import (
    Aggregate,
    Cluster,
    ConsistencyGroup,
    ConsistencyGroupSnapshot,
    Job,
    Snapshot,
    Svm,
    Volume,
)

HOST = os.environ.get("ONTAP_SIM_HOST", "127.0.0.1")
SCHEME = os.environ.get("ONTAP_SIM_SCHEME", "http")
CLUSTER = os.environ.get("ONTAP_SIM_CLUSTER", "sim-a")
SVM = os.environ.get("ONTAP_SIM_SVM", "svm0")
AGGR = os.environ.get("ONTAP_SIM_AGGR", "aggr1")
USER, PASSWORD = "admin", "admin"

MIB = 1024 * 1024
VOL_SIZE = 100 * MIB

# ONTAP error codes (shared/ontap/error-codes-9.19.1.md)
E_ENTRY_DOESNT_EXIST = 4
E_DUP_VOLUME_NAME = 917526
E_VOLUME_NAME_FIRST_CHAR = 917887
E_VOLUME_NAME_TOO_LONG = 917886
E_DUP_SNAPSHOT_NAME = 525059
E_VOLUME_HAS_CLONES = 524615
E_SNAPSHOT_HAS_OWNER = 1638543
E_RESTORE_WITH_OTHER_CHANGE = 918251


def _port():
    port = os.environ.get("ONTAP_SIM_PORT")
    if not port:
        pytest.fail(
            "ONTAP_SIM_PORT is not set: run this suite through "
            "`cargo test -p stasis-tests --test conformance`, or start ontap-sim "
            "and export ONTAP_SIM_PORT",
            pytrace=False,
        )
    return int(port)


def origin():
    return f"{SCHEME}://{HOST}:{_port()}"


# ---------------------------------------------------------------------------
# Wire recorder
# ---------------------------------------------------------------------------


class Wire:
    """Records (and prints) every exchange made through a HostConnection's session."""

    def __init__(self):
        self.log = []

    def hook(self, resp, *args, **kwargs):  # requests response hook
        req = resp.request
        body = req.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        try:
            resp_json = resp.json()
        except ValueError:
            resp_json = None
        entry = {
            "method": req.method,
            "url": req.url,
            "path": req.path_url,
            "req_body": body,
            "req_headers": dict(req.headers),
            "status": resp.status_code,
            "headers": CaseInsensitiveDict(resp.headers),  # header names are case-insensitive
            "json": resp_json,
            "text": resp.text,
        }
        self.log.append(entry)
        loc = resp.headers.get("Location")
        print(f"> {req.method} {req.path_url} {body or ''}")
        print(
            f"< {resp.status_code}"
            + (f" Location: {loc}" if loc else "")
            + f" {resp.text[:600]}"
        )
        return resp

    def mark(self):
        return len(self.log)

    def since(self, mark):
        return self.log[mark:]


@pytest.fixture(scope="session")
def wire():
    return Wire()


@pytest.fixture(scope="session")
def conn(wire):
    connection = HostConnection(
        HOST,
        port=_port(),
        scheme=SCHEME,
        username=USER,
        password=PASSWORD,
        verify=False,
        poll_interval=0.2,
        poll_timeout=30,
    )
    connection.session.hooks["response"].append(wire.hook)
    config.CONNECTION = connection
    yield connection
    config.CONNECTION = None


def token():
    """A short unique token usable inside ONTAP object names."""
    return "t" + uuidlib.uuid4().hex[:10]


@pytest.fixture
def created(conn):
    """Tracks volumes made by a test and deletes them afterwards (newest first,
    so that clones go before their parents). Best effort: the simulator is
    throw-away anyway."""
    vols = []
    yield vols
    for vol_uuid in reversed(vols):
        try:
            Volume(uuid=vol_uuid).delete()
        except NetAppRestError:
            pass


def make_volume(created, name, size=VOL_SIZE, **extra):
    vol = Volume(
        name=name,
        svm={"name": SVM},
        aggregates=[{"name": AGGR}],
        size=size,
        **extra,
    )
    vol.post()
    assert getattr(vol, "uuid", None), f"volume {name}: post() did not learn a uuid"
    created.append(vol.uuid)
    return vol


def make_snapshot(vol_uuid, name):
    snap = Snapshot(vol_uuid, name=name)
    snap.post()
    assert getattr(snap, "uuid", None), f"snapshot {name}: post() did not learn a uuid"
    return snap


def snapshot_names(vol_uuid):
    return sorted(s.name for s in Snapshot.get_collection(vol_uuid, fields="name"))


def expect_ontap_error(wire, action, code):
    """Runs `action` (a client write) and checks that ONTAP refused it with `code`.

    Real ONTAP refuses either synchronously (HTTP 4xx, body {"error": {"code":
    "<digits>", "message", "target"}}) or by accepting the write (202 + job) and
    failing the job (job.state "failure", job.code = the ONTAP code). The client
    raises NetAppRestError in both cases; for the job case it carries no code, so
    the job is read back from the wire log. Returns (kind, message).
    """
    mark = wire.mark()
    with pytest.raises(NetAppRestError) as info:
        action()
    err = info.value
    if err.http_err_response is not None:
        status = err.status_code
        body = err.response_body
        assert body is not None, f"error response is not JSON: {err.response_text!r}"
        assert 400 <= status < 600, status
        error = body.get("error")
        assert isinstance(error, dict), f"no 'error' object in {body}"
        assert error.get("code") == str(code), (
            f"expected ONTAP error code {code!r} (a string of digits), got {error!r}"
        )
        assert error.get("message"), f"error without message: {error}"
        return "http", error["message"]
    jobs = [
        e["json"]["job"]
        for e in wire.since(mark)
        if e["method"] in ("POST", "PATCH", "DELETE")
        and isinstance(e["json"], dict)
        and isinstance(e["json"].get("job"), dict)
    ]
    assert jobs, f"NetAppRestError neither from an HTTP error nor from a job: {err}"
    job = Job(uuid=jobs[-1]["uuid"])
    job.get(fields="uuid,state,code,message")
    assert job.state == "failure", f"job {job} did not fail but client raised {err}"
    assert int(job.code) == code, f"expected job code {code}, got {job.code}: {job.message}"
    return "job", job.message


def error_of(exc):
    resp = exc.http_err_response
    assert resp is not None, f"no HTTP response in {exc!r}"
    return resp.http_response.status_code, resp.http_response.json()


def same_request_target(sent, href):
    """True if the request target `sent` is `href` up to query-string encoding
    (netapp-ontap re-encodes every URL's query: parse_qsl, then urlencode with
    quote, so ',' '*' '|' '!' ' ' go out as %2C %2A %7C %21 %20)."""
    a, b = urlsplit(sent), urlsplit(href)
    return a.path == b.path and sorted(parse_qsl(a.query)) == sorted(parse_qsl(b.query))


def wait_for(predicate, what, timeout=30.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- data plane (simulator control API, not ONTAP) --------------------------


def sim_url(path):
    return f"{origin()}/sim/v1/{path}"


def put_file(vol_uuid, path, data):
    r = requests.put(sim_url(f"volumes/{vol_uuid}/files/{path}"), data=data, auth=(USER, PASSWORD))
    assert 200 <= r.status_code < 300, f"PUT file {path}: {r.status_code} {r.text}"


def get_file(vol_uuid, path):
    r = requests.get(sim_url(f"volumes/{vol_uuid}/files/{path}"), auth=(USER, PASSWORD))
    assert r.status_code == 200, f"GET file {path}: {r.status_code} {r.text}"
    return r.content


def get_snapshot_file(vol_uuid, snap_name, path):
    r = requests.get(
        sim_url(f"volumes/{vol_uuid}/snapshots/{snap_name}/files/{path}"), auth=(USER, PASSWORD)
    )
    assert r.status_code == 200, f"GET {snap_name}:{path}: {r.status_code} {r.text}"
    return r.content


# ---------------------------------------------------------------------------
# Cluster, SVMs, aggregates, authentication
# ---------------------------------------------------------------------------


def test_cluster_get(conn):
    cluster = Cluster()
    cluster.get()
    assert cluster.name == CLUSTER
    assert cluster.uuid
    version = cluster.version
    assert isinstance(version.generation, int) and version.generation == 9
    assert isinstance(version.major, int) and isinstance(version.minor, int)
    assert version.full and "NetApp Release" in version.full


def test_cluster_get_with_fields(conn):
    cluster = Cluster()
    cluster.get(fields="name,version")
    assert cluster.name == CLUSTER
    assert cluster.version.generation == 9


def test_svm_collection(conn):
    svms = list(Svm.get_collection())
    names = [s.name for s in svms]
    assert SVM in names
    for svm in svms:
        assert svm.uuid
        assert svm.to_dict()["_links"]["self"]["href"] == f"/api/svm/svms/{svm.uuid}"
    svm = next(iter(Svm.get_collection(name=SVM, fields="name,state,uuid")))
    assert svm.name == SVM
    assert svm.state == "running"
    again = Svm(uuid=svm.uuid)
    again.get()
    assert again.name == SVM


def test_aggregate_collection(conn):
    aggrs = list(Aggregate.get_collection(fields="name,uuid,state"))
    by_name = {a.name: a for a in aggrs}
    assert AGGR in by_name
    aggr = by_name[AGGR]
    assert aggr.uuid
    assert aggr.state == "online"
    again = Aggregate(uuid=aggr.uuid)
    again.get()
    assert again.name == AGGR


def test_wrong_password_is_401(conn):
    bad = HostConnection(
        HOST,
        port=_port(),
        scheme=SCHEME,
        username=USER,
        password="not-the-password",
        verify=False,
        poll_interval=0.2,
    )
    with pytest.raises(NetAppRestError) as info:
        cluster = Cluster()
        cluster.set_connection(bad)
        cluster.get()
    assert info.value.status_code == 401


def test_no_credentials_is_401(conn):
    r = requests.get(f"{origin()}/api/cluster")
    assert r.status_code == 401


# ---------------------------------------------------------------------------
# Volumes
# ---------------------------------------------------------------------------


def test_volume_create_learns_uuid_from_location(conn, wire, created):
    name = f"v{token()}"
    mark = wire.mark()
    vol = make_volume(created, name)
    posts = [e for e in wire.since(mark) if e["method"] == "POST"]
    assert len(posts) == 1
    post = posts[0]
    assert post["path"].split("?")[0] == "/api/storage/volumes"
    sent = json.loads(post["req_body"])
    assert sent["name"] == name
    assert sent["svm"] == {"name": SVM}
    assert sent["aggregates"] == [{"name": AGGR}]
    assert sent["size"] == VOL_SIZE
    assert "Location" in post["headers"], "a create must answer with a Location header"
    location = post["headers"]["Location"]
    assert location.startswith("/api/storage/volumes"), location
    # Either the full form (/api/storage/volumes/<uuid>) or ONTAP's partial
    # form (/api/storage/volumes/?name=<name>) which the client re-queries.
    if "?" in location:
        requeries = [
            e
            for e in wire.since(mark)
            if e["method"] == "GET" and e["path"] == location
        ]
        assert requeries, "client should have re-queried the partial Location"
        assert requeries[-1]["status"] == 200
    uuidlib.UUID(vol.uuid)  # a real uuid

    # The posted object itself can be read back. After a partial Location the
    # client keeps its query ("name=<name>") and sends it with every later get()
    # of this object: GET /api/storage/volumes/<uuid>?name=<name>&fields=...
    vol.get(fields="name,size")
    assert vol.name == name and vol.size == VOL_SIZE

    # the volume is there, as created
    got = Volume(uuid=vol.uuid)
    got.get()
    assert got.name == name
    assert got.uuid == vol.uuid
    assert got.svm.name == SVM
    assert got.size == VOL_SIZE
    assert got.state == "online"
    assert got.type == "rw"
    assert [a.name for a in got.aggregates] == [AGGR]
    assert got.to_dict()["_links"]["self"]["href"] == f"/api/storage/volumes/{vol.uuid}"


def test_volume_write_is_a_job_the_client_polls(conn, wire, created):
    name = f"v{token()}"
    mark = wire.mark()
    make_volume(created, name)
    post = [e for e in wire.since(mark) if e["method"] == "POST"][0]
    # the client sends no return_timeout: the ONTAP write default is 0 -> 202 + job
    assert post["status"] == 202, f"volume POST answered {post['status']}, expected 202"
    job = post["json"]["job"]
    job_uuid = job["uuid"]
    href = job["_links"]["self"]["href"]
    assert href == f"/api/cluster/jobs/{job_uuid}"
    polls = [
        e for e in wire.since(mark) if e["method"] == "GET" and e["path"].startswith(href)
    ]
    assert polls, "the client should have polled the job"
    assert all(p["status"] == 200 for p in polls)
    assert polls[-1]["json"]["state"] == "success"
    for p in polls:
        assert p["json"]["state"] in ("queued", "running", "paused", "success", "failure")

    got = Job(uuid=job_uuid)
    got.get()
    assert got.state == "success"
    assert got.code == 0
    assert got.uuid == job_uuid
    assert got.description
    assert got.start_time is not None and got.end_time is not None
    assert got.end_time >= got.start_time


def test_volume_create_with_return_timeout_answers_201(conn, wire, created):
    name = f"v{token()}"
    vol = Volume(name=name, svm={"name": SVM}, aggregates=[{"name": AGGR}], size=VOL_SIZE)
    mark = wire.mark()
    vol.post(return_timeout=15)
    created.append(vol.uuid)
    post = [e for e in wire.since(mark) if e["method"] == "POST"][0]
    assert "return_timeout=15" in post["path"]
    assert post["status"] == 201, f"job done within return_timeout -> 201, got {post['status']}"
    assert "Location" in post["headers"]
    assert post["json"]["job"]["uuid"]
    check = Volume(uuid=vol.uuid)
    check.get(fields="name")
    assert check.name == name


def test_volume_get_tolerates_filter_params(conn, created):
    name = f"v{token()}"
    vol = make_volume(created, name)
    got = Volume(uuid=vol.uuid)
    got.get(name=name, fields="name,size")
    assert got.name == name and got.size == VOL_SIZE


def test_volume_find_and_hydrate(conn, created):
    """find() sends fields=* with the query; post(hydrate=True) re-reads with fields=*."""
    name = f"v{token()}"
    vol = Volume(name=name, svm={"name": SVM}, aggregates=[{"name": AGGR}], size=VOL_SIZE)
    vol.post(hydrate=True)
    created.append(vol.uuid)
    assert vol.state == "online" and vol.size == VOL_SIZE and vol.svm.name == SVM
    found = Volume.find(name=name)
    assert found is not None and found.uuid == vol.uuid
    assert found.size == VOL_SIZE and found.type == "rw"
    assert Volume.find(name=f"absent{token()}") is None


def test_volume_unknown_uuid_is_404(conn):
    with pytest.raises(NetAppRestError) as info:
        Volume(uuid=str(uuidlib.uuid4())).get()
    status, body = error_of(info.value)
    assert status == 404
    assert body["error"]["code"] == str(E_ENTRY_DOESNT_EXIST)


def test_volume_collection_default_fields_are_keys_only(conn, created):
    name = f"v{token()}"
    vol = make_volume(created, name)
    recs = list(Volume.get_collection(name=name))
    assert len(recs) == 1
    rec = recs[0].to_dict()
    assert rec["uuid"] == vol.uuid and rec["name"] == name
    assert rec["_links"]["self"]["href"] == f"/api/storage/volumes/{vol.uuid}"
    assert set(rec) <= {"uuid", "name", "_links"}, f"collection GET without fields returned {rec}"


def test_volume_collection_filters(conn, created):
    tok = token()
    names = [f"flt{tok}_{i}" for i in range(3)]
    for n in names:
        make_volume(created, n)
    other = make_volume(created, f"oth{tok}")

    recs = list(Volume.get_collection(fields="name,size,svm", name=f"flt{tok}_*"))
    assert sorted(r.name for r in recs) == names
    for r in recs:
        assert r.size == VOL_SIZE
        assert r.svm.name == SVM

    recs = list(Volume.get_collection(**{"svm.name": SVM, "name": f"*{tok}*"}))
    assert sorted(r.name for r in recs) == sorted(names + [other.name])

    assert list(Volume.get_collection(**{"svm.name": "no_such_svm", "name": f"*{tok}*"})) == []

    recs = list(Volume.get_collection(name=f"{names[0]}|{names[2]}"))
    assert sorted(r.name for r in recs) == [names[0], names[2]]

    recs = list(Volume.get_collection(**{"name": f"!{names[1]}", "svm.name": SVM}))
    got = {r.name for r in recs}
    assert names[1] not in got and {names[0], names[2], other.name} <= got

    recs = list(Volume.get_collection(name=f"flt{tok}_*", order_by="name desc"))
    assert [r.name for r in recs] == sorted(names, reverse=True)

    assert Volume.count_collection(name=f"flt{tok}_*") == 3


def test_volume_collection_paging(conn, wire, created):
    tok = token()
    names = sorted(f"pg{tok}_{i}" for i in range(5))
    for n in names:
        make_volume(created, n)

    mark = wire.mark()
    recs = list(Volume.get_collection(max_records=2, fields="name,uuid", name=f"pg{tok}_*"))
    got = [r.name for r in recs]
    assert sorted(got) == names, f"every volume exactly once, got {got}"
    assert len({r.uuid for r in recs}) == 5

    gets = [e for e in wire.since(mark) if e["method"] == "GET"]
    assert len(gets) >= 3, "5 records at max_records=2 take at least 3 pages"
    for page in gets:
        assert page["status"] == 200
        assert page["json"]["num_records"] == len(page["json"]["records"]) <= 2
    for page, following in zip(gets, gets[1:]):
        nxt = page["json"]["_links"]["next"]["href"]
        assert nxt.startswith("/api/storage/volumes"), nxt
        # the client follows _links.next.href (re-encoding its query string)
        assert same_request_target(following["path"], nxt), (following["path"], nxt)
        # next repeats every query parameter (the client drops its own)
        assert "max_records=2" in nxt
        assert "fields=" in nxt
        assert f"pg{tok}_" in requests.utils.unquote(nxt)
    assert "next" not in gets[-1]["json"].get("_links", {})


def test_volume_patch_comment_and_size(conn, wire, created):
    name = f"v{token()}"
    vol = make_volume(created, name)
    v = Volume(uuid=vol.uuid)
    v.get()
    v.comment = "conformance comment"
    v.size = 2 * VOL_SIZE
    mark = wire.mark()
    v.patch()
    patch = [e for e in wire.since(mark) if e["method"] == "PATCH"][0]
    assert patch["path"].split("?")[0] == f"/api/storage/volumes/{vol.uuid}"
    assert json.loads(patch["req_body"]) == {"comment": "conformance comment", "size": 2 * VOL_SIZE}
    assert patch["status"] in (200, 202)

    back = Volume(uuid=vol.uuid)
    back.get(fields="comment,size,name")
    assert back.comment == "conformance comment"
    assert back.size == 2 * VOL_SIZE
    assert back.name == name


def test_volume_accepts_long_documented_fields_list(conn, created):
    """Idempotent tools ask for long `fields=` lists; every documented field must
    be accepted (absent or default when not modelled)."""
    vol = make_volume(created, f"v{token()}")
    fields = ",".join(
        [
            "name", "uuid", "size", "comment", "state", "type", "style", "svm",
            "aggregates", "language", "space.size", "space.available", "space.used",
            "space.snapshot.used", "space.snapshot.reserve_percent", "snapshot_policy",
            "nas.path", "nas.security_style", "nas.export_policy.name", "guarantee.type",
            "efficiency.compression", "qos.policy.name", "tiering.policy",
            "encryption.enabled", "autosize.mode", "clone.is_flexclone",
            "snapshot_directory_access_enabled", "snaplock.type", "analytics.state",
            "anti_ransomware.state", "create_time", "is_svm_root", "snapshot_count",
        ]
    )
    got = Volume(uuid=vol.uuid)
    got.get(fields=fields)
    assert got.name == vol.name and got.size == VOL_SIZE
    assert got.space.snapshot.reserve_percent == 5


def test_volume_delete_sends_empty_json_body(conn, wire):
    name = f"v{token()}"
    vol = Volume(name=name, svm={"name": SVM}, aggregates=[{"name": AGGR}], size=VOL_SIZE)
    vol.post()
    mark = wire.mark()
    Volume(uuid=vol.uuid).delete()
    delete = [e for e in wire.since(mark) if e["method"] == "DELETE"][0]
    assert delete["req_body"] == "{}"
    assert delete["status"] in (200, 202)
    assert list(Volume.get_collection(name=name)) == []
    with pytest.raises(NetAppRestError) as info:
        Volume(uuid=vol.uuid).get()
    assert info.value.status_code == 404


# ---------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------


def test_snapshot_lifecycle(conn, wire, created):
    vol = make_volume(created, f"v{token()}")
    mark = wire.mark()
    s1 = make_snapshot(vol.uuid, "s1")
    post = [e for e in wire.since(mark) if e["method"] == "POST"][0]
    assert post["path"].split("?")[0] == f"/api/storage/volumes/{vol.uuid}/snapshots"
    assert json.loads(post["req_body"]) == {"name": "s1"}
    assert "Location" in post["headers"]
    make_snapshot(vol.uuid, "s2")

    assert snapshot_names(vol.uuid) == ["s1", "s2"]

    got = Snapshot(vol.uuid, uuid=s1.uuid)
    got.get()
    assert got.name == "s1"
    assert got.uuid == s1.uuid
    assert got.volume.uuid == vol.uuid
    assert got.create_time is not None
    assert got.to_dict()["_links"]["self"]["href"] == f"/api/storage/volumes/{vol.uuid}/snapshots/{s1.uuid}"

    # rename
    got.name = "s1_renamed"
    mark = wire.mark()
    got.patch()
    patch = [e for e in wire.since(mark) if e["method"] == "PATCH"][0]
    assert json.loads(patch["req_body"]) == {"name": "s1_renamed"}
    again = Snapshot(vol.uuid, uuid=s1.uuid)
    again.get()
    assert again.name == "s1_renamed"
    assert snapshot_names(vol.uuid) == ["s1_renamed", "s2"]
    found = list(Snapshot.get_collection(vol.uuid, name="s1_renamed"))
    assert [s.uuid for s in found] == [s1.uuid]

    # delete
    Snapshot(vol.uuid, uuid=s1.uuid).delete()
    assert snapshot_names(vol.uuid) == ["s2"]
    with pytest.raises(NetAppRestError) as info:
        Snapshot(vol.uuid, uuid=s1.uuid).get()
    assert info.value.status_code == 404


def test_snapshot_data_plane(conn, created):
    vol = make_volume(created, f"v{token()}")
    put_file(vol.uuid, "dir/a.txt", b"version one")
    make_snapshot(vol.uuid, "s1")
    put_file(vol.uuid, "dir/a.txt", b"version two")
    assert get_file(vol.uuid, "dir/a.txt") == b"version two"
    assert get_snapshot_file(vol.uuid, "s1", "dir/a.txt") == b"version one"


# ---------------------------------------------------------------------------
# SnapRestore
# ---------------------------------------------------------------------------


def test_snaprestore(conn, wire, created):
    vol = make_volume(created, f"v{token()}")
    put_file(vol.uuid, "data.bin", b"\x00old bytes\xff")
    make_snapshot(vol.uuid, "s1")
    put_file(vol.uuid, "data.bin", b"newer bytes")
    make_snapshot(vol.uuid, "s2")
    put_file(vol.uuid, "data.bin", b"newest bytes")
    make_snapshot(vol.uuid, "s3")
    assert snapshot_names(vol.uuid) == ["s1", "s2", "s3"]

    mark = wire.mark()
    Volume(uuid=vol.uuid).patch(**{"restore_to.snapshot.name": "s1"})
    patch = [e for e in wire.since(mark) if e["method"] == "PATCH"][0]
    assert patch["path"].startswith(f"/api/storage/volumes/{vol.uuid}?")
    assert "restore_to.snapshot.name=s1" in patch["path"]
    assert patch["req_body"] == "{}"
    assert patch["status"] in (200, 202)

    assert get_file(vol.uuid, "data.bin") == b"\x00old bytes\xff"
    # every snapshot newer than s1 is gone
    assert snapshot_names(vol.uuid) == ["s1"]


def test_snaprestore_with_other_change_is_refused(conn, wire, created):
    vol = make_volume(created, f"v{token()}")
    make_snapshot(vol.uuid, "s1")
    v = Volume(uuid=vol.uuid)
    v.comment = "not allowed together with a restore"
    expect_ontap_error(
        wire,
        lambda: v.patch(**{"restore_to.snapshot.name": "s1"}),
        E_RESTORE_WITH_OTHER_CHANGE,
    )


# ---------------------------------------------------------------------------
# FlexClone
# ---------------------------------------------------------------------------


def test_flexclone(conn, wire, created):
    tok = token()
    parent = make_volume(created, f"par{tok}")
    put_file(parent.uuid, "f.txt", b"parent at snapshot")
    psnap = make_snapshot(parent.uuid, "clonebase")
    put_file(parent.uuid, "f.txt", b"parent after snapshot")

    clone_name = f"cln{tok}"
    clone = Volume(
        name=clone_name,
        svm={"name": SVM},
        clone={
            "parent_volume": {"name": parent.name},
            "parent_snapshot": {"name": "clonebase"},
            "is_flexclone": True,
        },
    )
    mark = wire.mark()
    clone.post()
    created.append(clone.uuid)
    post = [e for e in wire.since(mark) if e["method"] == "POST"][0]
    assert json.loads(post["req_body"])["clone"] == {
        "parent_volume": {"name": parent.name},
        "parent_snapshot": {"name": "clonebase"},
        "is_flexclone": True,
    }

    got = Volume(uuid=clone.uuid)
    # clone.parent_* are "expensive" fields: ONTAP returns them only when named
    got.get(
        fields="name,svm,clone.is_flexclone,clone.parent_volume.name,clone.parent_snapshot.name"
    )
    assert got.name == clone_name
    assert got.clone.is_flexclone is True
    assert got.clone.parent_volume.name == parent.name
    assert got.clone.parent_snapshot.name == "clonebase"

    # the clone holds the parent's snapshot image; clone and parent are independent
    assert get_file(clone.uuid, "f.txt") == b"parent at snapshot"
    put_file(clone.uuid, "f.txt", b"written in clone")
    assert get_file(parent.uuid, "f.txt") == b"parent after snapshot"

    # the parent snapshot is owned by the clone
    snap = Snapshot(parent.uuid, uuid=psnap.uuid)
    snap.get(fields="name,owners")
    assert "volume_clone" in snap.owners

    # ... so it cannot be deleted, nor can the parent volume
    expect_ontap_error(
        wire, lambda: Snapshot(parent.uuid, uuid=psnap.uuid).delete(), E_SNAPSHOT_HAS_OWNER
    )
    assert "clonebase" in snapshot_names(parent.uuid)
    expect_ontap_error(wire, lambda: Volume(uuid=parent.uuid).delete(), E_VOLUME_HAS_CLONES)
    assert [v.uuid for v in Volume.get_collection(name=parent.name)] == [parent.uuid]

    # split the clone: it stops being a FlexClone and releases the snapshot
    split = Volume(uuid=clone.uuid)
    split.clone = {"split_initiated": True}
    mark = wire.mark()
    split.patch()
    patch = [e for e in wire.since(mark) if e["method"] == "PATCH"][0]
    assert json.loads(patch["req_body"]) == {"clone": {"split_initiated": True}}

    def split_done():
        v = Volume(uuid=clone.uuid)
        v.get(fields="clone.is_flexclone")
        return not v.clone.is_flexclone

    wait_for(split_done, "the clone split to complete")

    def released():
        s = Snapshot(parent.uuid, uuid=psnap.uuid)
        s.get(fields="owners")
        return "volume_clone" not in (getattr(s, "owners", None) or [])

    wait_for(released, "the parent snapshot to lose its volume_clone owner")
    assert get_file(clone.uuid, "f.txt") == b"written in clone"

    Snapshot(parent.uuid, uuid=psnap.uuid).delete()
    assert "clonebase" not in snapshot_names(parent.uuid)
    Volume(uuid=parent.uuid).delete()
    created.remove(parent.uuid)
    assert list(Volume.get_collection(name=parent.name)) == []
    assert get_file(clone.uuid, "f.txt") == b"written in clone"


def test_deleting_clone_releases_parent(conn, wire, created):
    tok = token()
    parent = make_volume(created, f"par{tok}")
    psnap = make_snapshot(parent.uuid, "base")
    clone = Volume(
        name=f"cln{tok}",
        svm={"name": SVM},
        clone={
            "parent_volume": {"name": parent.name},
            "parent_snapshot": {"name": "base"},
            "is_flexclone": True,
        },
    )
    clone.post()
    Volume(uuid=clone.uuid).delete()
    snap = Snapshot(parent.uuid, uuid=psnap.uuid)
    snap.get(fields="owners")
    assert "volume_clone" not in (getattr(snap, "owners", None) or [])
    Snapshot(parent.uuid, uuid=psnap.uuid).delete()
    Volume(uuid=parent.uuid).delete()
    created.remove(parent.uuid)


# ---------------------------------------------------------------------------
# Consistency groups
# ---------------------------------------------------------------------------


def make_cg(created, tok):
    v1 = make_volume(created, f"cga{tok}")
    v2 = make_volume(created, f"cgb{tok}")
    cg = ConsistencyGroup(
        name=f"cg{tok}",
        svm={"name": SVM},
        # existing volumes join with provisioning_options.action "add" (ONTAP docs)
        volumes=[
            {"name": v1.name, "provisioning_options": {"action": "add"}},
            {"name": v2.name, "provisioning_options": {"action": "add"}},
        ],
    )
    cg.post()
    assert getattr(cg, "uuid", None), "consistency group post() did not learn a uuid"
    return cg, v1, v2


def test_consistency_group_create(conn, wire, created):
    tok = token()
    mark = wire.mark()
    cg, v1, v2 = make_cg(created, tok)
    post = [
        e
        for e in wire.since(mark)
        if e["method"] == "POST" and e["path"].startswith("/api/application/consistency-groups")
    ][0]
    assert "Location" in post["headers"]

    got = ConsistencyGroup(uuid=cg.uuid)
    got.get(fields="name,svm,volumes")
    assert got.name == f"cg{tok}"
    assert got.svm.name == SVM
    assert sorted(v.name for v in got.volumes) == sorted([v1.name, v2.name])
    assert {v.uuid for v in got.volumes} == {v1.uuid, v2.uuid}

    listed = list(ConsistencyGroup.get_collection(name=f"cg{tok}"))
    assert [c.uuid for c in listed] == [cg.uuid]


def test_consistency_group_snapshot(conn, wire, created):
    tok = token()
    cg, v1, v2 = make_cg(created, tok)
    mark = wire.mark()
    cgs = ConsistencyGroupSnapshot(cg.uuid, name="cgsnap1")
    cgs.post()
    assert getattr(cgs, "uuid", None)
    post = [e for e in wire.since(mark) if e["method"] == "POST"][0]
    assert post["path"].split("?")[0] == f"/api/application/consistency-groups/{cg.uuid}/snapshots"
    assert json.loads(post["req_body"]) == {"name": "cgsnap1"}

    listed = list(ConsistencyGroupSnapshot.get_collection(cg.uuid, fields="name,uuid"))
    assert [(s.name, s.uuid) for s in listed] == [("cgsnap1", cgs.uuid)]
    got = ConsistencyGroupSnapshot(cg.uuid, uuid=cgs.uuid)
    got.get()
    assert got.name == "cgsnap1"

    # the same-named snapshot exists in every member volume
    for vol in (v1, v2):
        assert snapshot_names(vol.uuid) == ["cgsnap1"]


def test_consistency_group_restore(conn, created):
    tok = token()
    cg, v1, v2 = make_cg(created, tok)
    put_file(v1.uuid, "db/data", b"v1 consistent")
    put_file(v2.uuid, "log/redo", b"v2 consistent")
    ConsistencyGroupSnapshot(cg.uuid, name="good").post()
    put_file(v1.uuid, "db/data", b"v1 later")
    put_file(v2.uuid, "log/redo", b"v2 later")
    ConsistencyGroupSnapshot(cg.uuid, name="later").post()

    restore = ConsistencyGroup(uuid=cg.uuid)
    restore.restore_to = {"snapshot": {"name": "good"}}
    restore.patch()

    assert get_file(v1.uuid, "db/data") == b"v1 consistent"
    assert get_file(v2.uuid, "log/redo") == b"v2 consistent"
    for vol in (v1, v2):
        assert snapshot_names(vol.uuid) == ["good"]


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_duplicate_volume_name(conn, wire, created):
    name = f"v{token()}"
    make_volume(created, name)
    dup = Volume(name=name, svm={"name": SVM}, aggregates=[{"name": AGGR}], size=VOL_SIZE)
    expect_ontap_error(wire, dup.post, E_DUP_VOLUME_NAME)
    assert len(list(Volume.get_collection(name=name))) == 1


def test_duplicate_snapshot_name(conn, wire, created):
    vol = make_volume(created, f"v{token()}")
    make_snapshot(vol.uuid, "same")
    expect_ontap_error(wire, Snapshot(vol.uuid, name="same").post, E_DUP_SNAPSHOT_NAME)
    assert snapshot_names(vol.uuid) == ["same"]


@pytest.mark.parametrize(
    "bad_name, code",
    [
        ("9starts_with_digit", E_VOLUME_NAME_FIRST_CHAR),
        ("x" * 204, E_VOLUME_NAME_TOO_LONG),
    ],
)
def test_bad_volume_name(conn, wire, monkeypatch, bad_name, code):
    # the client itself refuses names over 203 characters; switch its checks off
    # so that the server's validation is what is tested
    monkeypatch.setattr(config, "ENABLE_VALIDATIONS", False)
    vol = Volume(name=bad_name, svm={"name": SVM}, aggregates=[{"name": AGGR}], size=VOL_SIZE)
    expect_ontap_error(wire, vol.post, code)
    assert list(Volume.get_collection(name=bad_name)) == []


def test_longest_volume_name_is_accepted(conn, created):
    name = "y" * 195 + token()[:8]
    assert len(name) == 203
    make_volume(created, name)
