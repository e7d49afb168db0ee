"""Forced interleavings for the checkout's property tests: the test chooses whose AWS call goes next.

Each actor (a redemption, a guess, an admin's edit) runs in a thread of its own with the real
service and store. Every call an actor makes through `Interleaver.client` waits for its turn;
once every actor is either waiting for a call or finished, `choose` picks which waiting call
runs. One call runs at a time, so moto sees the calls one after another in the chosen order:
any order of reads and writes that concurrent requests could produce on AWS, including a read
made long before the write that follows it (which is what a stale read amounts to).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

STUCK_SECONDS = 60


class Interleaver:
    def __init__(self, real: Any) -> None:
        self._real = real
        self._cv = threading.Condition()
        self._waiting: dict[str, str] = {}  # actor -> the operation it waits to call
        self._turn: str | None = None
        self._done: set[str] = set()
        self._actors: set[str] = set()
        self.trace: list[tuple[str, str]] = []  # (actor, operation), in the order they ran
        self.client = _Client(self)

    def call(self, operation: str, kwargs: dict[str, Any]) -> Any:
        actor = threading.current_thread().name
        if actor not in self._actors:  # set-up and checks, outside the race: straight through
            return getattr(self._real, operation)(**kwargs)
        with self._cv:
            self._waiting[actor] = operation
            self._cv.notify_all()
            if not self._cv.wait_for(lambda: self._turn == actor, timeout=STUCK_SECONDS):
                raise RuntimeError(f"{actor} was never given its turn for {operation}")
        try:
            return getattr(self._real, operation)(**kwargs)
        finally:
            with self._cv:
                del self._waiting[actor]
                self._turn = None
                self._cv.notify_all()

    def run(self, actors: dict[str, Callable[[], Any]], choose: Callable[[list[str]], str]) -> dict[str, Any]:
        """Run the actors to the end; what each returned, or the exception it raised."""
        results: dict[str, Any] = {}
        names = set(actors)
        self._actors |= names

        def body(name: str, action: Callable[[], Any]) -> None:
            try:
                results[name] = action()
            except Exception as error:  # the outcome under test (a 404, a 429, ...)
                results[name] = error
            finally:
                with self._cv:
                    self._done.add(name)
                    self._cv.notify_all()

        threads = [threading.Thread(target=body, args=item, name=item[0], daemon=True) for item in actors.items()]
        for thread in threads:
            thread.start()
        with self._cv:
            while True:
                settled = self._cv.wait_for(
                    lambda: self._turn is None and len(self._waiting) + len(self._done & names) == len(names),
                    timeout=STUCK_SECONDS)
                if not settled:
                    raise RuntimeError(f"actors stuck: waiting {self._waiting}, done {self._done}")
                if not self._waiting:
                    break
                actor = choose(sorted(self._waiting))
                self.trace.append((actor, self._waiting[actor]))
                self._turn = actor
                self._cv.notify_all()
        for thread in threads:
            thread.join(STUCK_SECONDS)
        return results


class _Client:
    """Looks like a boto3 DynamoDB client; every call waits for its actor's turn."""

    def __init__(self, interleaver: Interleaver) -> None:
        self._interleaver = interleaver

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        def call(**kwargs: Any) -> Any:
            return self._interleaver.call(operation, kwargs)
        return call
