#!/usr/bin/env python3
"""Helpers of fuzz/seed-corpora: a capturing relay and extractors for seed corpora.

    seedtool.py tcp-relay TARGET_PORT OUTDIR
        Listens on a free 127.0.0.1 port (written to OUTDIR/port once listening) and
        relays every connection to 127.0.0.1:TARGET_PORT, saving what each side sent:
        OUTDIR/conn-N.c2s (client to server) and OUTDIR/conn-N.s2c. Runs until killed.
    seedtool.py udp-relay TARGET_PORT OUTDIR
        The same for one UDP peer: OUTDIR/dgram-K.c2s / dgram-K.s2c per datagram.
    seedtool.py rtmp-messages FILE OUTDIR
        Parses an RTMP chunk stream (as sent after the handshake) and writes each
        message as OUTDIR/msg-N-tTYPE (body) with its timestamp in the name.
    seedtool.py flv-tags FILE OUTDIR
        Writes the body of every tag of an FLV file as OUTDIR/tag-N-tTYPE.
    seedtool.py mp4-box FILE TYPE OUT
        Writes the payload of the first box TYPE (e.g. hvcC) found in FILE to OUT.
    seedtool.py media-seeds MSGDIR CORPUS NAME
        From the messages of a publisher (rtmp-messages output): seeds for amf0
        (command and data bodies), flv_tag (audio/video bodies), rtmp_messages
        (kind, timestamp, body) and codec_config (AVC record, SPS, AudioSpecificConfig,
        a keyframe's NAL units), in CORPUS/TARGET/seed-NAME-*.
    seedtool.py aggregate FLV OUT
        Writes an rtmp_messages seed with the tags of an FLV file as one aggregate
        message (type 22), in the way encoders send them.
    seedtool.py free-port
        Prints a free 127.0.0.1 TCP port.
"""

import hashlib

import os
import socket
import struct
import sys
import threading


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_port(outdir, port):
    tmp = os.path.join(outdir, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, os.path.join(outdir, "port"))


def tcp_relay(target_port, outdir):
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    write_port(outdir, lst.getsockname()[1])
    n = 0
    while True:
        client, _ = lst.accept()
        server = socket.create_connection(("127.0.0.1", target_port))
        base = os.path.join(outdir, "conn-%d" % n)
        n += 1
        done = []

        def pump(src, dst, path, done=done, pair=(client, server)):
            with open(path, "wb") as f:
                while True:
                    try:
                        data = src.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    f.write(data)
                    f.flush()
                    try:
                        dst.sendall(data)
                    except OSError:
                        break
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            done.append(path)
            if len(done) == 2:
                for s in pair:
                    s.close()

        threading.Thread(target=pump, args=(client, server, base + ".c2s"), daemon=True).start()
        threading.Thread(target=pump, args=(server, client, base + ".s2c"), daemon=True).start()


def udp_relay(target_port, outdir):
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.1", 0))
    write_port(outdir, front.getsockname()[1])
    peer = [None]
    counts = {"c2s": 0, "s2c": 0}

    def save(direction, data):
        k = counts[direction]
        counts[direction] += 1
        if k < 64:
            with open(os.path.join(outdir, "dgram-%d.%s" % (k, direction)), "wb") as f:
                f.write(data)

    def back_to_front():
        while True:
            data, _ = back.recvfrom(65536)
            save("s2c", data)
            if peer[0] is not None:
                front.sendto(data, peer[0])

    threading.Thread(target=back_to_front, daemon=True).start()
    while True:
        data, addr = front.recvfrom(65536)
        peer[0] = addr
        save("c2s", data)
        back.sendto(data, ("127.0.0.1", target_port))


def rtmp_messages(path, outdir):
    """A minimal RTMP chunk stream parser (formats 0-3, extended timestamps, chunk
    size changes, interleaved chunk streams)."""
    data = open(path, "rb").read()
    pos = 0
    chunk_size = 128
    streams = {}  # csid -> dict(ts, len, type, sid, buf, ext)
    n = 0

    def need(k):
        return pos + k <= len(data)

    while need(1):
        b0 = data[pos]
        fmt, csid = b0 >> 6, b0 & 0x3F
        hdr = 1
        if csid == 0:
            if not need(2):
                break
            csid = data[pos + 1] + 64
            hdr = 2
        elif csid == 1:
            if not need(3):
                break
            csid = data[pos + 2] * 256 + data[pos + 1] + 64
            hdr = 3
        st = streams.setdefault(csid, {"ts": 0, "delta": 0, "len": 0, "type": 0, "sid": 0, "buf": b"", "ext": False})
        mh = {0: 11, 1: 7, 2: 3, 3: 0}[fmt]
        if not need(hdr + mh):
            break
        h = data[pos + hdr: pos + hdr + mh]
        p = pos + hdr + mh
        if fmt < 3:
            tsf = int.from_bytes(h[0:3], "big")
            st["ext"] = tsf == 0xFFFFFF
        if fmt < 2:
            st["len"] = int.from_bytes(h[3:6], "big")
            st["type"] = h[6]
        if fmt == 0:
            st["sid"] = struct.unpack("<I", h[7:11])[0]
        if st["ext"]:
            if p + 4 > len(data):
                break
            tsf = int.from_bytes(data[p:p + 4], "big")
            p += 4
        new_message = st["buf"] == b""
        if fmt < 3 or (new_message and fmt == 3):
            if fmt == 0:
                st["ts"] = tsf
            elif fmt in (1, 2):
                st["delta"] = tsf
                if new_message:
                    st["ts"] = st["ts"] + tsf
            elif new_message:
                st["ts"] = st["ts"] + st["delta"]
        take = min(chunk_size, st["len"] - len(st["buf"]))
        if p + take > len(data):
            break
        st["buf"] += data[p:p + take]
        pos = p + take
        if len(st["buf"]) == st["len"]:
            body, st["buf"] = st["buf"], b""
            if st["type"] == 1 and len(body) >= 4:
                chunk_size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            with open(os.path.join(outdir, "msg-%05d-t%d-ts%d" % (n, st["type"], st["ts"] & 0xFFFFFFFF)), "wb") as f:
                f.write(body)
            n += 1


def flv_tags(path, outdir):
    data = open(path, "rb").read()
    if data[:3] != b"FLV":
        sys.exit("not an FLV file: " + path)
    pos = int.from_bytes(data[5:9], "big") + 4
    n = 0
    while pos + 11 <= len(data):
        ty = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | (data[pos + 7] << 24)
        body = data[pos + 11:pos + 11 + size]
        if len(body) < size:
            break
        with open(os.path.join(outdir, "tag-%05d-t%d-ts%d" % (n, ty, ts)), "wb") as f:
            f.write(body)
        n += 1
        pos += 11 + size + 4


def mp4_box(path, box, out):
    data = open(path, "rb").read()
    i = data.find(box.encode())
    if i < 4:
        sys.exit("no %s box in %s" % (box, path))
    size = int.from_bytes(data[i - 4:i], "big")
    with open(out, "wb") as f:
        f.write(data[i + 4:i - 4 + size])


def put(corpus, target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def media_seeds(msgdir, corpus, name):
    """Seeds from one connection's messages."""
    msgs = []
    for fn in sorted(os.listdir(msgdir)):
        parts = fn.split("-")
        ty, ts = int(parts[2][1:]), int(parts[3][2:])
        msgs.append((ty, ts, open(os.path.join(msgdir, fn), "rb").read()))
    counts = {}
    for ty, ts, body in msgs:
        if ty in (15, 17, 18, 20):
            h = hashlib.sha1(body).hexdigest()[:12]
            put(corpus, "amf0", "seed-t%d-%s" % (ty, h), body)
            continue
        if ty not in (8, 9) or not body:
            continue
        k = counts.get(ty, 0)
        counts[ty] = k + 1
        header = (body[0] & 0x0F == 7 or body[0] >> 4 == 10) and len(body) > 1 and body[1] == 0
        keyframe = ty == 9 and body[0] >> 4 == 1 and len(body) > 1 and body[1] == 1
        if k < 12 or header:
            put(corpus, "flv_tag", "seed-%s-t%d-%03d" % (name, ty, k), body)
            kind = 1 if ty == 9 else 2
            put(corpus, "rtmp_messages", "seed-%s-t%d-%03d" % (name, ty, k),
                bytes([kind]) + struct.pack(">I", ts & 0xFFFFFFFF) + body)
        if ty == 9 and body[0] & 0x0F == 7 and header:
            rec = body[5:]
            put(corpus, "codec_config", "seed-%s-avcc" % name, rec)
            # The first SPS of the record: count at 5, then 16-bit length.
            if len(rec) > 8 and rec[5] & 0x1F:
                n = int.from_bytes(rec[6:8], "big")
                put(corpus, "codec_config", "seed-%s-sps" % name, rec[8:8 + n])
        elif ty == 8 and body[0] >> 4 == 10 and header:
            put(corpus, "codec_config", "seed-%s-asc" % name, body[2:])
        elif keyframe and "key" not in counts:
            counts["key"] = 1
            put(corpus, "codec_config", "seed-%s-keyframe" % name, body[5:5 + 65536])


def aggregate(flv, out):
    data = open(flv, "rb").read()
    if data[:3] != b"FLV":
        sys.exit("not an FLV file: " + flv)
    start = int.from_bytes(data[5:9], "big") + 4
    tags = data[start:start + 60000]
    # Whole tags only: walk them.
    pos = 0
    while pos + 11 <= len(tags):
        size = int.from_bytes(tags[pos + 1:pos + 4], "big")
        if pos + 11 + size + 4 > len(tags):
            break
        pos += 11 + size + 4
    first_ts = int.from_bytes(tags[4:7], "big") if len(tags) >= 7 else 0
    with open(out, "wb") as f:
        f.write(bytes([0]) + struct.pack(">I", first_ts) + tags[:pos])


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "tcp-relay":
        tcp_relay(int(args[0]), args[1])
    elif cmd == "udp-relay":
        udp_relay(int(args[0]), args[1])
    elif cmd == "rtmp-messages":
        rtmp_messages(args[0], args[1])
    elif cmd == "flv-tags":
        flv_tags(args[0], args[1])
    elif cmd == "mp4-box":
        mp4_box(args[0], args[1], args[2])
    elif cmd == "media-seeds":
        media_seeds(args[0], args[1], args[2])
    elif cmd == "aggregate":
        aggregate(args[0], args[1])
    elif cmd == "free-port":
        print(free_port())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
