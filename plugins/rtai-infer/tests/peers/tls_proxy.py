"""TLS in front of a plaintext port (MLServer's gRPC): makes a CA and a
certificate for 127.0.0.1 with openssl in DIR (DIR/ca.pem is the CA a client
must trust), then accepts TLS with ALPN h2, as gRPC servers behind TLS do,
and pipes the bytes to 127.0.0.1:UPSTREAM.

  python tls_proxy.py DIR PORT UPSTREAM
"""
import asyncio
import os
import ssl
import subprocess
import sys

DIR, PORT, UPSTREAM = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, cwd=DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certificates():
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rtai test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            "-keyout", "ca.key", "-out", "ca.tmp")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(DIR, "ext.cnf"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.tmp", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    # Written last, under its final name: the test waits for it.
    os.rename(os.path.join(DIR, "ca.tmp"), os.path.join(DIR, "ca.pem"))


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def client(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(DIR, "server.pem"), os.path.join(DIR, "server.key"))
    ctx.set_alpn_protocols(["h2"])
    server = await asyncio.start_server(client, "127.0.0.1", PORT, ssl=ctx)
    async with server:
        await server.serve_forever()


make_certificates()
asyncio.run(main())
