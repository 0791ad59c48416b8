"""Per-flow names as flow-table columns: ids into one bounded table of strings.

Pure module (numpy only). One owner: the reactor thread, through the
:class:`netmon.flows.table.FlowTable` that holds it (``table.names``). What the flows'
first bytes said (:mod:`netmon.flows.naming` writes it) lives here as int32 columns per
slot, each an id into :attr:`NameColumns.strings`, so that a filter compares integers
(``name = x``), a substring test runs once per distinct string (``name ~ x``), a
cluster's dominant names are a bincount, and a flow costs 44 bytes more, not a Python
object. Id 0 is "" (no name).

The string table is bounded (:data:`STRINGS_MAX`): when it fills, the strings no live
flow uses are dropped and the ids renumbered (:meth:`NameColumns.compact`); copies
handed out (:meth:`NameColumns.columns`) hold the strings themselves, so they never
see an id change. Every string stored came from the wire and was capped and made
terminal-safe by its parser (netmon.names) before it got here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Distinct strings kept at once (names, applications, fingerprints, processes).
STRINGS_MAX = 65536
#: What a flow's server name came from (``name_source``), by code; 0: no name.
SOURCES = ("", "sni", "quic", "http", "dns", "mdns")
SOURCE_CODE = {s: i for i, s in enumerate(SOURCES)}
#: Text columns (FlowTable.columns() / FlowView field name -> column attribute).
TEXT_FIELDS = {"server_name": "name", "app": "app", "ja4": "ja4", "ja3": "ja3",
               "software": "software", "process": "process", "user": "user",
               "container": "container", "peer_process": "peer"}
#: Per-direction reading state of a flow (``state[slot, d]``, d 0 = lo->hi).
UNDECIDED, READING, DONE = 0, 1, 2

_SOURCES = np.array(SOURCES, dtype=object)


class NameColumns:
    """The name columns of a flow table and their string table (see module doc)."""

    def __init__(self, live_slots: Callable[[], np.ndarray]) -> None:
        self._live_slots = live_slots
        self.strings: list[str] = [""]
        self._ids: dict[str, int] = {"": 0}
        self._arr = np.array([""], dtype=object)  # strings as an array, for takes
        self.cap = 0
        #: Strings not kept because the table was full of names live flows use.
        self.dropped = 0

    def grow(self, new_cap: int) -> None:
        old = self.cap

        def grown(name: str, dtype: type, shape: tuple = ()) -> None:
            new = np.zeros((new_cap, *shape), dtype=dtype)
            if old:
                new[:old] = getattr(self, name)[:old]
            setattr(self, name, new)

        for name in TEXT_FIELDS.values():
            grown(name, np.int32)
        grown("source", np.uint8)
        grown("pid", np.int32)
        #: Reading state and payload bytes seen, per slot and direction.
        grown("state", np.uint8, (2,))
        grown("seen", np.int32, (2,))
        self.cap = new_cap

    def reset(self, slots: np.ndarray) -> None:
        """New flows in ``slots``: no names yet, nothing read."""
        for name in TEXT_FIELDS.values():
            getattr(self, name)[slots] = 0
        self.source[slots] = 0
        self.pid[slots] = 0
        self.state[slots] = UNDECIDED
        self.seen[slots] = 0

    # ------------------------------------------------------------------ strings
    def intern(self, text: str) -> int:
        """The id of ``text`` (0 for "", and when the table is full of used names)."""
        got = self._ids.get(text)
        if got is not None:
            return got
        if len(self.strings) >= STRINGS_MAX:
            self.compact()
            if len(self.strings) >= STRINGS_MAX:
                self.dropped += 1
                return 0
        sid = len(self.strings)
        self.strings.append(text)
        self._ids[text] = sid
        if sid >= len(self._arr):
            arr = np.empty(max(16, 2 * len(self._arr)), dtype=object)
            arr[:len(self._arr)] = self._arr
            self._arr = arr
        self._arr[sid] = text
        return sid

    def compact(self) -> None:
        """Keep only the strings live flows use; renumber the ids."""
        live = self._live_slots()
        cols = [getattr(self, name) for name in TEXT_FIELDS.values()]
        used = np.unique(np.concatenate([c[live] for c in cols] + [np.zeros(1, np.int32)]))
        remap = np.zeros(len(self.strings), dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        for c in cols:
            c[live] = remap[c[live]]
        # Free slots keep stale ids: zero them, so a later compact reads no garbage.
        dead = np.ones(self.cap, dtype=np.bool_)
        dead[live] = False
        for c in cols:
            c[dead] = 0
        self.strings = [self.strings[i] for i in used.tolist()]
        self._ids = {s: i for i, s in enumerate(self.strings)}
        self._arr = np.array(self.strings + [""] * 15, dtype=object)

    def ids_where(self, test: Callable[[str], bool]) -> np.ndarray:
        """Ids of the non-empty strings ``test`` accepts (a filter's substring test)."""
        return np.array([i for i, s in enumerate(self.strings) if i and test(s)],
                        dtype=np.int32)

    def text(self, sid: int) -> str:
        return self.strings[sid]

    # ------------------------------------------------------------------ reading out
    def columns(self, sl: np.ndarray) -> dict[str, np.ndarray]:
        """The names of the flows in ``sl`` as object arrays of str ("" for none),
        ``name_source`` as text, ``pid`` (0: unknown) and ``named`` (any text set): copies
        that hold the strings, safe to hand to another thread."""
        arr = self._arr
        out: dict[str, np.ndarray] = {}
        named = np.zeros(len(sl), dtype=np.bool_)
        for field, name in TEXT_FIELDS.items():
            ids = getattr(self, name)[sl]
            named |= ids != 0
            out[field] = arr[ids]
        out["name_source"] = _SOURCES[self.source[sl]]
        out["pid"] = self.pid[sl].astype(np.int64)
        out["named"] = named | (out["pid"] != 0)
        return out
