"""Real Twisted servers and clients on 127.0.0.1, bounded, for the live-capture tests.

Run as a script: ``python tests/loopback_traffic.py TCP_PORT UDP_PORT CONNS DGRAMS``.
It serves an echo TCP server and a UDP echo server on 127.0.0.1, opens CONNS TCP
client connections that each send 2,000 bytes and close once echoed, sends DGRAMS
UDP datagrams of 100 bytes (each echoed), then prints one JSON line describing
what crossed the wire and exits. Gives up after 20 s whatever happens.
"""

from __future__ import annotations

import json
import sys

from twisted.internet import defer, protocol, reactor, task

PAYLOAD = b"x" * 2000
DGRAM = b"d" * 100


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Client(protocol.Protocol):
    def connectionMade(self) -> None:
        self.got = 0
        self.transport.write(PAYLOAD)

    def dataReceived(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= len(PAYLOAD):
            self.transport.loseConnection()

    def connectionLost(self, reason: object) -> None:
        self.factory.done.callback(self.got)


class UdpEcho(protocol.DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        self.transport.write(data, addr)


class UdpClient(protocol.DatagramProtocol):
    def __init__(self, count: int, port: int) -> None:
        self.count = count
        self.port = port
        self.replies = 0
        self.done = defer.Deferred()

    def startProtocol(self) -> None:
        self.sender = task.LoopingCall(self.send_one)
        self.sent = 0
        self.sender.start(0.005)

    def send_one(self) -> None:
        if self.sent >= self.count:
            self.sender.stop()
            return
        self.transport.write(DGRAM, ("127.0.0.1", self.port))
        self.sent += 1

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        self.replies += 1
        if self.replies == self.count and not self.done.called:
            self.done.callback(self.replies)


@defer.inlineCallbacks
def main(tcp_port: int, udp_port: int, conns: int, dgrams: int) -> defer.Deferred:
    reactor.listenTCP(tcp_port, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
    reactor.listenUDP(udp_port, UdpEcho(), interface="127.0.0.1")
    results = []
    for _ in range(conns):
        factory = protocol.ClientFactory.forProtocol(Client)
        factory.done = defer.Deferred()
        reactor.connectTCP("127.0.0.1", tcp_port, factory)
        results.append(factory.done)
    echoed = yield defer.gatherResults(results)
    client = UdpClient(dgrams, udp_port)
    listening = reactor.listenUDP(0, client, interface="127.0.0.1")
    replies = yield client.done
    print(json.dumps({"tcp_conns": len(echoed), "tcp_bytes_each": len(PAYLOAD),
                      "echoed": sum(echoed), "udp_client_port": listening.getHost().port,
                      "udp_dgrams": dgrams, "udp_replies": replies,
                      "udp_payload": len(DGRAM)}), flush=True)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:5]]
    reactor.callLater(20, reactor.stop)  # bounded, whatever happens
    d = main(*args)
    d.addBoth(lambda _: reactor.callLater(0.2, reactor.stop))
    reactor.run()
