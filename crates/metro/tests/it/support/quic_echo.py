"""A QUIC echo server and client on aioquic (PyPI, pinned in .ci/run's venv), for
tests/it/proto_netns.rs. aioquic spins the latency spin bit (RFC 9000 17.4).

  quic_echo.py server ADDR PORT        echo every stream's data back until killed
  quic_echo.py client ADDR PORT N GAP  N exchanges GAP seconds apart on one stream;
                                       prints JSON: the connect time and each exchange's
                                       round trip (send to echo), seconds
"""
import asyncio
import datetime
import json
import ssl
import sys
import tempfile
import time

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metro.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    c, k = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(c, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(k, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return c, k


class Echo(QuicConnectionProtocol):
    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self._quic.send_stream_data(event.stream_id, event.data, end_stream=False)
            self.transmit()


class Client(QuicConnectionProtocol):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.waiter = None

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and self.waiter and not self.waiter.done():
            self.waiter.set_result(time.perf_counter())


async def server(addr, port):
    with tempfile.TemporaryDirectory() as d:
        cfg = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
        cfg.load_cert_chain(*self_signed(d))
        await serve(addr, port, configuration=cfg, create_protocol=Echo)
        print("listening", flush=True)
        await asyncio.Future()


async def client(addr, port, n, gap):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["echo"])
    cfg.verify_mode = ssl.CERT_NONE
    t0 = time.perf_counter()
    async with connect(addr, port, configuration=cfg, create_protocol=Client) as c:
        connected = time.perf_counter() - t0
        stream = c._quic.get_next_available_stream_id()
        rtts = []
        for i in range(n):
            c.waiter = asyncio.get_running_loop().create_future()
            sent = time.perf_counter()
            c._quic.send_stream_data(stream, b"x" * 100)
            c.transmit()
            got = await asyncio.wait_for(c.waiter, 5)
            rtts.append(got - sent)
            await asyncio.sleep(gap)
        print(json.dumps({"connect": connected, "rtts": rtts}), flush=True)


if __name__ == "__main__":
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "server":
        asyncio.run(server(addr, port))
    else:
        asyncio.run(client(addr, port, int(sys.argv[4]), float(sys.argv[5])))
