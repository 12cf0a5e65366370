"""Who may try what, how often: login back-off, per-address budgets, the client's address. Sans-IO.

The caller passes the time (``now``: seconds of a monotonic clock) and does the waiting, the hashing
and the answering. Two throttles guard password checks (``LoginThrottle``, used by
``Exchange.check_password`` for HTTP login, DIFF ``req_login`` and every other password check a
client can repeat), one guards account opening (``AccessGuard.begin_account_opening``):

- **per (user id, source address)**: exponential back-off. The first
  ``login_failures_before_backoff`` failures are free; after that failure the key waits 1 s, after
  the next 2 s, then 4 s, ... up to ``login_backoff_max_seconds``. An attempt inside the window is
  refused *before* the password is checked (it costs no scrypt) and does not extend the window. A
  success resets the key. Keying on the address too is what keeps a stranger from locking a real
  user out: failures from the stranger's address do not delay the user's logins from theirs.
- **per source address, over all user ids**: a budget of ``login_address_failures_per_minute``
  failures, refilled continuously (a token bucket). It stops one address from spraying passwords
  over many user ids, or from buying fresh back-off keys with made-up user ids. A success gives its
  token back; it does not refill the budget beyond that.
- **per source address**: ``max_accounts_per_address_per_hour`` accounts, the same kind of budget.

``begin`` decides and counts an attempt (it spends the address token), ``end`` records the
outcome (a success gives the token back). The caller runs one check per address at a time,
``begin`` to ``end`` (``Exchange.check_password`` does, and refuses with ``wait`` before queueing),
so each decision for an address sees the outcome of the check before it: a burst of concurrent
attempts cannot overshoot a budget, and a burst of correct logins (200 sessions of one program
starting at once) is not refused.

Memory is bounded: each table keeps at most ``MAX_KEYS`` entries (a new key evicts the one whose
last failure is oldest), and entries expire — a back-off key ``FORGET_AFTER`` seconds (or the
back-off cap, if longer) after its last failure, a budget as soon as it has refilled. A back-off
entry takes about 500 bytes, a budget about 250: at most ~50 MB for the three tables together,
reached only by an attacker with thousands of addresses (one address adds at most
``login_address_failures_per_minute`` keys a minute).

The source address: the TCP peer, unless the peer is one of the ``trusted_proxies`` (e.g. the nginx
of docs/deployment.md, which appends the address it saw to ``X-Forwarded-For``); then the last
address of ``X-Forwarded-For`` that was not added by a trusted proxy. What a client writes into the
header itself comes before that and is not believed. An IPv6 address counts as its /64 (one host
holds a whole /64), an IPv4-mapped IPv6 address as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from qaex.core.errors import QaexError
from qaex.core.limits import MAX_ID_LENGTH, is_user_id

MAX_KEYS = 50_000
"""Entries per table (back-off keys, login budgets, account-opening budgets)."""

BACKOFF_BASE = 1.0
"""Seconds a key waits after its last free failure; doubled by each further failure."""

FORGET_AFTER = 900.0
"""Seconds after its last failure a back-off key is forgotten (at least the back-off cap)."""

ACCOUNT_PERIOD = 3600.0

K = TypeVar("K", bound=Hashable)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Throttled(QaexError):
    """Refused for now: try again in `retry_after` seconds (HTTP 429 with ``Retry-After``; DIFF 429)."""

    http_status = 429
    diff_code = 429

    def __init__(self, message: str, *, code: str, retry_after: float) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` rounded up to whole seconds, at least 1 (the ``Retry-After`` value)."""
        return retry_seconds(self.retry_after)


class LoginThrottled(Throttled):
    def __init__(self, retry_after: float) -> None:
        super().__init__(
            f"too many failed logins: try again in {retry_seconds(retry_after)} s",
            code="login_throttled",
            retry_after=retry_after,
        )


def retry_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


# -- the two kinds of table ----------------------------------------------------------------------------------
class _Failures:
    __slots__ = ("count", "last", "until")

    def __init__(self, now: float) -> None:
        self.count = 0  # consecutive failures
        self.last = now  # time of the last failure
        self.until = 0.0  # no attempt before this


class Backoff(Generic[K]):
    """Exponential back-off per key after `free` consecutive failures, capped at `cap` seconds."""

    def __init__(
        self, *, free: int, cap: float, base: float = BACKOFF_BASE, max_keys: int = MAX_KEYS
    ) -> None:
        if free < 1 or cap <= 0 or base <= 0 or max_keys < 1:
            raise ValueError("Backoff needs free >= 1, cap > 0, base > 0, max_keys >= 1")
        self.free, self.cap, self.base, self.max_keys = free, cap, base, max_keys
        self.forget_after = max(FORGET_AFTER, cap)
        self._entries: OrderedDict[K, _Failures] = OrderedDict()  # oldest last failure first

    def __len__(self) -> int:
        return len(self._entries)

    def wait(self, key: K, now: float) -> float:
        """Seconds before `key` may try again; 0: now."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        if now - entry.last >= self.forget_after:
            del self._entries[key]
            return 0.0
        return max(0.0, entry.until - now)

    def end(self, key: K, ok: bool, now: float) -> None:
        """Record the outcome of an attempt `wait` allowed: a success forgets the key."""
        if ok:
            self._entries.pop(key, None)
            return
        entry = self._entries.get(key)
        if entry is None:
            self._sweep(now)
            entry = self._entries[key] = _Failures(now)
            if len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        entry.count += 1
        entry.last = now
        beyond = entry.count - self.free
        if beyond >= 0:
            entry.until = now + min(self.cap, self.base * 2.0 ** min(beyond, 62))

    def _sweep(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if now - entry.last < self.forget_after:
                return
            del entries[key]


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class Budget(Generic[K]):
    """Per key, `capacity` events per `period` seconds: a token bucket that refills continuously."""

    def __init__(self, *, capacity: int, period: float, max_keys: int = MAX_KEYS) -> None:
        if capacity < 1 or period <= 0 or max_keys < 1:
            raise ValueError("Budget needs capacity >= 1, period > 0, max_keys >= 1")
        self.capacity, self.period, self.max_keys = float(capacity), period, max_keys
        self.rate = capacity / period
        self._entries: OrderedDict[K, _Bucket] = OrderedDict()  # least recently spent first

    def __len__(self) -> int:
        return len(self._entries)

    def _level(self, bucket: _Bucket, now: float) -> float:
        return min(self.capacity, bucket.tokens + max(0.0, now - bucket.at) * self.rate)

    def wait(self, key: K, now: float) -> float:
        """Seconds before `key` has a token; 0: now."""
        bucket = self._entries.get(key)
        if bucket is None:
            return 0.0
        level = self._level(bucket, now)
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def spend(self, key: K, now: float) -> float:
        """Take a token and return 0, or return `wait` and take nothing."""
        wait = self.wait(key, now)
        if wait > 0:
            return wait
        self._sweep(now)
        bucket = self._entries.pop(key, None)
        level = self.capacity if bucket is None else self._level(bucket, now)
        self._entries[key] = _Bucket(level - 1, now)
        if len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
        return 0.0

    def refund(self, key: K, now: float) -> None:
        """Give a token back (the event it was spent on did not happen or does not count)."""
        bucket = self._entries.get(key)
        if bucket is not None:
            bucket.tokens, bucket.at = min(self.capacity, self._level(bucket, now) + 1), now

    def _sweep(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, bucket = next(iter(entries.items()))
            if self._level(bucket, now) < self.capacity:
                return
            del entries[key]


# -- logins ------------------------------------------------------------------------------------------------
class LoginThrottle:
    """Both password-check throttles: back-off per (user id, address), failure budget per address."""

    def __init__(
        self,
        *,
        failures_before_backoff: int = 5,
        backoff_max: float = 300.0,
        address_failures_per_minute: int = 30,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._keys: Backoff[tuple[str, str]] | None = None
        if backoff_max > 0:
            self._keys = Backoff(free=failures_before_backoff, cap=backoff_max, max_keys=max_keys)
        self._addresses: Budget[str] | None = None
        if address_failures_per_minute > 0:
            self._addresses = Budget(capacity=address_failures_per_minute, period=60.0, max_keys=max_keys)

    @staticmethod
    def _key(user_id: str, address: str) -> tuple[str, str]:
        # Whatever a client sends as a user name, the key stays small: no account has another name.
        return (user_id if is_user_id(user_id) else "", address)

    def size(self) -> int:
        """Entries held in both tables."""
        return sum(len(table) for table in (self._keys, self._addresses) if table is not None)

    def wait(self, user_id: str, address: str, now: float) -> float:
        """Seconds before `user_id` may try a password from `address`; 0: now."""
        wait = 0.0 if self._keys is None else self._keys.wait(self._key(user_id, address), now)
        if self._addresses is not None:
            wait = max(wait, self._addresses.wait(address, now))
        return wait

    def begin(self, user_id: str, address: str, now: float) -> float:
        """0: check the password (its address token is spent), then call `end`; else the seconds
        to wait."""
        wait = self.wait(user_id, address, now)
        if wait > 0:
            return wait
        if self._addresses is not None:
            self._addresses.spend(address, now)
        return 0.0

    def end(self, user_id: str, address: str, ok: bool, now: float) -> None:
        """The outcome of an attempt `begin` allowed; a success resets the key, refunds the token."""
        if self._keys is not None:
            self._keys.end(self._key(user_id, address), ok, now)
        if ok and self._addresses is not None:
            self._addresses.refund(address, now)


# -- addresses ---------------------------------------------------------------------------------------------
def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``"127.0.0.1, 10.0.0.0/8, ::1"`` -> networks; ValueError naming the item that is not one."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def _ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("["):  # "[::1]" or "[::1]:8000"
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # "198.51.100.7:8000"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AccessGuard:
    """The throttles one exchange applies to its clients, whichever transport they use."""

    def __init__(
        self,
        *,
        trusted_proxies: str = "",
        login_failures_before_backoff: int = 5,
        login_backoff_max_seconds: float = 300.0,
        login_address_failures_per_minute: int = 30,
        max_accounts_per_address_per_hour: int = 20,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.logins = LoginThrottle(
            failures_before_backoff=login_failures_before_backoff,
            backoff_max=login_backoff_max_seconds,
            address_failures_per_minute=login_address_failures_per_minute,
            max_keys=max_keys,
        )
        self._accounts: Budget[str] | None = None
        if max_accounts_per_address_per_hour > 0:
            self._accounts = Budget(
                capacity=max_accounts_per_address_per_hour, period=ACCOUNT_PERIOD, max_keys=max_keys
            )
        self.max_accounts_per_address_per_hour = max_accounts_per_address_per_hour

    def trusts(self, peer: str) -> bool:
        """True if `peer` is a trusted proxy (its ``X-Forwarded-For`` is believed)."""
        address = _ip(peer)
        return address is not None and self._trusted(address)

    def _trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.trusted_proxies)

    def source(self, peer: str, forwarded_for: str | None = None) -> str:
        """The client's address as the throttles key it: see the module docstring."""
        address = _ip(peer)
        if address is None:
            return peer[:MAX_ID_LENGTH] or "unknown"
        if forwarded_for and self.trusted_proxies:
            hops = forwarded_for.split(",")
            while hops and self._trusted(address):
                hop = _ip(hops.pop())
                if hop is None:
                    break
                address = hop
        if isinstance(address, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)

    def begin_account_opening(self, address: str, now: float) -> None:
        """Count one account opening from `address`; Throttled (``too_many_accounts``) over the budget."""
        if self._accounts is None:
            return
        wait = self._accounts.spend(address, now)
        if wait > 0:
            raise Throttled(
                f"too many accounts opened from this address: at most "
                f"{self.max_accounts_per_address_per_hour} an hour; try again in {retry_seconds(wait)} s",
                code="too_many_accounts",
                retry_after=wait,
            )

    def account_not_opened(self, address: str, now: float) -> None:
        """The opening counted by `begin_account_opening` was refused: it does not count."""
        if self._accounts is not None:
            self._accounts.refund(address, now)
