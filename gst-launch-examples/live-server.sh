#!/usr/bin/env bash
# A live streaming server: RTMP ingest with stream keys (rtmpserversrc) and, per stream, an ABR
# ladder served as HLS (and LL-HLS with LOW_LATENCY=1) and DASH by abrsink. One process: every
# rtmpserversrc shares the RTMP port, every abrsink the HTTP port.
#
# Usage: live-server.sh [HTTP_PORT] [RTMP_PORT]        (defaults 8080 and 1935)
#   STREAMS="cam1=key1,cam2=key2"  stream names and their keys (default two demo streams)
#   LISTEN_HOST=0.0.0.0            to accept publishers and viewers from other machines
#   LOW_LATENCY=1                  LL-HLS parts (200 ms) and blocking playlist reload
#   DATABASE=live.db               keep viewer sessions and the /ops history in this SQLite file
#                                  (or a postgres:// URL) across restarts; default in memory
#   AUTH_TOKEN=secret              require it (Authorization: Bearer or ?access_token=) on /ops,
#                                  /api and /ws; media, /watch and /metrics stay open
#
# Publish (ffmpeg):  ffmpeg -re -i clip.mp4 -c:v libx264 -tune zerolatency -c:a aac -f flv \
#                      'rtmp://HOST:1935/live/cam1?key=key1'
# Publish (OBS):     Settings → Stream → Service "Custom", Server rtmp://HOST:1935/live,
#                    Stream Key key1 (or cam1?key=key1); Output: H.264 + AAC, keyframe interval 1 s.
# Watch:             http://HOST:8080/watch/cam1  (hls.js; ?dash=1 for dash.js)
#                    HLS  http://HOST:8080/hls/cam1/master.m3u8
#                    DASH http://HOST:8080/dash/cam1/manifest.mpd
# A publisher that leaves ends its stream (EXT-X-ENDLIST, static MPD); when it publishes again
# (OBS reconnecting) the same URLs go live again.
#
# RTAI_EXAMPLE_SHORT=1: free ports, ffmpeg publishes cam1 (720p) and cam2 (480p) for 3 s, the
# script checks both master playlists and the ENDLIST after the publishers leave, then stops.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/../target/release}"
# The player page's hls.js/dash.js (scripts/setup.sh installs them there).
export RTAI_PLAYER_JS_DIR="${RTAI_PLAYER_JS_DIR:-$here/../plugins/rtai-live/tests/player/node_modules}"
short="${RTAI_EXAMPLE_SHORT:-}"
host="${LISTEN_HOST:-127.0.0.1}"
# pick_port (a port if free on loopback, else a free one), shared with the other examples.
root="$here/.."
python="${RTAI_PYTHON:-python3}"
# shellcheck source=../scripts/agent/lib.sh
. "$root/scripts/agent/lib.sh"
http_port="$(pick_port "${1:-8080}")"
rtmp_port="$(pick_port "${2:-1935}")"
streams="${STREAMS:-cam1=demo-key1,cam2=demo-key2}"
ll=false
[ "${LOW_LATENCY:-}" = 1 ] && ll=true
# Every abrsink shares one HTTP server, so they all get the same store and token.
store=()
[ -n "${DATABASE:-}" ] && store+=("database=$DATABASE")
[ -n "${AUTH_TOKEN:-}" ] && store+=("auth-token=$AUTH_TOKEN")

chains=()
i=0
IFS=',' read -ra pairs <<< "$streams"
for pair in "${pairs[@]}"; do
  name="${pair%%=*}"
  key="${pair#*=}"
  chains+=(rtmpserversrc "listen=$host:$rtmp_port" "stream-name=$name" "stream-keys=$name=$key"
    eos-on-disconnect=false ! flvdemux "name=d$i"
    "d$i.video" ! queue ! h264parse ! avdec_h264 ! queue
    ! abrsink "name=a$i" "stream=$name" "listen=$host:$http_port" "low-latency=$ll" ${store[@]+"${store[@]}"}
    "d$i.audio" ! queue ! aacparse ! avdec_aac ! queue ! "a$i.audio")
  echo "stream $name: publish rtmp://$host:$rtmp_port/live/$name?key=<key>, watch http://$host:$http_port/watch/$name"
  i=$((i + 1))
done

gst-launch-1.0 -e "${chains[@]}" > /tmp/live-server-$$.log 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f /tmp/live-server-$$.log' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$rtmp_port") 2>/dev/null && break
  sleep 0.1
done

if [ "$short" != 1 ]; then
  wait $server
  exit $?
fi

publish() { # name key size
  ffmpeg -hide_banner -loglevel error -nostdin -re \
    -f lavfi -i "testsrc2=size=$3:rate=30" -f lavfi -i sine=frequency=440 -t 3 \
    -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -pix_fmt yuv420p -c:a aac \
    -f flv "rtmp://127.0.0.1:$rtmp_port/live/$1?key=$2"
}
publish cam1 demo-key1 1280x720 &
p1=$!
publish cam2 demo-key2 854x480 &
p2=$!
for name in cam1 cam2; do
  # The master playlist is answered once every rendition has a segment.
  curl -sf --max-time 20 "http://127.0.0.1:$http_port/hls/$name/master.m3u8" | grep -E 'STREAM-INF'
done
wait $p1 $p2
# The publishers left: the playlists end within a couple of seconds.
for name in cam1 cam2; do
  ok=""
  for _ in $(seq 50); do
    if curl -sf "http://127.0.0.1:$http_port/hls/$name/480p/index.m3u8" | grep -q EXT-X-ENDLIST; then
      ok=1
      break
    fi
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "$name: no EXT-X-ENDLIST after the publisher left"; cat /tmp/live-server-$$.log; exit 1; }
  echo "$name: ended (EXT-X-ENDLIST)"
done
