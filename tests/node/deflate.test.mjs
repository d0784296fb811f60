/*
 * deflate.test.mjs — permessage-deflate (RFC 7692) negotiated by the ws client
 * with /echo: the extension is accepted with each parameter variant ws can
 * offer, the 101's parameters honour the offer, compressible and
 * incompressible payloads round-trip, the server really compresses (bytes on
 * the wire), honours context takeover as negotiated and server_max_window_bits
 * (ws inflates with the negotiated window, so a server using a larger window
 * breaks the stream), and fragmented compressed messages reassemble.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { withHub, Client } from './hub.mjs';

const T = { timeout: 60000 };

/* Parse "permessage-deflate; a; b=10" into {name, params{}} (first extension only). */
function parseExt(header) {
  if (!header) return null;
  const [name, ...rest] = header.split(';').map((s) => s.trim());
  const params = {};
  for (const p of rest) {
    const [k, v] = p.split('=').map((s) => s.trim());
    params[k.toLowerCase()] = v === undefined ? true : v.replace(/^"|"$/g, '');
  }
  return { name: name.toLowerCase(), params };
}

const compressible = () => Buffer.from('the quick brown fox jumps over the lazy dog; '.repeat(4000)); /* 180 KB */
const incompressible = () => crypto.randomBytes(200 * 1024);
/* 4 KiB random block repeated: only a window of >= 4 KiB can exploit the repeats. */
const farRepeats = () => { const b = crypto.randomBytes(4096); return Buffer.concat(Array(16).fill(b)); };

/* Bytes the client's socket read while fn ran (server -> client wire size). */
async function wireBytes(c, fn) {
  const before = c.ws._socket.bytesRead;
  const r = await fn();
  return { bytes: c.ws._socket.bytesRead - before, result: r };
}

async function roundTrip(c, payload, binary) {
  await c.send(payload, { binary });
  const m = await c.next(20000);
  assert.equal(m.binary, binary, 'opcode changed');
  assert.equal(m.data.length, payload.length, 'length changed');
  assert.ok(m.data.equals(payload), 'payload changed');
  return m;
}

const VARIANTS = [
  { name: 'threshold 0 (defaults)', opts: { threshold: 0 } },
  { name: 'serverNoContextTakeover', opts: { threshold: 0, serverNoContextTakeover: true } },
  { name: 'clientNoContextTakeover', opts: { threshold: 0, clientNoContextTakeover: true } },
  { name: 'both no_context_takeover', opts: { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true } },
  { name: 'serverMaxWindowBits 10', opts: { threshold: 0, serverMaxWindowBits: 10 } },
  { name: 'serverMaxWindowBits 9', opts: { threshold: 0, serverMaxWindowBits: 9 } },
  { name: 'clientMaxWindowBits 9', opts: { threshold: 0, clientMaxWindowBits: 9 } },
  { name: 'clientMaxWindowBits 8', opts: { threshold: 0, clientMaxWindowBits: 8 } },
  { name: 'both windows 12 + both no_context_takeover',
    opts: { threshold: 0, serverMaxWindowBits: 12, clientMaxWindowBits: 12, serverNoContextTakeover: true, clientNoContextTakeover: true } },
  { name: 'windows 15', opts: { threshold: 0, serverMaxWindowBits: 15, clientMaxWindowBits: 15 } },
];

describe('permessage-deflate: negotiation variants', () => {
  for (const v of VARIANTS) {
    test(`${v.name}: negotiated, parameters honoured, payloads round-trip`, T, () =>
      withHub(async (hub) => {
        const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: v.opts });
        assert.equal(c.ws.extensions, 'permessage-deflate', 'extension not negotiated');
        const ext = parseExt(c.upgradeHeaders['sec-websocket-extensions']);
        assert.equal(ext.name, 'permessage-deflate');
        const p = ext.params;
        if (v.opts.serverNoContextTakeover) {
          assert.ok(p.server_no_context_takeover, 'server_no_context_takeover offered but not in the response');
        }
        if (v.opts.serverMaxWindowBits) {
          assert.ok(p.server_max_window_bits, 'server_max_window_bits offered but not in the response');
          assert.ok(Number(p.server_max_window_bits) <= v.opts.serverMaxWindowBits, 'server window larger than offered');
          assert.ok(Number(p.server_max_window_bits) >= 8);
        }
        if (p.client_max_window_bits !== undefined) {
          const bits = Number(p.client_max_window_bits);
          assert.ok(bits >= 8 && bits <= 15, `client_max_window_bits=${p.client_max_window_bits}`);
          if (typeof v.opts.clientMaxWindowBits === 'number') assert.ok(bits <= v.opts.clientMaxWindowBits);
        }

        /* Compressible text and binary: the server compresses on the way back. */
        const comp = compressible();
        const { bytes } = await wireBytes(c, () => roundTrip(c, comp, false));
        assert.ok(bytes < comp.length / 10, `server sent ${bytes} bytes for a ${comp.length}-byte compressible message`);
        await roundTrip(c, comp, true);
        /* Incompressible: still exact. */
        await roundTrip(c, incompressible(), true);
        /* Repeats 4 KiB apart, sent twice: breaks if the server uses a window larger than negotiated. */
        const far = farRepeats();
        await roundTrip(c, far, true);
        await roundTrip(c, far, true);
        /* Small (below --deflate-min-size) and empty messages. */
        await roundTrip(c, Buffer.from('tiny'), false);
        await roundTrip(c, Buffer.alloc(0), false);
        await roundTrip(c, Buffer.alloc(0), true);
        /* Many compressed messages in a row keep their order with context takeover state. */
        const msgs = Array.from({ length: 200 }, (_, i) => Buffer.from(`message ${i} `.repeat(1 + (i % 50))));
        for (const m of msgs) c.send(m, { binary: false });
        const got = await c.take(msgs.length);
        for (let i = 0; i < msgs.length; i++) assert.ok(got[i].data.equals(msgs[i]), `message ${i} differs`);
        c.close(1000);
        assert.equal((await c.waitClosed()).code, 1000);
      }));
  }
});

describe('permessage-deflate: behaviour', () => {
  test('a repeated message costs on the wire what the negotiated context takeover implies', T, () =>
    withHub(async (hub) => {
      /* The server may impose server_no_context_takeover even unasked (RFC 7692 7.1.1.1). */
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0 } });
      const takeover = !parseExt(c.upgradeHeaders['sec-websocket-extensions']).params.server_no_context_takeover;
      const msg = Buffer.from(crypto.randomBytes(6000).toString('base64')); /* 8000 bytes, ~75% entropy */
      const first = await wireBytes(c, () => roundTrip(c, msg, false));
      const second = await wireBytes(c, () => roundTrip(c, msg, false));
      assert.ok(first.bytes < msg.length, 'not compressed at all');
      if (takeover) {
        assert.ok(second.bytes < first.bytes / 4,
          `second copy took ${second.bytes} bytes vs ${first.bytes}: context not carried over`);
      } else {
        assert.ok(Math.abs(second.bytes - first.bytes) <= 16,
          `sizes ${first.bytes} then ${second.bytes}: context kept despite server_no_context_takeover`);
      }
      c.close(1000);
      await c.waitClosed();
    }));

  test('with server_no_context_takeover, a repeated message costs the same each time', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0, serverNoContextTakeover: true } });
      const msg = Buffer.from(crypto.randomBytes(6000).toString('base64'));
      const first = await wireBytes(c, () => roundTrip(c, msg, false));
      const second = await wireBytes(c, () => roundTrip(c, msg, false));
      assert.ok(first.bytes < msg.length, 'not compressed at all');
      assert.ok(Math.abs(second.bytes - first.bytes) <= 16,
        `sizes ${first.bytes} then ${second.bytes}: server kept its context despite server_no_context_takeover`);
      c.close(1000);
      await c.waitClosed();
    }));

  test('a compressed message sent in fragments is inflated and reassembled', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0 } });
      const parts = [Buffer.from('alpha '.repeat(1000)), crypto.randomBytes(5000), Buffer.alloc(0),
        Buffer.from('omega '.repeat(3000))];
      parts.forEach((p, i) => c.send(p, { binary: true, fin: i === parts.length - 1 }));
      const m = await c.next();
      assert.equal(m.binary, true);
      assert.ok(m.data.equals(Buffer.concat(parts)));
      /* And a text one, split inside a multi-byte character. */
      const t = Buffer.from('\u20ac'.repeat(3000));
      c.send(t.subarray(0, 4001), { binary: false, fin: false });
      c.send(t.subarray(4001), { binary: false });
      const m2 = await c.next();
      assert.equal(m2.binary, false);
      assert.ok(m2.data.equals(t));
      c.close(1000);
      await c.waitClosed();
    }));

  test('compressed and uncompressed messages interleave (compress: false per message)', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0 } });
      const msgs = Array.from({ length: 100 }, (_, i) => Buffer.from(`${i} `.repeat(100 + i)));
      msgs.forEach((m, i) => c.send(m, { binary: false, compress: i % 3 !== 0 }));
      const got = await c.take(msgs.length);
      for (let i = 0; i < msgs.length; i++) assert.ok(got[i].data.equals(msgs[i]), `message ${i} differs`);
      c.close(1000);
      await c.waitClosed();
    }));

  test('1 MiB compressible message round-trips compressed both ways', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0 } });
      const big = Buffer.from('0123456789abcdef'.repeat(65536));
      const w0 = c.ws._socket.bytesWritten;
      const { bytes } = await wireBytes(c, () => roundTrip(c, big, true));
      assert.ok(c.ws._socket.bytesWritten - w0 < big.length / 10, 'client did not compress (ws option ignored?)');
      assert.ok(bytes < big.length / 10, `server sent ${bytes} bytes for 1 MiB of repeats`);
      c.close(1000);
      await c.waitClosed();
    }));

  test('an offer of server_max_window_bits=8 is declined; the connection works uncompressed', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0, serverMaxWindowBits: 8 } });
      assert.equal(c.ws.extensions, '');
      assert.equal(c.upgradeHeaders['sec-websocket-extensions'], undefined);
      await roundTrip(c, compressible(), false);
      c.close(1000);
      await c.waitClosed();
    }));

  test('with --no-deflate the offer is declined and echo still works', T, () =>
    withHub({ args: ['--no-deflate'] }, async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0 } });
      assert.equal(c.ws.extensions, '');
      const comp = compressible();
      const { bytes } = await wireBytes(c, () => roundTrip(c, comp, false));
      assert.ok(bytes >= comp.length, 'data came back compressed without the extension');
      c.close(1000);
      await c.waitClosed();
    }));
});
