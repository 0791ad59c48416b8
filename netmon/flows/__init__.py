"""Flows: keys, the FlowTable (packets, exported records and listener connections into
bidirectional flows), views, the filter language and selection of flows and hosts.

Pure (numpy); one owner: the reactor thread. Imports ingest, netflow and core."""
