/*
 * limits.test.mjs — protocol errors the server must answer with the RFC 6455
 * close codes: a message over --max-message (or a frame over --max-frame)
 * closes with 1009, whether sent whole, in fragments or compressed; text that
 * is not valid UTF-8 closes with 1007, whether whole, fragmented or
 * compressed. Messages right at the limits still pass.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { withHub, Client } from './hub.mjs';

const T = { timeout: 60000 };
const KiB = 1024;
const MiB = 1024 * 1024;
const SMALL = ['--max-message', '64KiB'];

/* Send, then expect no echo but a close with `code` (and the TCP connection gone). */
async function expectClose(c, code, what) {
  const { code: got, reason } = await c.waitClosed(15000);
  assert.equal(got, code, `${what}: closed with ${got} (${reason}) instead of ${code}`);
  assert.equal(c.queue.length, 0, `${what}: the offending message was echoed`);
}

describe('limits: --max-message and --max-frame give 1009', () => {
  test('a message of exactly --max-message (64 KiB) is echoed', T, () =>
    withHub({ args: SMALL }, async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      const b = crypto.randomBytes(64 * KiB);
      await c.send(b);
      const m = await c.next();
      assert.ok(m.data.equals(b));
      c.close(1000);
      await c.waitClosed();
    }));

  test('a single-frame message one byte over --max-message gives close 1009', T, () =>
    withHub({ args: SMALL }, async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      c.send(crypto.randomBytes(64 * KiB + 1)).catch(() => {});
      await expectClose(c, 1009, '64 KiB + 1 in one frame');
    }));

  test('fragments each under the limit but over it together give close 1009', T, () =>
    withHub({ args: SMALL }, async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      for (let i = 0; i < 4; i++) c.send(crypto.randomBytes(20 * KiB), { fin: i === 3 }).catch(() => {});
      await expectClose(c, 1009, '4 x 20 KiB fragments');
    }));

  test('a compressed message inflating past --max-message gives close 1009', T, () =>
    withHub({ args: SMALL }, async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0 } });
      assert.equal(c.ws.extensions, 'permessage-deflate');
      /* 1 MiB of zeros is about 1 KiB on the wire: only the inflated size is over the limit. */
      c.send(Buffer.alloc(MiB), { binary: true }).catch(() => {});
      await expectClose(c, 1009, 'compressed 1 MiB of zeros');
    }));

  test('a compressed message inflating to exactly --max-message is echoed', T, () =>
    withHub({ args: SMALL }, async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0 } });
      const b = Buffer.alloc(64 * KiB, 'z');
      await c.send(b, { binary: false });
      const m = await c.next();
      assert.ok(m.data.equals(b));
      c.close(1000);
      await c.waitClosed();
    }));

  test('default limits: 4 MiB in 1 MiB fragments is echoed, 4 MiB + 1 gives 1009', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      const parts = Array.from({ length: 4 }, () => crypto.randomBytes(MiB));
      parts.forEach((p, i) => c.send(p, { fin: i === 3 }));
      const m = await c.next(30000);
      assert.ok(m.data.equals(Buffer.concat(parts)), '4 MiB message differs');
      const d = await Client.open(hub.wsUrl('/echo'));
      [...parts, Buffer.from([1])].forEach((p, i) => d.send(p, { fin: i === 4 }).catch(() => {}));
      await expectClose(d, 1009, '4 MiB + 1 in fragments');
      c.close(1000);
      await c.waitClosed();
    }));

  test('default limits: a single frame over --max-frame (1 MiB + 1) gives 1009', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      c.send(crypto.randomBytes(MiB + 1)).catch(() => {});
      await expectClose(c, 1009, '1 MiB + 1 in one frame');
    }));

  test('a 16 MiB single frame (far over the limits) still gets close 1009, not a reset', T, () =>
    withHub(async (hub) => {
      /* The server stops reading after the frame header while megabytes are still
       * in flight: its close frame must reach the client all the same. */
      const c = await Client.open(hub.wsUrl('/echo'));
      c.send(crypto.randomBytes(16 * MiB)).catch(() => {});
      await expectClose(c, 1009, '16 MiB in one frame');
    }));

  test('an oversized message between other traffic gets close 1009, not a reset', T, () =>
    withHub({ args: SMALL }, async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      for (let i = 0; i < 200; i++) c.ws.send('before '.repeat(100));
      c.send(crypto.randomBytes(2 * MiB)).catch(() => {});
      for (let i = 0; i < 200; i++) c.ws.send('after '.repeat(100));
      const { code, reason } = await c.waitClosed(15000);
      assert.equal(code, 1009, `closed with ${code} (${reason}) instead of 1009`);
    }));

  test('the hub keeps serving others after closing an oversized sender', T, () =>
    withHub({ args: SMALL }, async (hub) => {
      const good = await Client.open(hub.wsUrl('/echo'));
      const bad = await Client.open(hub.wsUrl('/echo'));
      bad.send(crypto.randomBytes(100 * KiB)).catch(() => {});
      await expectClose(bad, 1009, '100 KiB');
      await good.send('still here');
      assert.equal((await good.next()).data.toString(), 'still here');
      good.close(1000);
      await good.waitClosed();
    }));
});

const INVALID = [
  ['a lone 0xff byte', Buffer.from([0xff])],
  ['an overlong encoding of "/"', Buffer.from([0x2f, 0xc0, 0xaf])],
  ['a UTF-16 surrogate (U+D800)', Buffer.from([0x61, 0xed, 0xa0, 0x80])],
  ['a code point above U+10FFFF', Buffer.from([0xf4, 0x90, 0x80, 0x80])],
  ['a character truncated at the end of the message', Buffer.from([0x61, 0x62, 0xe2, 0x82])],
  ['a continuation byte with no lead', Buffer.from('ok \x80 not ok', 'latin1')],
];

describe('limits: invalid UTF-8 text gives 1007', () => {
  for (const [name, bytes] of INVALID) {
    test(`text frame with ${name} gives close 1007`, T, () =>
      withHub(async (hub) => {
        const c = await Client.open(hub.wsUrl('/echo'));
        c.send(bytes, { binary: false }).catch(() => {});
        await expectClose(c, 1007, name);
      }));
  }

  test('the same bytes as a binary message are echoed untouched', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      for (const [, bytes] of INVALID) {
        await c.send(bytes, { binary: true });
        const m = await c.next();
        assert.equal(m.binary, true);
        assert.ok(m.data.equals(bytes));
      }
      c.close(1000);
      await c.waitClosed();
    }));

  test('invalid UTF-8 spread over fragments gives close 1007', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      /* E2 82 starts a 3-byte sequence; 0x28 cannot continue it. */
      c.send(Buffer.from([0x61, 0xe2]), { binary: false, fin: false }).catch(() => {});
      c.send(Buffer.from([0x82]), { fin: false }).catch(() => {});
      c.send(Buffer.from([0x28, 0x61]), { fin: true }).catch(() => {});
      await expectClose(c, 1007, 'E2 82 28 across fragments');
    }));

  test('a text message ending inside a character split over fragments gives 1007', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      c.send(Buffer.from('abc'), { binary: false, fin: false }).catch(() => {});
      c.send(Buffer.from([0xf0, 0x9f]), { fin: false }).catch(() => {});
      c.send(Buffer.from([0x98]), { fin: true }).catch(() => {});
      await expectClose(c, 1007, 'F0 9F 98 at the end of the message');
    }));

  test('compressed text that inflates to invalid UTF-8 gives close 1007', T, () =>
    withHub(async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0 } });
      assert.equal(c.ws.extensions, 'permessage-deflate');
      const bytes = Buffer.concat([Buffer.from('valid prefix '.repeat(100)), Buffer.from([0xc3, 0x28])]);
      c.send(bytes, { binary: false }).catch(() => {});
      await expectClose(c, 1007, 'compressed invalid UTF-8');
    }));
});
