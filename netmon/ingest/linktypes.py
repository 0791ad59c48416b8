"""Link-layer header types: the LINKTYPE_* numbers of pcap and pcapng interfaces.

Constants only (https://www.tcpdump.org/linktypes.html), shared by the per-frame
decoder (:mod:`netmon.ingest.framedecoder`), its vectorised fast path
(:mod:`netmon.ingest.batch`) and the stream decoder; no state, so any thread may read
them.
"""

from __future__ import annotations

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_BSD12 = 12
LINKTYPE_RAW_BSD14 = 14
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276
