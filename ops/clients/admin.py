"""Clients for Restate's admin API and ingress (httpx, bearer token, injectable transport)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from ops.base.errors import ApiError, TokenRejected

Signature = dict[str, dict[str, Any]]

# Answers worth another try for a call that is safe to repeat: rate limited, or the
# server (or a proxy before it) busy or restarting. A 500 is an answer (the admin API
# gives it for a query it cannot run), not a busy server.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Seconds a safe call may spend retrying before it fails, and its first pause (doubled
# after each try, at most MAX_PAUSE_S); a Retry-After answer sets the pause instead.
RETRY_BUDGET_S = 20.0
FIRST_PAUSE_S = 0.25
MAX_PAUSE_S = 5.0


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A `Retry-After` header in seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class _Client:
    """An httpx client that turns transport errors and 401/403 into clear `ApiError`s,
    and retries calls that are safe to repeat (see `request`)."""

    role = "endpoint"

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        retry_budget_s: float = RETRY_BUDGET_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )
        self.retry_budget_s = retry_budget_s
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> httpx.Response:
        """Send a request; a 401/403 raises `TokenRejected`, no answer raises `ApiError`.

        A call that is safe to repeat (`retry`, by default: GET and HEAD) is tried again
        on 429, 5xx, a timeout or a dropped connection, with doubling pauses or the
        server's `Retry-After`, within `retry_budget_s`; then it fails naming the URL and
        the last answer. A refused connection is not retried: nothing listens there."""
        kwargs: dict[str, Any] = {"headers": dict(headers or {})}
        if body is not None:
            kwargs["json"] = body
        if content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = timeout
        safe = method in ("GET", "HEAD") if retry is None else retry
        started = time.monotonic()
        pause = FIRST_PAUSE_S
        attempts = 0
        waited = 0.0  # pauses asked for: bounds the loop even where sleeping is faked
        while True:
            attempts += 1
            resp: httpx.Response | None = None
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__} {exc}"
                if not safe or isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
                    raise ApiError(
                        f"{self.role} at {self.base_url} did not answer {method} {path}: {last}"
                    ) from None
            if resp is not None:
                if not safe or resp.status_code not in RETRY_STATUSES:
                    break
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                asked = retry_after_s(resp.headers.get("Retry-After"))
                if asked is not None:
                    pause = asked
            spent = max(time.monotonic() - started, waited)
            if pause > self.retry_budget_s - spent:
                raise ApiError(
                    f"{self.role} at {self.base_url}{path} ({method}) still failing after"
                    f" {attempts} attempt(s) in {spent:.1f}s"
                    f" (retry budget {self.retry_budget_s:g}s); last answer: {last}",
                    status=resp.status_code if resp is not None else None,
                )
            self._sleep(pause)
            waited += pause
            pause = min(pause * 2, MAX_PAUSE_S)
        if resp.status_code in (401, 403):
            raise TokenRejected(
                f"token rejected by {self.role} at {self.base_url} (HTTP {resp.status_code})",
                status=resp.status_code,
            )
        return resp


def _expect(resp: httpx.Response, what: str) -> Any:
    if resp.status_code >= 400:
        raise ApiError(
            f"{what} failed: HTTP {resp.status_code}: {resp.text[:500]}", status=resp.status_code
        )
    return json_of(resp, what) if resp.content else None


def json_of(resp: httpx.Response, what: str) -> Any:
    """The JSON body of an answer; an ApiError naming the URL when it is something else
    (a web page, a login proxy: the URL in the environment file is probably wrong)."""
    try:
        return resp.json()
    except ValueError:
        raise ApiError(
            f"{what}: {resp.request.url} answered HTTP {resp.status_code} with something"
            f" that is not JSON: {resp.text[:200]!r}"
        ) from None


class AdminClient(_Client):
    """Restate's admin API: health, deployments, services, SQL queries."""

    role = "admin"

    def healthy(self) -> bool:
        try:
            resp = self.request("GET", "/health", timeout=2.0, retry=False)
            return resp.status_code == 200
        except TokenRejected:
            raise
        except ApiError:
            return False

    def version(self) -> dict[str, Any]:
        return dict(_expect(self.request("GET", "/version"), "GET /version"))

    def deployments(self) -> list[dict[str, Any]]:
        return list(_expect(self.request("GET", "/deployments"), "GET /deployments")["deployments"])

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return dict(_expect(self.request("GET", f"/deployments/{deployment_id}"), "GET deployment"))

    def find_deployment(self, uri: str) -> dict[str, Any] | None:
        """The deployment registered for `uri` (trailing slashes ignored), with handlers."""
        for dep in self.deployments():
            if _same_uri(str(dep.get("uri") or dep.get("arn") or ""), uri):
                return self.deployment(str(dep["id"]))
        return None

    def register(
        self,
        uri: str,
        *,
        force: bool,
        dry_run: bool,
        use_http_11: bool = False,
        breaking: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """`POST /deployments`; `force`, `breaking` and `dry_run` are always sent explicitly.
        `breaking` lets Restate accept revisions incompatible with the registered ones (a
        changed service type); `metadata` is stored with the deployment."""
        body: dict[str, Any] = {
            "uri": uri,
            "force": force,
            "breaking": breaking or force,
            "dry_run": dry_run,
            "use_http_11": use_http_11,
        }
        if metadata:
            body["metadata"] = dict(metadata)
        resp = self.request("POST", "/deployments", body=body, timeout=30.0, retry=True)
        return dict(_expect(resp, f"registering {uri}"))

    def discover(self, uri: str) -> dict[str, Any]:
        """What the endpoint at `uri` offers now, without registering anything."""
        return self.register(uri, force=True, dry_run=True)

    def delete_deployment(self, deployment_id: str) -> None:
        _expect(
            self.request("DELETE", f"/deployments/{deployment_id}?force=true"),
            f"deleting deployment {deployment_id}",
        )

    def services(self) -> list[dict[str, Any]]:
        return list(_expect(self.request("GET", "/services"), "GET /services")["services"])

    def cancel(self, invocation_id: str) -> None:
        """Ask Restate to cancel an invocation: its handler sees a terminal error and
        runs its compensations. Non-blocking: the invocation may still be finishing."""
        path = f"/invocations/{quote(invocation_id, safe='')}/cancel"
        _expect(self.request("PATCH", path), f"cancelling {invocation_id}")

    def kill(self, invocation_id: str) -> None:
        """Stop an invocation at once, without its compensations (what the audit exists
        to catch: a killed checkout leaves its seat held)."""
        path = f"/invocations/{quote(invocation_id, safe='')}/kill"
        _expect(self.request("PATCH", path), f"killing {invocation_id}")

    def purge(self, invocation_id: str) -> None:
        """Delete a completed invocation's journal and metadata (409 while it runs)."""
        path = f"/invocations/{quote(invocation_id, safe='')}/purge"
        _expect(self.request("PATCH", path), f"purging {invocation_id}")

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run SQL against Restate's introspection tables."""
        resp = self.request(
            "POST",
            "/query",
            body={"query": sql},
            headers={"Accept": "application/json"},
            timeout=30.0,
            retry=True,
        )
        return list(_expect(resp, "SQL query")["rows"])


# Ingress handlers that only read (shared handlers of Ticket and SeatMap): safe to repeat.
READ_HANDLERS = frozenset({"get"})


class IngressClient(_Client):
    """Restate's ingress: call handlers the way clients do."""

    role = "ingress"

    def call(
        self,
        service: str,
        handler: str,
        body: Any = None,
        *,
        key: str | None = None,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retry: bool | None = None,
    ) -> httpx.Response:
        """POST to `/Service[/key]/handler`; JSON `body` or `raw` bytes. Reads (`get`
        handlers, shared and side-effect free) are retried like admin reads unless
        `retry=False`; any other call only with `retry=True` (an Idempotency-Key)."""
        path = f"/{service}/{_quote(key)}/{handler}" if key is not None else f"/{service}/{handler}"
        content = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        # No Content-Type without a body: the ingress refuses a typed empty body.
        typed = {"Content-Type": "application/json"} if content else {}
        hdrs = {**typed, **dict(headers or {})}
        safe = handler in READ_HANDLERS if retry is None else retry
        return self.request(
            "POST", path, content=content, headers=hdrs, timeout=timeout, retry=safe
        )

    def checkout(
        self,
        ticket: str,
        user: str,
        method: str | None = None,
        *,
        idempotency_key: str | None = None,
        timeout: float = 30.0,
    ) -> httpx.Response:
        """`POST /Checkout/process` as the contract's clients send it; `method` (the
        paymentMethodId) is left out when None, so the service's default applies."""
        body: dict[str, str] = {"ticketId": ticket, "userId": user}
        if method is not None:
            body["paymentMethodId"] = method
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.call("Checkout", "process", body, headers=headers, timeout=timeout)


class GatewayClient:
    """The mock payment gateway's charge list and fault settings (`ops.programs.mock_gateway`)."""

    def __init__(
        self, url: str, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = self._http.request(method, path, **kwargs)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise ApiError(f"mock gateway at {self.url}: {method} {path} failed: {exc}") from None
        data: dict[str, Any] = json_of(resp, f"mock gateway {method} {path}")
        return data

    def config(self) -> dict[str, Any]:
        return self._json("GET", "/admin/config")

    def configure(self, **body: float) -> dict[str, Any]:
        """Set `latency_ms` and/or start an outage of `outage_seconds`."""
        return self._json("PUT", "/admin/config", json=body)

    def charges(self, ticket: str | None = None) -> list[dict[str, Any]]:
        """Every recorded charge, or one seat's."""
        params = {"ticketId": ticket} if ticket is not None else None
        rows: list[dict[str, Any]] = self._json("GET", "/charges", params=params)["charges"]
        return rows

    def attempts(self) -> int:
        """Charge requests the gateway has received (lists no charges to find out)."""
        return int(self._json("GET", "/charges", params={"ticketId": "-"})["attempts"])

    def live_charges(self, ticket: str) -> list[dict[str, Any]]:
        """Successful, unrefunded charges for one seat."""
        return [
            c
            for c in self.charges(ticket)
            if c.get("status") == "succeeded" and not c.get("refunded")
        ]


def signature(services: list[dict[str, Any]]) -> Signature:
    """What registration compares: services, their type, and each handler's shape."""
    result: Signature = {}
    for svc in services:
        result[str(svc["name"])] = {
            "ty": svc.get("ty"),
            "handlers": {
                str(h["name"]): [
                    h.get("ty"),
                    h.get("public"),
                    h.get("input_description"),
                    h.get("output_description"),
                    # The ingress validates bodies by it: a schema added or dropped
                    # changes which requests reach the handler.
                    h.get("input_json_schema"),
                ]
                for h in svc.get("handlers", [])
            },
        }
    return result


def signature_diff(before: Signature, after: Signature) -> list[str]:
    """Human lines: services and handlers added, removed or changed."""
    lines: list[str] = []
    for name in sorted(set(before) | set(after)):
        if name not in before:
            lines.append(f"+ service {name} ({', '.join(sorted(after[name]['handlers']))})")
        elif name not in after:
            lines.append(f"- service {name}")
        else:
            if before[name]["ty"] != after[name]["ty"]:
                lines.append(f"~ service {name} ({before[name]['ty']} → {after[name]['ty']})")
            old, new = before[name]["handlers"], after[name]["handlers"]
            lines += [f"+ handler {name}/{h}" for h in sorted(set(new) - set(old))]
            lines += [f"- handler {name}/{h}" for h in sorted(set(old) - set(new))]
            lines += [
                f"~ handler {name}/{h}" for h in sorted(set(old) & set(new)) if old[h] != new[h]
            ]
    return lines


def _same_uri(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _quote(key: str) -> str:
    return quote(key, safe="")
