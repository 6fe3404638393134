"""What the aiortc viewers of webrtcserve share (aiortc_peer.py,
aiortc_control.py): the peer connection, the WHEP offer/answer and the JSON
WebSocket signalling."""

import asyncio
import json
import sys
import urllib.request

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp


def new_pc():
    # No STUN server: loopback only (aiortc would otherwise try a public one).
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def http(method, url, body=None, content_type=None):
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read().decode()


async def whep_offer(pc, base):
    """Offers `pc` (every candidate gathered) to BASE/whep, sets the answer;
    the session's Location (for the DELETE that leaves)."""
    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    status, headers, answer = await loop.run_in_executor(
        None, http, "POST", base + "/whep", pc.localDescription.sdp, "application/sdp")
    assert status == 201, (status, answer)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return headers["Location"]


def ws_url(base):
    return base.replace("http://", "ws://") + "/ws"


async def ws_signalling(sock, pc, dtls_server=True, before_answer=None, on_candidate=None):
    """Answers the server's offer on `sock` (after `before_answer()`, e.g. adding
    a track) and adds its candidates (`on_candidate()` after each) until the
    socket closes; a server `error` raises."""
    async for text in sock:
        msg = json.loads(text)
        if msg["type"] == "offer":
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            if before_answer:
                before_answer()
            # Answer as the DTLS server (setup:passive). GStreamer 1.22's DTLS
            # has an RSA certificate and aiortc's DTLS client offers ECDSA
            # ciphers only ("no shared cipher"): aiortc must not be the client.
            # aiortc keeps a role set before createAnswer (private API).
            if dtls_server:
                for t in pc.getTransceivers():
                    t.receiver.transport._set_role("server")
            await pc.setLocalDescription(await pc.createAnswer())
            await sock.send(json.dumps({"type": "answer", "sdp": pc.localDescription.sdp}))
        elif msg["type"] == "ice_candidate":
            line = msg["candidate"]
            if line.startswith("candidate:"):
                line = line[len("candidate:"):]
            if not line:
                continue
            c = candidate_from_sdp(line)
            c.sdpMLineIndex = msg["sdpMLineIndex"]
            c.sdpMid = pc.getTransceivers()[0].mid if pc.getTransceivers() else "0"
            await pc.addIceCandidate(c)
            if on_candidate:
                on_candidate()
        elif msg["type"] == "error":
            raise RuntimeError("server error: " + msg["message"])


def print_result(mode, coro):
    """Runs `coro`; prints its result as one JSON line, or an `error` line and
    exits 1 (one JSON line either way)."""
    try:
        result = asyncio.run(coro)
    except Exception as e:
        print(json.dumps({"mode": mode, "error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)
    print(json.dumps(result), flush=True)
