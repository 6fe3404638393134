// Shared by page.html and voice.html (the server puts it in both pages): the
// signalling WebSocket's URL and the join over it.
function wsUrl() {
  const u = new URL("/ws", location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) u.searchParams.set("token", token);
  return u.toString();
}

// Joins as PEER_ID over `ws` with `pc`: our candidates go out, the server's
// offer is answered and its candidates added. hooks: onOpen() before the join,
// beforeAnswer() once the offer is set, onError(message) (also in
// window.rtai.errors), onLeave(reason).
function join(ws, pc, hooks) {
  pc.onicecandidate = (e) => {
    if (e.candidate && e.candidate.candidate) {
      ws.send(JSON.stringify({ type: "ice_candidate", peer_id: PEER_ID,
        candidate: e.candidate.candidate, sdpMLineIndex: e.candidate.sdpMLineIndex || 0 }));
    }
  };
  ws.onopen = () => {
    if (hooks.onOpen) hooks.onOpen();
    ws.send(JSON.stringify({ type: "join", peer_id: PEER_ID }));
  };
  // Messages are handled one after the other: the server's candidates follow
  // its offer at once and must wait until the offer is set.
  let queue = Promise.resolve();
  ws.onmessage = (e) => {
    queue = queue.then(() => handle(JSON.parse(e.data)))
      .catch((err) => window.rtai.errors.push(String(err)));
  };
  const handle = async (msg) => {
    if (msg.type === "offer") {
      await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      if (hooks.beforeAnswer) hooks.beforeAnswer();
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      ws.send(JSON.stringify({ type: "answer", sdp: pc.localDescription.sdp }));
    } else if (msg.type === "ice_candidate") {
      await pc.addIceCandidate({ candidate: msg.candidate, sdpMLineIndex: msg.sdpMLineIndex });
    } else if (msg.type === "error") {
      window.rtai.errors.push(msg.message);
      if (hooks.onError) hooks.onError(msg.message);
    } else if (msg.type === "leave") {
      if (hooks.onLeave) hooks.onLeave(msg.reason);
    }
  };
}
