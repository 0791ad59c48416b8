"""netmon's widgets (UI thread only); each lives in a private module."""

from netmon.ui.widgets._cluster_table import CLUSTER_SORTS, UNCLUSTERED, ClusterTable
from netmon.ui.widgets._filter_bar import FilterBar
from netmon.ui.widgets._flow_tables import (
    FLOW_SORTS,
    HOST_SORTS,
    FlowsTable,
    HostsTable,
    PacketsTable,
    next_sort,
    sort_name,
)
from netmon.ui.widgets._header import HeaderBar, ViewState
from netmon.ui.widgets._hex_view import HexView
from netmon.ui.widgets._live_table import Column, LiveTable, column_widths
from netmon.ui.widgets._protocol_tree import ProtocolTree
from netmon.ui.widgets._rate_chart import RateChart, chart_clusters, line_colors

__all__ = [
    "CLUSTER_SORTS",
    "FLOW_SORTS",
    "HOST_SORTS",
    "UNCLUSTERED",
    "ClusterTable",
    "Column",
    "FilterBar",
    "FlowsTable",
    "HeaderBar",
    "HexView",
    "HostsTable",
    "LiveTable",
    "PacketsTable",
    "ProtocolTree",
    "RateChart",
    "ViewState",
    "chart_clusters",
    "column_widths",
    "line_colors",
    "next_sort",
    "sort_name",
]
