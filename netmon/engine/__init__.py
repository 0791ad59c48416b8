"""The reactor side: the Engine (lifecycle, tick, snapshots), the cluster job on its
worker thread and the engine's end of the UI link. Everything here runs on the
Twisted reactor thread unless a module says otherwise."""
