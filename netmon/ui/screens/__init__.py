"""netmon's screens (UI thread only): main, a cluster's flows, a flow, its stream, a packet,
help."""

from netmon.ui.screens._base import NetmonScreen, Refresher
from netmon.ui.screens.flow_detail import FlowScreen
from netmon.ui.screens.flow_list import FlowsScreen
from netmon.ui.screens.follow import FollowScreen
from netmon.ui.screens.help import HelpScreen, TooSmallScreen
from netmon.ui.screens.main import MainScreen
from netmon.ui.screens.packet import PacketScreen

__all__ = ["FlowScreen", "FlowsScreen", "FollowScreen", "HelpScreen", "MainScreen", "NetmonScreen",
           "PacketScreen", "Refresher", "TooSmallScreen"]
