"""Labelled loopback traffic: real Twisted servers and clients, one behaviour per subnet.

Every behaviour class lives in its own ``127.0.N.0/24`` (servers on ``127.0.N.1``,
clients bound to ``127.0.N.2`` and up), so a flow's true class is known from either
address: :func:`~netmon.demo.traffic.plan.class_of`. Nothing is ever sent outside
127.0.0.0/8. Modules, by what they hold:

- :mod:`.plan`: what to generate (:class:`TrafficPlan`), the class names, the label of
  an address and the counts of what was done (:class:`TrafficStats`); no Twisted.
- :mod:`.behaviour`: the plumbing every behaviour shares (ports, timers, client loops).
- :mod:`.tcp` (``bulk``, ``web``, ``interactive``, ``scan``), :mod:`.udp` (``dns``,
  ``cbr``) and :mod:`.icmp` (``icmp``): the server/client pairs, by transport.
- :mod:`.run`: :func:`start_traffic` and the :class:`TrafficHandle` it returns.

Runs on whichever thread runs the Twisted reactor it is given (the main thread in
``netmon.bench.labelled``, the reactor thread in ``netmon demo``).

Use::

    handle = start_traffic(reactor, TrafficPlan(duration=15))
    handle.done.addCallback(lambda stats: ...)   # fires once, with TrafficStats
    handle.stop()                                 # early stop; ``done`` still fires
"""
