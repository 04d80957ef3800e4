"""Pages through msgx-sim with Microsoft's own Graph SDK for Python and checks that
the simulator speaks Graph as the SDK understands it. Run by scripts/check-sdk.sh,
which starts the simulators and passes their URLs.

  python check-sdk.py SIM_URL THROTTLED_SIM_URL TENANT CLIENT_ID SECRET

For every resource msgx-once exports: each page parses into the SDK's models
(msgraph-sdk for v1.0, msgraph-beta-sdk for beta sign-ins), the records paged equal
the simulator's oracle (every property the SDK read, written back by the SDK's own
serializer), and properties or enum values the SDK does not know are reported. Then
the SDK's retry handler through the throttled simulator's 429s, and a bad $filter as
the SDK's ODataError. Exits 1 on any finding, printing each.
"""

import asyncio
import datetime
from enum import Enum
import json
import re
import sys
import urllib.parse
import urllib.request

import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.serialization import Parsable
from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph_beta import GraphRequestAdapter as BetaRequestAdapter
from msgraph_beta import GraphServiceClient as BetaServiceClient
from msgraph_core import GraphClientFactory

WINDOW = 300  # seconds of records checked per resource
PAGE = 50  # $top: several pages per resource

findings = []


def finding(text):
    findings.append(text)
    print(f"FAIL {text}")


def get(url):
    with urllib.request.urlopen(url) as response:
        return response.read().decode()


class SimToken(AccessTokenProvider):
    """The client-credentials token from the simulator's token endpoint, as Entra
    issues it; only the simulator's host is allowed to see it."""

    def __init__(self, sim, tenant, client_id, secret):
        body = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "scope": f"{sim}/.default",
            }
        ).encode()
        with urllib.request.urlopen(f"{sim}/{tenant}/oauth2/v2.0/token", body) as r:
            self.token = json.load(r)["access_token"]
        # The validator compares host names only; the port is checked below.
        self.netloc = urllib.parse.urlsplit(sim).netloc
        self.hosts = AllowedHostsValidator([urllib.parse.urlsplit(sim).hostname])

    async def get_authorization_token(self, uri, additional_authentication_context=None):
        ours = self.hosts.is_url_host_valid(uri) and urllib.parse.urlsplit(uri).netloc == self.netloc
        return self.token if ours else ""

    def get_allowed_hosts_validator(self):
        return self.hosts


def clients(sim, token):
    """v1.0 and beta clients with the SDK's default middleware (retry included)."""
    auth = BaseBearerTokenAuthenticationProvider(token)
    v1 = GraphRequestAdapter(auth, GraphClientFactory.create_with_default_middleware())
    v1.base_url = f"{sim}/v1.0"
    beta = BetaRequestAdapter(auth, GraphClientFactory.create_with_default_middleware())
    beta.base_url = f"{sim}/beta"
    return GraphServiceClient(request_adapter=v1), BetaServiceClient(request_adapter=beta)


def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S")


# name, builder, time field, $filter bounds, oracle source, mutable
def resources(v1, beta):
    def beta_sign_ins(kind):
        return (
            f"beta signIns ({kind})",
            beta.audit_logs.sign_ins,
            "createdDateTime",
            f"signInEventTypes/any(t: t eq '{kind}') and ",
            {
                "nonInteractiveUser": "signins_noninteractive",
                "servicePrincipal": "signins_service_principal",
                "managedIdentity": "signins_managed_identity",
            }[kind],
            False,
        )

    return [
        ("v1.0 signIns", v1.audit_logs.sign_ins, "createdDateTime", "", "signins", False),
        beta_sign_ins("nonInteractiveUser"),
        beta_sign_ins("servicePrincipal"),
        beta_sign_ins("managedIdentity"),
        ("v1.0 directoryAudits", v1.audit_logs.directory_audits, "activityDateTime", "",
         "directory_audits", False),
        ("v1.0 provisioning", v1.audit_logs.provisioning, "activityDateTime", "",
         "provisioning", False),
        ("v1.0 riskDetections", v1.identity_protection.risk_detections,
         "lastUpdatedDateTime", "", "risk_detections", True),
        ("v1.0 alerts_v2", v1.security.alerts_v2, "lastUpdateDateTime", "",
         "security_alerts", True),
        ("v1.0 servicePrincipalRiskDetections",
         v1.identity_protection.service_principal_risk_detections, "detectedDateTime", "",
         "service_principal_risk_detections", False),
        ("beta agentRiskDetections", beta.identity_protection.agent_risk_detections,
         "lastModifiedDateTime", "", "agent_risk_detections", True),
        ("v1.0 deviceManagement auditEvents", v1.device_management.audit_events,
         "activityDateTime", "", "intune_audit_events", False),
    ]


def range_filter(field, source, start, end):
    if source == "provisioning":  # eq/gt/lt only, as Graph documents
        before = start - datetime.timedelta(seconds=1)
        after = end + datetime.timedelta(seconds=1)
        return f"{field} gt {stamp(before)}.9999999Z and {field} lt {stamp(after)}.0000000Z"
    return f"{field} ge {stamp(start)}.0000000Z and {field} le {stamp(end)}.9999999Z"


def query(builder, filter_, top):
    params_class = type(builder).__dict__
    qp_class = next(v for k, v in params_class.items() if k.endswith("GetQueryParameters"))
    return preferring(RequestConfiguration(query_parameters=qp_class(filter=filter_, top=top)))


def preferring(config):
    """`config` asking for Graph's evolvable enums' newer members, as msgx-once does
    (without it they read unknownFutureValue and differ from the oracle)."""
    config.headers.add("Prefer", "include-unknown-enum-members")
    return config


async def page_all(builder, filter_, top):
    """Every page of the query, following @odata.nextLink with the SDK's with_url."""
    pages = []
    page = await builder.get(request_configuration=query(builder, filter_, top))
    while page is not None:
        pages.append(page)
        link = page.odata_next_link
        next_page = builder.with_url(link) if link else None
        page = await next_page.get(request_configuration=preferring(RequestConfiguration())) if link else None
    return pages


def unknown(model, path, found):
    """Properties (additional_data) and values the SDK's models did not take."""
    if isinstance(model, list):
        for item in model:
            unknown(item, f"{path}[]", found)
        return
    if not isinstance(model, Parsable):
        return
    if not open_type(model):
        for key in getattr(model, "additional_data", None) or {}:
            found.add(f"{path}.{key}")
    for name, value in vars(model).items():
        if name != "additional_data" and isinstance(value, (Parsable, list)):
            unknown(value, f"{path}.{name}", found)


class Writer(JsonSerializationWriter):
    """The SDK's serializer, but writing flags enums: it reads `"application,users"`
    into a list of members and its `write_enum_value` drops lists."""

    def write_enum_value(self, key, value):
        if isinstance(value, list) and all(isinstance(v, Enum) for v in value):
            self.write_str_value(key, ",".join(v.value for v in value))
        else:
            super().write_enum_value(key, value)

    def _create_new_writer(self):
        writer = Writer()
        writer.on_before_object_serialization = self.on_before_object_serialization
        writer.on_after_object_serialization = self.on_after_object_serialization
        writer.on_start_object_serialization = self.on_start_object_serialization
        return writer


def written(model):
    writer = Writer()
    writer.write_object_value(None, model)
    return json.loads(writer.get_serialized_content())


# What Graph sends that the SDK cannot hold, with why; shown, not counted as findings.
# Keys: the end of a finding's path.
KNOWN = {
    "user.userType": "Graph's directoryAudits carry userType beside the userIdentity "
    "properties v1.0 declares; kept in additional_data",
    "provisioning.action": "the deprecated action beside provisioningAction, as Graph "
    "still sends it; kept in additional_data",
    "provisioningStepType not read: \"import\"": "kiota-python looks enum members up by "
    "name: the value import is member Import_ (a Python keyword)",
}


def known(text):
    return next((why for end, why in KNOWN.items() if end in text), None)


def open_type(model):
    """A model that is all additional data by design (detailsInfo, keyValue-like)."""
    bookkeeping = ("additional_data", "odata_type", "backing_store")
    declared = {k for k in vars(model) if k not in bookkeeping}
    return not declared


FRACTION = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def normal(value):
    """JSON as Graph means it: null properties absent (the SDK cannot tell them from
    missing ones), timestamps as instants to the microsecond (Python's precision)."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [normal(v) for v in value]
    if isinstance(value, str):
        m = FRACTION.match(value)
        if m:
            fraction = (m.group(2) or ".0")[1:7].ljust(6, "0")
            zone = "+00:00" if m.group(3) == "Z" else m.group(3)
            t = datetime.datetime.fromisoformat(f"{m.group(1)}.{fraction}{zone}")
            return t.astimezone(datetime.timezone.utc).isoformat()
    return value


def differences(expected, actual, path, out):
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected.keys() | actual.keys():
            if key not in actual:
                out.append(f"{path}.{key} not read: {json.dumps(expected[key])[:80]}")
            elif key not in expected and key == "@odata.type":
                continue  # the SDK writes its model's type; Graph leaves it out here
            elif key not in expected:
                out.append(f"{path}.{key} made up: {json.dumps(actual[key])[:80]}")
            else:
                differences(expected[key], actual[key], f"{path}.{key}", out)
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for i, (e, a) in enumerate(zip(expected, actual)):
            differences(e, a, f"{path}[{i}]", out)
    elif expected != actual:
        out.append(f"{path}: {json.dumps(expected)[:60]} read as {json.dumps(actual)[:60]}")


def oracle(sim, source, field, start, end, mutable):
    filter_ = f"{field} ge {stamp(start)}.0000000Z and {field} le {stamp(end)}.9999999Z"
    url = f"{sim}/_sim/records?" + urllib.parse.urlencode({"source": source, "$filter": filter_})
    records = [json.loads(line) for line in get(url).splitlines()]
    if mutable:  # a query sees each record's latest version
        latest = {}
        for r in records:
            latest[r["id"]] = r
        records = list(latest.values())
    return {r["id"]: r for r in records}


async def check_resources(sim, v1, beta, end):
    start = end - datetime.timedelta(seconds=WINDOW)
    for name, builder, field, prefix, source, mutable in resources(v1, beta):
        try:
            pages = await page_all(builder, prefix + range_filter(field, source, start, end), PAGE)
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            finding(f"{name}: the SDK could not page: {type(e).__name__}: {e}")
            continue
        models = [m for page in pages for m in page.value or []]
        expected = oracle(sim, source, field, start, end, mutable)
        ids = [m.id for m in models]
        if len(set(ids)) != len(ids) or set(ids) != set(expected):
            finding(f"{name}: paged {len(ids)} records ({len(set(ids))} ids), oracle {len(expected)}")
        found, diffs = set(), []
        for m in models:
            unknown(m, name, found)
            if m.id in expected:
                differences(normal(expected[m.id]), normal(written(m)), m.id, diffs)
        # One line per property path (list indexes and record ids folded).
        texts = {f"{path}: a property the SDK does not know" for path in found}
        texts |= {re.sub(r"\[\d+\]", "[]", re.sub(r"^[^.]*", name, d)) for d in diffs}
        notes = sorted(t for t in texts if known(t))
        shown = sorted(t for t in texts if not known(t))
        for t in notes:
            print(f"note {t} ({known(t)})")
        for t in shown[:20]:
            finding(t)
        if len(shown) > 20:
            finding(f"{name}: {len(shown) - 20} more differences")
        sizes = [len(json.dumps(r, separators=(",", ":"))) for r in expected.values()]
        print(
            f"ok   {name}: {len(models)} records in {len(pages)} pages"
            f" ({sum(sizes) // max(len(sizes), 1)} bytes each)"
            if not shown
            else f"     {name}: {len(models)} records in {len(pages)} pages"
        )


async def check_retries(sim, v1, end):
    start = end - datetime.timedelta(seconds=WINDOW)
    builder = v1.audit_logs.sign_ins
    before = json.loads(get(f"{sim}/_sim/stats"))
    pages = await page_all(builder, range_filter("createdDateTime", "signins", start, end), 20)
    stats = json.loads(get(f"{sim}/_sim/stats"))
    throttled = stats.get("graph_429", 0) - before.get("graph_429", 0)
    got = {m.id for p in pages for m in p.value or []}
    expected = oracle(sim, "signins", "createdDateTime", start, end, False)
    if throttled < 2 or got != set(expected):
        finding(f"retry: {throttled} answered 429, {len(got)} of {len(expected)} records")
    else:
        print(f"ok   retry handler: {len(pages)} pages through {throttled} answered 429"
              f" (early: {stats.get('graph_early', 0)}), {len(got)} records")


async def check_error(v1):
    builder = v1.audit_logs.sign_ins
    try:
        await builder.get(request_configuration=query(builder, "createdDateTime ge yesterday", 10))
        finding("bad $filter: no error")
    except ODataError as e:
        inner = e.error.inner_error if e.error else None
        header = (getattr(e, "response_headers", None) or {}).get("request-id")
        if isinstance(header, (list, set)):
            header = next(iter(header), None)
        if (
            e.response_status_code != 400
            or not e.error.code
            or inner is None
            or not inner.request_id
            or inner.date is None
            or (header and header != inner.request_id)
        ):
            finding(f"bad $filter: ODataError {e.response_status_code} {e.error.code} {inner}")
        else:
            print(f"ok   bad $filter: ODataError {e.response_status_code} {e.error.code}:"
                  f" {e.error.message} (request-id {inner.request_id})")
    except Exception as e:  # noqa: BLE001
        finding(f"bad $filter: {type(e).__name__} instead of ODataError: {e}")


async def main(sim, throttled, tenant, client_id, secret):
    # The simulators' clocks fixed a minute ago: oracle and queries see the same records.
    end = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    end -= datetime.timedelta(seconds=60)
    for url in (sim, throttled):
        get(f"{url}/_sim/clock?now={stamp(end)}Z")
    v1, beta = clients(sim, SimToken(sim, tenant, client_id, secret))
    t1, _ = clients(throttled, SimToken(throttled, tenant, client_id, secret))
    await check_resources(sim, v1, beta, end)
    await check_error(v1)
    try:
        await check_retries(throttled, t1, end)
    except Exception as e:  # noqa: BLE001
        finding(f"retry: the SDK gave up: {type(e).__name__}: {e}")
    if findings:
        print(f"{len(findings)} findings")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:6])))
