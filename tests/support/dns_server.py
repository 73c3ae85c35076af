"""A small authoritative DNS server for tests (UDP, 127.0.0.1), and one that never answers.

The zone: names with records answer them (following an in-zone CNAME for other types, as an
authoritative server does); `broken.<zone>` answers SERVFAIL; a known name without records
of the asked type answers NOERROR with no answer; any other name answers NXDOMAIN.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Self

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

ZONE = "example.test."
RECORDS: list[tuple[str, str, list[str]]] = [
    ("www", "A", ["192.0.2.10", "192.0.2.11"]),
    ("www", "AAAA", ["2001:db8::10"]),
    ("alias", "CNAME", ["www.example.test."]),
    ("@", "MX", ["10 mail.example.test.", "20 Backup.Example.Test."]),
    ("@", "NS", ["ns1.example.test.", "ns2.example.test."]),
    ("@", "TXT", ['"v=spf1 -all"', '"hello " "world"']),
    ("mail", "A", ["192.0.2.25"]),
]


class _Authoritative(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        # A datagram transport, though not always an asyncio.DatagramTransport subclass.
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.server.queries += 1
        query = dns.message.from_wire(data)
        assert self.transport is not None
        self.transport.sendto(self.server.answer(query).to_wire(), addr)


@dataclass
class UdpServer:
    """A UDP server on 127.0.0.1 and a free port; subclasses give the protocol."""

    host: str = "127.0.0.1"
    port: int = 0
    queries: int = 0
    _transport: asyncio.DatagramTransport | None = None

    def protocol(self) -> asyncio.DatagramProtocol:
        raise NotImplementedError

    async def start(self) -> Self:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            self.protocol, local_addr=(self.host, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass
class DnsServer(UdpServer):
    zone: dns.name.Name = field(default_factory=lambda: dns.name.from_text(ZONE))
    rrsets: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = field(
        default_factory=lambda: defaultdict(dict))

    def protocol(self) -> asyncio.DatagramProtocol:
        return _Authoritative(self)

    def __post_init__(self) -> None:
        for label, rtype, values in RECORDS:
            name = self.zone if label == "@" else dns.name.from_text(label, self.zone)
            rrset = dns.rrset.from_text_list(name, 300, "IN", rtype, values)
            self.rrsets[name][rrset.rdtype] = rrset

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name, rtype = question.name, question.rdtype
        if name == dns.name.from_text("broken", self.zone):
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if name not in self.rrsets:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        # Follow CNAMEs inside the zone, as an authoritative server does.
        for _ in range(8):
            records = self.rrsets.get(name, {})
            if rtype in records:
                response.answer.append(records[rtype])
                break
            cname = records.get(dns.rdatatype.CNAME)
            if cname is None:
                break
            response.answer.append(cname)
            name = next(iter(cname)).target  # type: ignore[attr-defined]
        return response



class _Silent(asyncio.DatagramProtocol):
    def __init__(self, server: SilentServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.server.queries += 1  # read, and never answer


@dataclass
class SilentServer(UdpServer):
    """A nameserver that reads every query and never answers."""

    def protocol(self) -> asyncio.DatagramProtocol:
        return _Silent(self)
