"""A minimal DNS target for the executor benchmark: answers every A query with 127.0.0.1.

Run: python bench/dns_target.py --port 15353   (UDP, 127.0.0.1 only; SIGTERM stops it)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import dns.message
import dns.rrset
import uvloop


class Answer(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        reply = dns.message.make_response(query)
        for question in query.question:
            reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.1"))
        self.transport.sendto(reply.to_wire(), addr)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    transport, _ = await loop.create_datagram_endpoint(Answer, local_addr=("127.0.0.1", port))
    print(f"dns target on 127.0.0.1:{port}/udp", flush=True)
    await stop.wait()
    transport.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    uvloop.run(serve(ap.parse_args().port))


if __name__ == "__main__":
    main()
