"""Bytes to packets: pcap/pcapng stream decoding (incremental and vectorised), pcap
writing, the ring of recent frames and on-demand dissection by tshark.

Pure modules owned by whichever thread feeds them (the reactor thread in netmon),
except :mod:`~netmon.ingest.dissect`, which runs in a worker thread. Imports only core."""
