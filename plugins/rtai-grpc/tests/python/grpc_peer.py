"""A peer of grpcsink/grpcsrc in another language: Python grpcio with stubs
generated at run time from the repository's proto/rtai_stream.proto.

  grpc_peer.py pull HOST:PORT   receive a stream from a grpcsink (mode=server);
                                prints one JSON summary line
  grpc_peer.py push HOST:PORT N send N text buffers (then EOS) to a grpcsrc;
                                prints one JSON summary line
  grpc_peer.py hostile-push HOST:PORT DEPTH
                                one Push call per hostile message (caps, event
                                structure, ROI param, custom meta, tag list nested
                                DEPTH deep, and a 2 MiB caps string); prints the
                                status code each call ended with (JSON)
  grpc_peer.py hostile-pull HOST:PORT DEPTH
                                one Pull call that sends an upstream event nested
                                DEPTH deep; prints the status code (JSON)
"""
import json
import os
import queue
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")
NONE = 2**64 - 1


def stubs():
    out = tempfile.mkdtemp(prefix="rtai-grpc-stubs-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", "rtai_stream.proto"])
    if rc != 0:
        sys.exit(f"protoc failed on rtai_stream.proto ({rc})")
    sys.path.insert(0, out)
    import rtai_stream_pb2 as pb
    import rtai_stream_pb2_grpc as pb_grpc
    return pb, pb_grpc


def pull(pb, pb_grpc, target):
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.StreamBridgeStub(channel)
    outgoing = queue.Queue()
    outgoing.put(pb.Upstream(hello=pb.Hello(protocol_version=1, stream_id="python")))

    def requests():
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    summary = {"buffers": 0, "bytes": 0, "caps": None, "pts": [], "eos": False}
    consumed = 0
    for msg in stub.Pull(requests()):
        kind = msg.WhichOneof("body")
        if kind == "caps":
            summary["caps"] = msg.caps
        elif kind == "buffer":
            summary["buffers"] += 1
            summary["bytes"] += len(msg.buffer.data)
            summary["pts"].append(msg.buffer.pts)
            consumed += len(msg.buffer.data)
            outgoing.put(pb.Upstream(credit=pb.Credit(acked_seq=msg.seq, consumed_bytes=consumed)))
        elif kind == "event" and msg.event.kind == pb.Event.EOS:
            summary["eos"] = True
            # Confirm EOS; the sender then ends the call, which ends this loop.
            outgoing.put(pb.Upstream(credit=pb.Credit(acked_seq=msg.seq, consumed_bytes=consumed)))
    outgoing.put(None)
    channel.close()
    print(json.dumps(summary))


def push(pb, pb_grpc, target, count):
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.StreamBridgeStub(channel)
    eos_seq = count + 1

    def requests():
        yield pb.Downstream(hello=pb.Hello(protocol_version=1, stream_id="python"))
        yield pb.Downstream(caps="text/x-raw, format=(string)utf8")
        yield pb.Downstream(segment=pb.Segment(format=3, rate=1.0, applied_rate=1.0, start=0, stop=NONE, time=0, position=0, duration=NONE))
        for i in range(count):
            data = f"from python {i}".encode()
            yield pb.Downstream(seq=i + 1, buffer=pb.Buffer(data=data, pts=i * 10**9, dts=NONE, duration=10**9, offset=NONE, offset_end=NONE))
        yield pb.Downstream(seq=eos_seq, event=pb.Event(kind=pb.Event.EOS, timestamp=NONE, duration=NONE))
        # Keep the call open until the receiver confirmed EOS.
        confirmed.get()

    confirmed = queue.Queue()
    acked = 0
    for msg in stub.Push(requests()):
        if msg.WhichOneof("body") == "credit":
            acked = max(acked, msg.credit.acked_seq)
            if acked >= eos_seq:
                confirmed.put(True)
                break
    channel.close()
    print(json.dumps({"sent": count, "acked_seq": acked}))


def nested(opener, closer, depth):
    return opener * depth + "1" + closer * depth


def ending_code(responses):
    """Reads a call's replies until it ends; the name of the status code it ended with."""
    try:
        for _ in responses:
            pass
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def hostile_push(pb, pb_grpc, target, depth):
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    stub = pb_grpc.StreamBridgeStub(channel)
    deep_list = nested("{", "}", depth)
    deep_array = nested("<", ">", depth)
    cases = {
        "caps": pb.Downstream(caps="video/x-raw, a=" + deep_list),
        "event": pb.Downstream(seq=1, event=pb.Event(kind=pb.Event.CUSTOM_DOWNSTREAM, structure="s, a=" + deep_array, timestamp=NONE, duration=NONE)),
        "oob_event": pb.Downstream(event=pb.Event(kind=pb.Event.CUSTOM_DOWNSTREAM_OOB, structure="s, a=" + deep_list, timestamp=NONE, duration=NONE)),
        "tag": pb.Downstream(seq=1, event=pb.Event(kind=pb.Event.TAG, structure="taglist, title=" + deep_list, timestamp=NONE, duration=NONE)),
        "roi_param": pb.Downstream(seq=1, buffer=pb.Buffer(data=b"x", pts=NONE, dts=NONE, duration=NONE, metas=[pb.Meta(roi=pb.Roi(roi_type="car", params=["p, a=" + deep_array]))])),
        "custom_meta": pb.Downstream(seq=1, buffer=pb.Buffer(data=b"x", pts=NONE, dts=NONE, duration=NONE, metas=[pb.Meta(custom=pb.CustomMeta(name="M", structure="s, a=" + deep_list))])),
        "huge_caps": pb.Downstream(caps="video/x-raw, a=(string)" + "a" * (2 * 1024 * 1024)),
    }
    codes = {}
    for name, msg in cases.items():
        hello = pb.Downstream(hello=pb.Hello(protocol_version=1, stream_id="hostile-" + name))
        codes[name] = ending_code(stub.Push(iter([hello, msg])))
    channel.close()
    print(json.dumps(codes))


def hostile_pull(pb, pb_grpc, target, depth):
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.StreamBridgeStub(channel)
    deep = "s, a=" + nested("{", "}", depth)
    msgs = [
        pb.Upstream(hello=pb.Hello(protocol_version=1, stream_id="hostile")),
        pb.Upstream(event=pb.Event(kind=pb.Event.CUSTOM_UPSTREAM, structure=deep, timestamp=NONE, duration=NONE)),
    ]
    code = ending_code(stub.Pull(iter(msgs)))
    channel.close()
    print(json.dumps({"upstream_event": code}))


def main():
    pb, pb_grpc = stubs()
    if sys.argv[1] == "pull":
        pull(pb, pb_grpc, sys.argv[2])
    elif sys.argv[1] == "push":
        push(pb, pb_grpc, sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "hostile-push":
        hostile_push(pb, pb_grpc, sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "hostile-pull":
        hostile_pull(pb, pb_grpc, sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
