"""Three hot spots of moto 5.x that bulk volumes (thousands of writes and events per job) make slow.

Same results, less work; applied by the local stack's bulk workers (workers_bulk.start):

- EventBridge -> SQS targets: for every event and target, moto's EventTemplateParser
  compiles eight JSONPath expressions with jsonpath_ng, whose parser rebuilds its
  PLY tables each time (about 1.5 ms per expression, 12 ms per event). A compiled
  expression only depends on its text: `jsonpath_ng.ext.parse` is memoised.
- SQS SendMessage reads `queue.attributes` only for ContentBasedDeduplication, but
  that property also counts the visible, delayed and in-flight messages, building
  datetimes for every message in the queue. The local stack's event tap queue keeps
  every event, so each send got slower with every event ever published (3 s per
  PutEvents of 10 after 2,000 events). While a SendMessage runs, those three
  counts (which it never returns) are not computed.
- DynamoDB items: moto's LimitedSizeDict recomputes the size of the whole item on
  every attribute it sets (O(attributes^2) per item: a 35-attribute coupon costs
  ~600 size walks). It now keeps a running size, recomputed from scratch whenever
  the dict changed by any other way than its own assignments (the 400 KB check
  is the same).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_applied = False
_in_send = threading.local()
_COUNTS = ("approximate_number_of_messages", "approximate_number_of_messages_delayed",
           "approximate_number_of_messages_not_visible")


def _running_size_setitem(original: Any) -> Any:
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.utilities import bytesize

    def size_of(key: str, value: Any) -> int:
        return int(bytesize(key) + (value.size() if type(value) is DynamoType else bytesize(str(value))))

    def setitem(self: Any, key: str, value: Any) -> None:
        cached = self.__dict__.get("_coupons_size")
        if cached is None or cached[0] != len(self) or cached[2] is not self.get(cached[3], cached):
            original(self, key, value)  # moto's own walk (and its ItemSizeTooLarge)
            total = sum(size_of(k, v) for k, v in self.items())
        else:
            total = cached[1] - (size_of(key, self[key]) if key in self else 0) + size_of(key, value)
            if total > 405000:
                original(self, key, value)  # let moto raise exactly as before
            dict.__setitem__(self, key, value)
        self.__dict__["_coupons_size"] = (len(self), total, value, key)

    return setitem


def apply() -> None:
    """Install the speedups (idempotent)."""
    global _applied
    if _applied:
        return
    import jsonpath_ng.ext
    from moto.sqs.models import Queue, SQSBackend

    jsonpath_ng.ext.parse = functools.lru_cache(maxsize=1024)(jsonpath_ng.ext.parse)

    def uncounted(count: Any) -> property:
        def getter(self: Any) -> int:
            return 0 if getattr(_in_send, "active", False) else int(count.fget(self))

        return property(getter)

    for name in _COUNTS:
        setattr(Queue, name, uncounted(getattr(Queue, name)))

    send_message = SQSBackend.send_message

    @functools.wraps(send_message)
    def send_without_counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        outer = getattr(_in_send, "active", False)
        _in_send.active = True
        try:
            return send_message(self, *args, **kwargs)
        finally:
            _in_send.active = outer

    SQSBackend.send_message = send_without_counting  # type: ignore[method-assign]

    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    LimitedSizeDict.__setitem__ = _running_size_setitem(LimitedSizeDict.__setitem__)  # type: ignore[method-assign]
    _applied = True
