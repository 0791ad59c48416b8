"""NetFlow v5/v9 and IPFIX: templates and the datagram decoder, datagrams in, columns of
flow records out. Pure; one owner per decoder (the collector's reactor thread)."""
