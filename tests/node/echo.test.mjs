/*
 * echo.test.mjs — /echo through the ws client without compression: message
 * sizes across the 7-bit / 16-bit / 64-bit length boundaries, text and binary,
 * many messages in flight, fragmented sends reassembled by the server, pings
 * answered by pongs, and the close handshake.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { withHub, Client, within } from './hub.mjs';

const T = { timeout: 60000 };

/* Valid UTF-8 text of exactly n bytes, mixing 1-, 2- and 3-byte characters. */
export function textOf(n) {
  const unit = 'a\u20ac\u00e9'; /* 1 + 3 + 2 = 6 bytes */
  return unit.repeat(Math.floor(n / 6)) + 'x'.repeat(n % 6);
}

const SIZES = [0, 125, 126, 65535, 65536, 1024 * 1024];

describe('echo: sizes', () => {
  for (const size of SIZES) {
    test(`text message of ${size} bytes is echoed as text, byte for byte`, T, () =>
      withHub(async (hub) => {
        const c = await Client.open(hub.wsUrl('/echo'));
        const text = textOf(size);
        assert.equal(Buffer.byteLength(text), size);
        await c.send(text);
        const m = await c.next(20000);
        assert.equal(m.binary, false, 'opcode must stay text');
        assert.equal(m.data.length, size);
        assert.ok(m.data.equals(Buffer.from(text, 'utf8')), 'payload differs');
        c.close(1000);
        assert.equal((await c.waitClosed()).code, 1000);
      }));

    test(`binary message of ${size} bytes is echoed as binary, byte for byte`, T, () =>
      withHub(async (hub) => {
        const c = await Client.open(hub.wsUrl('/echo'));
        const bin = crypto.randomBytes(size);
        await c.send(bin, { binary: true });
        const m = await c.next(20000);
        assert.equal(m.binary, true, 'opcode must stay binary');
        assert.equal(m.data.length, size);
        assert.ok(m.data.equals(bin), 'payload differs');
        c.close(1000);
        assert.equal((await c.waitClosed()).code, 1000);
      }));
  }
});

describe('echo: many messages in flight', () => {
  test('2000 mixed text/binary messages sent without waiting come back in order', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      const sent = [];
      for (let i = 0; i < 2000; i++) {
        const size = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000][i % 9];
        if (i % 2) {
          const b = crypto.randomBytes(size);
          if (size >= 4) b.writeUInt32BE(i, 0);
          sent.push({ data: b, binary: true });
        } else {
          const s = `#${i}:` + textOf(size);
          sent.push({ data: Buffer.from(s), binary: false });
        }
      }
      /* Queue everything at once: the server sees the frames back to back. */
      const writes = sent.map((m) => c.send(m.data, { binary: m.binary }));
      const got = await c.take(sent.length, 45000);
      await Promise.all(writes);
      for (let i = 0; i < sent.length; i++) {
        assert.equal(got[i].binary, sent[i].binary, `message ${i}: opcode`);
        assert.ok(got[i].data.equals(sent[i].data), `message ${i}: payload out of order or altered`);
      }
      c.close(1000);
      await c.waitClosed();
    }));

  test('several clients echo concurrently without crosstalk', T, () =>
    withHub(async (hub) => {
      const clients = await Promise.all(Array.from({ length: 8 }, () => Client.open(hub.wsUrl('/echo'))));
      await Promise.all(clients.map(async (c, k) => {
        const msgs = Array.from({ length: 200 }, (_, i) => `client ${k} message ${i} ` + 'z'.repeat(i * 7));
        for (const m of msgs) c.send(m);
        const got = await c.take(msgs.length);
        assert.deepEqual(got.map((m) => m.data.toString()), msgs);
      }));
      for (const c of clients) c.close(1000);
      await Promise.all(clients.map((c) => c.waitClosed()));
    }));
});

describe('echo: fragmented sends', () => {
  test('a text message sent in 3 fragments is echoed as one message', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      c.send('Hello, ', { fin: false });
      c.send('fragmented ', { fin: false });
      await c.send('world');
      const m = await c.next();
      assert.equal(m.binary, false);
      assert.equal(m.data.toString(), 'Hello, fragmented world');
      c.close(1000);
      await c.waitClosed();
    }));

  test('a binary message in fragments, some of them empty, is echoed whole', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      const parts = [crypto.randomBytes(10), Buffer.alloc(0), crypto.randomBytes(70000), Buffer.alloc(0),
        crypto.randomBytes(126)];
      parts.forEach((p, i) => c.send(p, { binary: true, fin: i === parts.length - 1 }));
      const m = await c.next();
      assert.equal(m.binary, true);
      assert.ok(m.data.equals(Buffer.concat(parts)));
      c.close(1000);
      await c.waitClosed();
    }));

  test('300 fragments of 1 KiB are reassembled, and messages around them stay in order', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      const parts = Array.from({ length: 300 }, () => crypto.randomBytes(1024));
      c.send('before');
      parts.forEach((p, i) => c.send(p, { binary: true, fin: i === parts.length - 1 }));
      c.send('after');
      const [a, m, b] = await c.take(3);
      assert.equal(a.data.toString(), 'before');
      assert.equal(m.binary, true);
      assert.ok(m.data.equals(Buffer.concat(parts)), 'reassembled payload differs');
      assert.equal(b.data.toString(), 'after');
      c.close(1000);
      await c.waitClosed();
    }));

  test('a UTF-8 character split across fragments is accepted', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      const whole = Buffer.from('price: 5\u20ac \u{1F600}!', 'utf8');
      const euro = whole.indexOf(0xe2);
      const emoji = whole.indexOf(0xf0);
      /* Cut inside the 3-byte euro sign and inside the 4-byte emoji. */
      const cuts = [0, euro + 1, euro + 2, emoji + 1, emoji + 3, whole.length];
      for (let i = 0; i + 1 < cuts.length; i++) {
        c.send(whole.subarray(cuts[i], cuts[i + 1]), { binary: false, fin: i + 2 === cuts.length });
      }
      const m = await c.next();
      assert.equal(m.binary, false);
      assert.ok(m.data.equals(whole));
      c.close(1000);
      await c.waitClosed();
    }));

  test('a ping between fragments is answered and the message still reassembles', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      const pong = new Promise((resolve) => c.ws.once('pong', resolve));
      c.send('first half, ', { fin: false });
      c.ws.ping(Buffer.from('mid-message'));
      const data = await within(pong, 10000, 'the pong to a ping sent between fragments');
      assert.equal(data.toString(), 'mid-message');
      c.send('second half');
      const m = await c.next();
      assert.equal(m.data.toString(), 'first half, second half');
      c.close(1000);
      await c.waitClosed();
    }));
});

describe('echo: control frames', () => {
  for (const [name, payload] of [
    ['empty', Buffer.alloc(0)],
    ['text', Buffer.from('are you there?')],
    ['125 binary bytes', crypto.randomBytes(125)],
  ]) {
    test(`ping (${name}) is answered by a pong carrying the same data`, T, () =>
      withHub(async (hub) => {
        const c = await Client.open(hub.wsUrl('/echo'));
        const pong = new Promise((resolve) => c.ws.once('pong', resolve));
        c.ws.ping(payload);
        const data = await within(pong, 10000, 'a pong');
        assert.ok(Buffer.from(data).equals(payload), `pong payload ${data.toString('hex')} != ${payload.toString('hex')}`);
        c.close(1000);
        await c.waitClosed();
      }));
  }

  test('20 pings in a row get 20 pongs in order', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      const pongs = [];
      const all = new Promise((resolve) => c.ws.on('pong', (d) => { pongs.push(d.toString()); if (pongs.length === 20) resolve(); }));
      for (let i = 0; i < 20; i++) c.ws.ping(`p${i}`);
      await within(all, 10000, '20 pongs');
      assert.deepEqual(pongs, Array.from({ length: 20 }, (_, i) => `p${i}`));
      c.close(1000);
      await c.waitClosed();
    }));

  test('close with code 4000: the server echoes the code', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      c.close(4000, 'done here');
      const { code } = await c.waitClosed();
      assert.equal(code, 4000);
    }));

  test('close with code 4321 and a UTF-8 reason: the server echoes code and reason', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      c.close(4321, 'bye \u20ac');
      const { code, reason } = await c.waitClosed();
      assert.equal(code, 4321);
      assert.equal(reason, 'bye \u20ac', 'close reason not echoed');
    }));

  test('close without a code is answered with an empty close (1005 on the client)', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      c.close();
      const { code, reason } = await c.waitClosed();
      assert.equal(code, 1005);
      assert.equal(reason, '');
    }));

  test('messages queued before the close are all echoed before the close reply', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      for (let i = 0; i < 50; i++) c.send(`m${i}`);
      c.close(1000);
      const got = await c.take(50);
      assert.deepEqual(got.map((m) => m.data.toString()), Array.from({ length: 50 }, (_, i) => `m${i}`));
      assert.equal((await c.waitClosed()).code, 1000);
    }));
});
