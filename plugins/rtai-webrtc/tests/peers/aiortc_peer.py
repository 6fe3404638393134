"""A non-browser WebRTC viewer for webrtcserve: aiortc (pure Python WebRTC,
PyAV's H.264 decoder) joins over WHEP or the JSON WebSocket signalling,
decodes `frames` video frames and prints one JSON line with what it saw.

    aiortc_peer.py whep http://127.0.0.1:PORT FRAMES [TIMEOUT_S]
    aiortc_peer.py ws   http://127.0.0.1:PORT FRAMES [TIMEOUT_S]
    aiortc_peer.py ws-dtls-client http://127.0.0.1:PORT FRAMES [TIMEOUT_S]

Exit status 0 once FRAMES frames decoded (and the session was left: DELETE
for WHEP, `leave` for the WebSocket), 1 with a JSON error line otherwise.
`ws-dtls-client` answers as the DTLS client, which fails against GStreamer
1.22 (see below): the tests use it as a real failing viewer.
"""

import asyncio
import json
import sys
import time
import urllib.request

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

TIMEOUT = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
# `progress` as a 5th argument: a "progress FRAMES" line on stderr every second (the soak).
PROGRESS = len(sys.argv) > 5 and sys.argv[5] == "progress"


def new_pc():
    # No STUN server: loopback only (aiortc would otherwise try a public one).
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    return pc


async def receive(pc, want, started, result):
    """Decodes `want` frames of the first video track into result."""
    got_track = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track):
        if track.kind == "video" and not got_track.done():
            got_track.set_result(track)

    async def report():
        while True:
            await asyncio.sleep(1)
            print("progress", result["frames"], file=sys.stderr, flush=True)

    async def run():
        if PROGRESS:
            asyncio.ensure_future(report())
        track = await got_track
        while result["frames"] < want:
            frame = await track.recv()
            if result["frames"] == 0:
                result["first_frame_ms"] = round((time.monotonic() - started) * 1000)
            result["frames"] += 1
            result["width"], result["height"] = frame.width, frame.height
            # A decoded picture: its pixels are there (not an empty frame).
            luma = bytes(frame.planes[0])
            result["mean_luma"] = round(sum(luma) / max(len(luma), 1), 1)

    return run


def http(method, url, body=None, content_type=None):
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read().decode()


async def whep(base, want):
    pc = new_pc()
    pc.addTransceiver("video", direction="recvonly")
    result = {"mode": "whep", "frames": 0}
    started = time.monotonic()
    run = await receive(pc, want, started, result)
    await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
    loop = asyncio.get_running_loop()
    status, headers, answer = await loop.run_in_executor(
        None, http, "POST", base + "/whep", pc.localDescription.sdp, "application/sdp")
    assert status == 201, (status, answer)
    location = headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(run(), TIMEOUT)
    status, _, _ = await loop.run_in_executor(None, http, "DELETE", base + location)
    result["delete_status"] = status
    result["session"] = location
    await pc.close()
    return result


async def ws(base, want, dtls_server=True):
    import websockets

    url = base.replace("http://", "ws://") + "/ws"
    pc = new_pc()
    result = {"mode": "ws", "frames": 0, "remote_candidates": 0}
    started = time.monotonic()
    run = await receive(pc, want, started, result)
    async with websockets.connect(url) as sock:
        await sock.send(json.dumps({"type": "join", "peer_id": "ffmpeg-bot"}))

        async def signalling():
            async for text in sock:
                msg = json.loads(text)
                if msg["type"] == "offer":
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
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
                    result["remote_candidates"] += 1
                elif msg["type"] == "error":
                    raise RuntimeError("server error: " + msg["message"])

        sig = asyncio.ensure_future(signalling())
        try:
            await asyncio.wait_for(run(), TIMEOUT)
        finally:
            if sig.done() and sig.exception():
                raise sig.exception()
            sig.cancel()
        await sock.send(json.dumps({"type": "leave"}))
    await pc.close()
    return result


def main():
    mode, base, want = sys.argv[1], sys.argv[2].rstrip("/"), int(sys.argv[3])
    try:
        if mode == "whep":
            run = whep(base, want)
        else:
            run = ws(base, want, dtls_server=mode != "ws-dtls-client")
        result = asyncio.run(run)
    except Exception as e:  # one JSON line either way
        print(json.dumps({"mode": mode, "error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
