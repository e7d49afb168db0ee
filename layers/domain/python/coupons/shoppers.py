"""Who a checkout is for (issue 12): the caller's own person, or the customer (or guest) a server names.

- A person (customer or admin) checks out as themselves: their `sub`, their verified email, API
  Gateway's source IP. They may not name anyone in the body (400).
- A server (a shop backend, a POS terminal) names the shopper in `customer` and vouches for it:
  `customer.id` is the same person as the customer whose token's `sub` it is, for every limit;
  the shopper's IP is `customer.ip`, never the server's own (a shop backend must not lock out a
  whole shop); no `customer.id` is a guest.

Orders belong to their caller: an order id is the customer's (`user:<sub>`) or the server's
(`client:<client_id>`), whoever the shopper is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .errors import ValidationFailed
from .models import Customer


class Caller(Protocol):
    """What checkout reads of an identity (coupons.http.Identity)."""

    @property
    def user_id(self) -> str: ...

    @property
    def email_domain(self) -> str | None: ...

    @property
    def is_admin(self) -> bool: ...

    @property
    def ip(self) -> str: ...

    @property
    def user_agent(self) -> str: ...


@dataclass(frozen=True)
class Shopper:
    user_id: str | None  # None: a guest
    email_domain: str | None
    ip: str | None  # None: a server that did not say
    user_agent: str
    caller: str  # customer | admin | server: recorded on the redemption
    client_id: str | None  # the server's, when a server calls
    first_order: bool | None = None  # as the server states it (first-order coupons come with campaigns)

    @property
    def is_guest(self) -> bool:
        return self.user_id is None

    @property
    def order_owner(self) -> str:
        """Whose order ids these are: another caller's identical order id is a different order."""
        return f"client:{self.client_id}" if self.client_id is not None else f"user:{self.user_id}"


def _domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].lower()


def shopper_of(customer: Customer | None, who: Caller) -> Shopper:
    client_id: str | None = getattr(who, "client_id", None)
    if client_id is None:
        if customer is not None:
            raise ValidationFailed(
                "Only a server may name the customer: a customer's token names its customer.",
                details=[{"field": "customer", "message": "not allowed with a customer's token"}])
        return Shopper(user_id=who.user_id, email_domain=who.email_domain, ip=who.ip, user_agent=who.user_agent,
                       caller="admin" if who.is_admin else "customer", client_id=None)
    named = customer or Customer()
    return Shopper(user_id=named.id, email_domain=_domain(named.email), ip=named.ip, user_agent=who.user_agent,
                   caller="server", client_id=client_id, first_order=named.first_order)
