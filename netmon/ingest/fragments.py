"""IP fragments in any arrival order: which datagram flow each fragment belongs to.

Pure module, no I/O and no threads of its own: one :class:`FragmentMemory` belongs to
each :class:`netmon.ingest.framedecoder.FrameDecoder`, so it runs on the thread that
feeds that decoder (the reactor thread in netmon).

Only a datagram's first fragment carries the transport header, so later fragments
learn their ports from it. Fragments that arrive before their first fragment (last
fragment first is common: some stacks send them in reverse) are held until the first
fragment arrives; then they are released into the datagram's flow. Held fragments
are bounded: at most :data:`FRAG_HOLD` of them, for at most
:data:`FRAG_HOLD_SECONDS` of capture time (checked as fragments arrive, so the
result does not depend on how the input was chunked, and at end of input). Those
that expire unmatched are released with ports 0 (all that is known of them) and
counted in ``unmatched``. Their frame bytes are not kept (the frame ring shows none).
"""

from __future__ import annotations

#: How many datagrams' first-fragment ports are remembered for their later fragments.
FRAG_MEMORY = 4096
#: Most fragments held at once waiting for their first fragment (memory bound).
FRAG_HOLD = 1024
#: Longest a fragment is held, in capture seconds (Linux's default ipfrag_time).
FRAG_HOLD_SECONDS = 30.0


class FragmentMemory:
    """First-fragment ports per datagram, and the fragments waiting for them.

    A datagram key is (protocol, source, destination, identification). Released
    fragments (records) collect in ``released`` until the decoder takes them.
    """

    def __init__(self) -> None:
        self._ports: dict[tuple, tuple[int, int]] = {}
        # datagram key -> (capture time of its first held fragment, held fragments);
        # dict order is arrival order, so the oldest is first.
        self._held: dict[tuple, tuple[float, list[tuple]]] = {}
        self.held = 0
        #: Fragments released with ports 0 because their first fragment never came.
        self.unmatched = 0
        self.released: list[tuple] = []

    def ports(self, key: tuple) -> tuple[int, int] | None:
        """The ports of the datagram ``key``, if its first fragment was seen."""
        return self._ports.get(key)

    def first(self, key: tuple, ports: tuple[int, int], now: float) -> None:
        """The first fragment of ``key``, seen at ``now``, carried ``ports``: remember
        them and release the fragments that came before it into its flow."""
        if self._held:
            self.expire(now)
        d = self._ports
        if len(d) >= FRAG_MEMORY:
            del d[next(iter(d))]
        d[key] = ports
        waiting = self._held.pop(key, None)
        if waiting is not None:
            sport, dport = ports
            self.held -= len(waiting[1])
            self.released.extend((*r[:4], sport, r[5], dport, 0) for r in waiting[1])

    def hold(self, key: tuple, rec: tuple) -> None:
        """Hold a later fragment (``rec``, ports 0) of datagram ``key``."""
        self.expire(rec[0])
        if self.held >= FRAG_HOLD:
            self._expire_oldest()
        entry = self._held.get(key)
        if entry is None:
            self._held[key] = (rec[0], [rec])
        else:
            entry[1].append(rec)
        self.held += 1

    def expire(self, now: float) -> None:
        """Release, unmatched, what has been held longer than FRAG_HOLD_SECONDS."""
        held = self._held
        while held and next(iter(held.values()))[0] < now - FRAG_HOLD_SECONDS:
            self._expire_oldest()

    def expire_all(self) -> None:
        """Release everything held, unmatched (end of input)."""
        while self._held:
            self._expire_oldest()

    def _expire_oldest(self) -> None:
        _, frags = self._held.pop(next(iter(self._held)))
        self.held -= len(frags)
        self.unmatched += len(frags)
        self.released.extend(frags)

    def take(self) -> list[tuple]:
        """The released fragments, oldest first; the list is emptied."""
        out, self.released = self.released, []
        return out
