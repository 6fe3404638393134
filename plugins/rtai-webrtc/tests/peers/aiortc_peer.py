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

from aiortc_common import http, new_pc, print_result, whep_offer, ws_signalling, ws_url

TIMEOUT = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
# `progress` as a 5th argument: a "progress FRAMES" line on stderr every second (the soak).
PROGRESS = len(sys.argv) > 5 and sys.argv[5] == "progress"


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


async def whep(base, want):
    pc = new_pc()
    pc.addTransceiver("video", direction="recvonly")
    result = {"mode": "whep", "frames": 0}
    started = time.monotonic()
    run = await receive(pc, want, started, result)
    location = await whep_offer(pc, base)
    await asyncio.wait_for(run(), TIMEOUT)
    loop = asyncio.get_running_loop()
    status, _, _ = await loop.run_in_executor(None, http, "DELETE", base + location)
    result["delete_status"] = status
    result["session"] = location
    await pc.close()
    return result


async def ws(base, want, dtls_server=True):
    import websockets

    pc = new_pc()
    result = {"mode": "ws", "frames": 0, "remote_candidates": 0}
    started = time.monotonic()
    run = await receive(pc, want, started, result)
    async with websockets.connect(ws_url(base)) as sock:
        await sock.send(json.dumps({"type": "join", "peer_id": "ffmpeg-bot"}))

        def counted():
            result["remote_candidates"] += 1

        sig = asyncio.ensure_future(
            ws_signalling(sock, pc, dtls_server=dtls_server, on_candidate=counted))
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
    if mode == "whep":
        run = whep(base, want)
    else:
        run = ws(base, want, dtls_server=mode != "ws-dtls-client")
    print_result(mode, run)


if __name__ == "__main__":
    main()
