// torture-server.js — NOT a peer: a hand-written, hostile WebSocket server that
// bench/run.sh --selftest (and --quick) uses to check chorus-loadgen itself.
//
//   node torture-server.js PORT [--drop-every N] [--dup-every N] [--corrupt-every N]
//
// Loopback only (127.0.0.1:PORT). It speaks RFC 6455 from raw TCP (no library),
// so it checks the generator independently of any WebSocket stack:
//   - the handshake request: GET, Upgrade: websocket, Sec-WebSocket-Version: 13,
//     a Sec-WebSocket-Key that is base64 of 16 bytes (and differs per connection);
//   - every client frame: MASK bit set, RSV clear, a mask different from that
//     connection's previous frame, pongs that carry the ping's payload exactly.
// And it makes the generator's parser work:
//   - /echo replies are cut into 1..4 fragments (continuation frames), with a
//     ping (0..125 random bytes) slipped between fragments at times, and the
//     bytes are written in random 1..64-byte pieces, one piece per event-loop
//     turn, so frame headers (incl. 16/64-bit lengths) straddle reads;
//   - /bench/sub + /bench/pub do pub/sub through the same writer.
// Fault injection, to prove the generator notices:
//   --corrupt-every N  flip one payload byte of every Nth echo reply
//   --drop-every N     skip every Nth published message for the first subscriber
//   --dup-every N      deliver every Nth published message twice to the first subscriber
// GET /stats returns the counters as JSON; GET /health returns "ok".
'use strict';
const net = require('net');
const crypto = require('crypto');

const args = process.argv.slice(2);
const port = Number(args[0]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node torture-server.js PORT [--drop-every N] [--dup-every N] [--corrupt-every N]');
  process.exit(2);
}
const opt = (name) => {
  const i = args.indexOf(name);
  return i > 0 ? Number(args[i + 1]) : 0;
};
const dropEvery = opt('--drop-every');
const dupEvery = opt('--dup-every');
const corruptEvery = opt('--corrupt-every');

const stats = {
  connections: 0, handshakes: 0, bad_handshakes: 0, duplicate_keys: 0,
  client_frames: 0, unmasked: 0, rsv_set: 0, mask_repeats: 0,
  pings_sent: 0, pongs_ok: 0, pong_mismatch: 0, client_pings: 0,
  echoed: 0, published: 0, delivered: 0, dropped: 0, duplicated: 0, corrupted: 0,
  closes: 0,
};
const keysSeen = new Set();
const channels = new Map(); // name -> array of conns (first = victim of faults)

function rnd(n) { return crypto.randomInt(n); }

function frameHeader(fin, opcode, len) {
  let h;
  if (len < 126) {
    h = Buffer.alloc(2);
    h[1] = len;
  } else if (len < 65536) {
    h = Buffer.alloc(4);
    h[1] = 126;
    h.writeUInt16BE(len, 2);
  } else {
    h = Buffer.alloc(10);
    h[1] = 127;
    h.writeBigUInt64BE(BigInt(len), 2);
  }
  h[0] = (fin ? 0x80 : 0) | opcode;
  return h;
}

class Conn {
  constructor(sock) {
    this.sock = sock;
    this.inbuf = Buffer.alloc(0);
    this.open = false;
    this.out = [];       // pending byte pieces
    this.pumping = false;
    this.lastMask = null;
    this.pendingPings = []; // payloads we sent, awaiting pongs
    this.frag = null;    // {opcode, parts}
    this.route = '';
    this.channel = '';
    this.closed = false;
  }

  // Queue bytes; they leave in random small pieces, one per loop turn.
  write(buf) {
    for (let off = 0; off < buf.length;) {
      const n = Math.min(buf.length - off, 1 + rnd(64));
      this.out.push(buf.subarray(off, off + n));
      off += n;
    }
    if (!this.pumping) {
      this.pumping = true;
      setImmediate(() => this.pump());
    }
  }

  pump() {
    if (this.closed) return;
    const piece = this.out.shift();
    if (piece) this.sock.write(piece);
    if (this.out.length) setImmediate(() => this.pump());
    else this.pumping = false;
  }

  sendPing() {
    const p = crypto.randomBytes(rnd(126));
    this.pendingPings.push(p);
    stats.pings_sent++;
    return Buffer.concat([frameHeader(true, 0x9, p.length), p]);
  }

  // A data message as 1..4 fragments with maybe a ping between them.
  sendMessage(opcode, payload) {
    const nfrag = Math.min(1 + rnd(4), Math.max(1, payload.length));
    const cuts = [0];
    for (let i = 1; i < nfrag; i++) cuts.push(rnd(payload.length + 1));
    cuts.push(payload.length);
    cuts.sort((a, b) => a - b);
    const bufs = [];
    for (let i = 0; i < nfrag; i++) {
      const part = payload.subarray(cuts[i], cuts[i + 1]);
      bufs.push(frameHeader(i === nfrag - 1, i === 0 ? opcode : 0, part.length), part);
      if (i < nfrag - 1 && rnd(4) === 0) bufs.push(this.sendPing());
    }
    this.write(Buffer.concat(bufs));
  }

  onData(chunk) {
    this.inbuf = Buffer.concat([this.inbuf, chunk]);
    if (!this.open) {
      const end = this.inbuf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.inbuf.subarray(0, end).toString('latin1');
      this.inbuf = this.inbuf.subarray(end + 4);
      if (!this.handshake(head)) return;
    }
    this.parseFrames();
  }

  handshake(head) {
    const lines = head.split('\r\n');
    const [method, target] = lines[0].split(' ');
    const h = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) h[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    const url = new URL(target || '/', 'http://localhost');
    if (method === 'GET' && !h['upgrade']) {
      let body = '';
      let status = '200 OK';
      if (url.pathname === '/health') body = 'ok\n';
      else if (url.pathname === '/stats') body = JSON.stringify(stats) + '\n';
      else status = '404 Not Found';
      this.sock.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      return false;
    }
    const key = h['sec-websocket-key'] || '';
    const keyOk = Buffer.from(key, 'base64').length === 16 && /^[A-Za-z0-9+/]{22}==$/.test(key);
    const ok = method === 'GET' && /websocket/i.test(h['upgrade'] || '') &&
      /upgrade/i.test(h['connection'] || '') && h['sec-websocket-version'] === '13' && keyOk &&
      ['/echo', '/bench/sub', '/bench/pub'].includes(url.pathname);
    if (!ok) {
      stats.bad_handshakes++;
      this.sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return false;
    }
    if (keysSeen.has(key)) stats.duplicate_keys++;
    keysSeen.add(key);
    const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    // The 101 itself also goes out in pieces.
    this.write(Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`));
    this.open = true;
    stats.handshakes++;
    this.route = url.pathname;
    this.channel = url.searchParams.get('channel') || '';
    if (this.route === '/bench/sub') {
      if (!channels.has(this.channel)) channels.set(this.channel, []);
      channels.get(this.channel).push(this);
    }
    if (rnd(2) === 0) this.write(this.sendPing()); // a ping right after the 101
    return true;
  }

  parseFrames() {
    for (;;) {
      const b = this.inbuf;
      if (b.length < 2) return;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      const need = off + (masked ? 4 : 0) + len;
      if (b.length < need) return;
      stats.client_frames++;
      if (!masked) {
        stats.unmasked++;
        this.sock.destroy();
        return;
      }
      if (b[0] & 0x70) stats.rsv_set++;
      const mask = b.subarray(off, off + 4);
      if (this.lastMask && mask.equals(this.lastMask)) stats.mask_repeats++;
      this.lastMask = Buffer.from(mask);
      const payload = Buffer.from(b.subarray(off + 4, need));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      this.inbuf = b.subarray(need);
      this.onFrame(b[0] & 0x80, b[0] & 0x0f, payload);
    }
  }

  onFrame(fin, opcode, payload) {
    if (opcode === 0xA) {
      const want = this.pendingPings.shift();
      if (want && want.equals(payload)) stats.pongs_ok++;
      else stats.pong_mismatch++;
      return;
    }
    if (opcode === 0x9) {
      stats.client_pings++;
      this.write(Buffer.concat([frameHeader(true, 0xA, payload.length), payload]));
      return;
    }
    if (opcode === 0x8) {
      stats.closes++;
      this.write(Buffer.concat([frameHeader(true, 0x8, payload.length), payload]));
      const finish = () => { if (this.out.length || this.pumping) setImmediate(finish); else this.sock.end(); };
      finish();
      return;
    }
    // Data: the client does not fragment, but accept it if it does.
    if (opcode !== 0) this.frag = { opcode, parts: [] };
    if (!this.frag) return;
    this.frag.parts.push(payload);
    if (!fin) return;
    const msg = Buffer.concat(this.frag.parts);
    const op = this.frag.opcode;
    this.frag = null;
    this.onMessage(op, msg);
  }

  onMessage(opcode, msg) {
    if (this.route === '/echo') {
      stats.echoed++;
      if (corruptEvery && stats.echoed % corruptEvery === 0 && msg.length > 32) {
        msg[msg.length - 1] ^= 0x01;
        stats.corrupted++;
      }
      this.sendMessage(opcode, msg);
    } else if (this.route === '/bench/pub') {
      stats.published++;
      const subs = channels.get(this.channel) || [];
      subs.forEach((s, i) => {
        if (s.closed) return;
        if (i === 0 && dropEvery && stats.published % dropEvery === 0) {
          stats.dropped++;
          return;
        }
        s.sendMessage(opcode, msg);
        stats.delivered++;
        if (i === 0 && dupEvery && stats.published % dupEvery === 0) {
          s.sendMessage(opcode, msg);
          stats.duplicated++;
        }
      });
    }
  }

  onClose() {
    this.closed = true;
    if (this.route === '/bench/sub') {
      const subs = channels.get(this.channel);
      if (subs) {
        const i = subs.indexOf(this);
        if (i >= 0) subs.splice(i, 1);
      }
    }
  }
}

const server = net.createServer((sock) => {
  stats.connections++;
  sock.setNoDelay(true);
  const c = new Conn(sock);
  sock.on('data', (d) => c.onData(d));
  sock.on('close', () => c.onClose());
  sock.on('error', () => {});
});
server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => {
  console.error(`torture-server listening on 127.0.0.1:${port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
