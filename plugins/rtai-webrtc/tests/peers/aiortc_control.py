"""A send-recv viewer for webrtcserve mode=send-recv: aiortc sends a 440 Hz
tone as its microphone (Opus) and talks rtai control messages on the data
channel `control` (docs/protocol.md).

    aiortc_control.py MODE BASE_URL CONFIG_JSON

MODE: `whep` (the peer offers and creates the channel) or `ws` (JSON
signalling `join`: the server offers and creates the channel).
CONFIG_JSON keys (all optional):
  expect       distinct control messages to receive before going on (0)
  drop_acks    fraction of acks not sent (0.0), seeded by `seed`
  ack          false: never ack (True)
  send         control messages to send once `expect` were received; each is
               resent every 50 ms until acked, at most 3 times
  send_raw     texts sent as they are (bad input), after `send`
  flood        this many copies of a valid message sent at once, after send_raw
  linger       seconds to stay connected after the sends (1.0)
  timeout      seconds for the whole run (20)
  freq         the tone's frequency in Hz (440)

Prints `{"ready": true}` once the channel is open, then one JSON line with
what it saw: received (first copies in arrival order), copies, acks
(ids the server acked), errors (error replies), timings. Exit status 0, or 1
with {"error": ...}.
"""

import asyncio
import fractions
import json
import math
import random
import sys
import time

import av
from aiortc import MediaStreamTrack
from aiortc_common import http, new_pc, print_result, whep_offer, ws_signalling, ws_url


class Tone(MediaStreamTrack):
    """440 Hz sine, 20 ms frames of 48 kHz mono s16, paced in real time."""

    kind = "audio"

    def __init__(self, freq=440.0, rate=48000, amplitude=0.3):
        super().__init__()
        self.freq, self.rate, self.amp = freq, rate, amplitude
        self.samples = rate // 50
        self.pts = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.pts / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        base = self.pts
        pcm = bytearray()
        for i in range(self.samples):
            v = int(self.amp * 32767 * math.sin(2 * math.pi * self.freq * (base + i) / self.rate))
            pcm += v.to_bytes(2, "little", signed=True)
        frame.planes[0].update(bytes(pcm))
        frame.sample_rate = self.rate
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self.pts += self.samples
        return frame


class Peer:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rng = random.Random(cfg.get("seed", 7))
        self.pc = new_pc()
        self.channel = None
        self.opened = asyncio.get_running_loop().create_future()
        self.enough = asyncio.Event()
        self.received, self.seen, self.copies = [], set(), 0
        self.acks, self.errors, self.acks_dropped, self.acks_sent = [], [], 0, 0
        self.pending = {}
        self.started = time.monotonic()

    def take(self, channel):
        if channel.label != "control" or self.channel is not None:
            return
        self.channel = channel

        @channel.on("message")
        def on_message(text):
            self.on_text(text)

        if channel.readyState == "open":
            self.opened.set_result(True)
        else:
            @channel.on("open")
            def on_open():
                if not self.opened.done():
                    self.opened.set_result(True)

    def on_text(self, text):
        try:
            m = json.loads(text)
        except ValueError:
            self.errors.append({"error": "unparsable", "text": text[:200]})
            return
        if "ack" in m and "type" not in m:
            self.acks.append(m["ack"])
            p = self.pending.pop(m["ack"], None)
            if p:
                p.cancel()
            return
        if "error" in m:
            self.errors.append(m)
            return
        if self.cfg.get("ack", True):
            if self.rng.random() < self.cfg.get("drop_acks", 0.0):
                self.acks_dropped += 1
            else:
                self.channel.send(json.dumps({"ack": m["id"]}))
                self.acks_sent += 1
        if m["id"] in self.seen:
            self.copies += 1
            return
        self.seen.add(m["id"])
        self.received.append({"id": m["id"], "type": m["type"], "segment_id": m.get("segment_id"),
                              "payload": m.get("payload"),
                              "at_ms": round((time.monotonic() - self.started) * 1000, 1)})
        if len(self.received) >= self.cfg.get("expect", 0):
            self.enough.set()

    async def send_tracked(self, msg):
        text = json.dumps(msg)

        async def attempts():
            for _ in range(4):
                self.channel.send(text)
                await asyncio.sleep(0.05)

        task = asyncio.ensure_future(attempts())
        self.pending[msg["id"]] = task
        return task

    async def run_sends(self):
        for msg in self.cfg.get("send", []):
            # `_resend`: copies sent anyway (a peer that missed the ack): the
            # server must deliver the message once and ack every copy.
            extra = msg.get("_resend", 0)
            clean = {k: v for k, v in msg.items() if not k.startswith("_")}
            await self.send_tracked(clean)
            for _ in range(extra):
                await asyncio.sleep(0.02)
                self.channel.send(json.dumps(clean))
        for text in self.cfg.get("send_raw", []):
            self.channel.send(text)
            await asyncio.sleep(0.05)
        flood = self.cfg.get("flood", 0)
        for i in range(flood):
            self.channel.send(json.dumps({"id": f"flood-{i}", "type": "x-flood"}))


async def main_async(mode, base, cfg):
    peer = Peer(cfg)
    pc = peer.pc
    pc.on("datachannel", peer.take)
    sock = None
    sig = None
    location = None
    loop = asyncio.get_running_loop()
    if mode == "whep":
        pc.addTrack(Tone(cfg.get("freq", 440.0)))
        pc.addTransceiver("video", direction="recvonly")
        peer.take(pc.createDataChannel("control"))
        location = await whep_offer(pc, base)
    else:
        import websockets

        sock = await websockets.connect(ws_url(base))
        await sock.send(json.dumps({"type": "join", "peer_id": "ffmpeg-bot"}))
        sig = asyncio.ensure_future(ws_signalling(
            sock, pc, before_answer=lambda: pc.addTrack(Tone(cfg.get("freq", 440.0)))))
    await peer.opened
    print(json.dumps({"ready": True, "at_ms": round((time.monotonic() - peer.started) * 1000)}),
          flush=True)
    if cfg.get("expect", 0) > 0:
        await peer.enough.wait()
    await peer.run_sends()
    await asyncio.sleep(cfg.get("linger", 1.0))
    result = {"mode": mode, "received": peer.received, "copies": peer.copies,
              "acks": peer.acks, "errors": peer.errors, "acks_sent": peer.acks_sent,
              "acks_dropped": peer.acks_dropped, "ordered": peer.channel.ordered,
              "max_retransmits": peer.channel.maxRetransmits}
    for task in peer.pending.values():
        task.cancel()
    if location:
        await loop.run_in_executor(None, http, "DELETE", base + location)
    if sock is not None:
        await sock.send(json.dumps({"type": "leave"}))
        sig.cancel()
        await sock.close()
    await pc.close()
    return result


def main():
    mode, base = sys.argv[1], sys.argv[2].rstrip("/")
    cfg = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    print_result(mode, asyncio.wait_for(main_async(mode, base, cfg), cfg.get("timeout", 20)))


if __name__ == "__main__":
    main()
