/*
 * pubsub.test.mjs — /bench/sub and /bench/pub: every subscriber of a channel
 * gets every published message, verbatim (same opcode), in publish order,
 * across both event loops; subscribers leaving (politely or abruptly, even in
 * the middle of a burst) do not disturb the others; channels are isolated;
 * POST /bench/pub broadcasts its body (text if valid UTF-8, else binary).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { withHub, Client, sleep } from './hub.mjs';

const T = { timeout: 90000 };

function subscribe(hub, channel, n, options) {
  return Promise.all(Array.from({ length: n }, () =>
    Client.open(hub.wsUrl(`/bench/sub?channel=${encodeURIComponent(channel)}`), options)));
}

/* Message i: text or binary, sizes crossing the 7/16-bit length encodings. */
function makeMessage(i) {
  const size = i % 50 === 49 ? 65536 : [5, 125, 126, 300, 2000][i % 5];
  if (i % 4 === 3) {
    const b = crypto.randomBytes(Math.max(size, 4));
    b.writeUInt32BE(i, 0);
    return { data: b, binary: true };
  }
  const head = `msg ${i} `;
  return { data: Buffer.from(head + 'p'.repeat(Math.max(0, size - head.length))), binary: false };
}

function assertSame(got, sent, who) {
  assert.equal(got.length, sent.length, `${who}: ${got.length} messages instead of ${sent.length}`);
  for (let i = 0; i < sent.length; i++) {
    assert.equal(got[i].binary, sent[i].binary, `${who}: message ${i} opcode`);
    assert.ok(got[i].data.equals(sent[i].data),
      `${who}: message ${i} differs (got ${got[i].data.subarray(0, 12).toString()}...)`);
  }
}

async function closeAll(clients) {
  for (const c of clients) c.close(1000);
  await Promise.all(clients.map((c) => c.waitClosed()));
}

describe('pub/sub', () => {
  test('50 subscribers + 1 publisher: 500 messages, all delivered in order', T, () =>
    withHub(async (hub) => {
      const subs = await subscribe(hub, 'room-a', 50);
      const other = await subscribe(hub, 'room-b', 1);
      const pub = await Client.open(hub.wsUrl('/bench/pub?channel=room-a'));
      /* The subscribers must be spread over both event loops for this to test cross-loop fan-out. */
      const metrics = await hub.metrics();
      for (const loop of ['0', '1']) {
        const m = metrics.match(new RegExp(`^chorus_ws_open\\{loop="${loop}"\\} (\\d+)$`, 'm'));
        assert.ok(m && Number(m[1]) > 0, `no WebSocket on loop ${loop}:\n${metrics}`);
      }
      const sent = Array.from({ length: 500 }, (_, i) => makeMessage(i));
      for (const m of sent) pub.send(m.data, { binary: m.binary });
      await Promise.all(subs.map(async (s, k) => assertSame(await s.take(sent.length, 60000), sent, `subscriber ${k}`)));
      await sleep(200);
      subs.forEach((s, k) => assert.equal(s.queue.length, 0, `subscriber ${k} got extra messages`));
      assert.equal(other[0].queue.length, 0, 'a subscriber of another channel received room-a traffic');
      assert.equal(pub.queue.length, 0, 'the publisher received its own messages');
      await closeAll([...subs, ...other, pub]);
    }));

  test('subscribers leaving (close and abrupt drop, mid-burst) do not disturb the others', T, () =>
    withHub(async (hub) => {
      const subs = await subscribe(hub, 'churn', 30);
      const pub = await Client.open(hub.wsUrl('/bench/pub?channel=churn'));
      const stay = subs.slice(0, 20);
      const polite = subs.slice(20, 25);
      const abrupt = subs.slice(25, 30);
      const sent = Array.from({ length: 600 }, (_, i) => makeMessage(i));
      /* First 200, confirmed delivered to everyone. */
      for (const m of sent.slice(0, 200)) pub.send(m.data, { binary: m.binary });
      await Promise.all(subs.map(async (s, k) => assertSame(await s.take(200, 60000), sent.slice(0, 200), `subscriber ${k}`)));
      /* Next 400 published while ten subscribers leave half way through. */
      for (const m of sent.slice(200, 400)) pub.send(m.data, { binary: m.binary });
      for (const s of polite) s.close(1000, 'leaving');
      for (const s of abrupt) s.terminate();
      for (const m of sent.slice(400)) pub.send(m.data, { binary: m.binary });
      await Promise.all(stay.map(async (s, k) => {
        const got = await s.take(400, 60000);
        assertSame(got, sent.slice(200), `remaining subscriber ${k}`);
      }));
      await Promise.all([...polite, ...abrupt].map((s) => s.waitClosed()));
      for (const s of polite) assert.equal((await s.closed).code, 1000);
      /* A new subscriber joining now sees only what is published from now on. */
      const late = (await subscribe(hub, 'churn', 1))[0];
      const last = { data: Buffer.from('after the churn'), binary: false };
      pub.send(last.data, { binary: false });
      for (const s of [...stay, late]) assertSame([await s.next()], [last], 'after churn');
      await sleep(200);
      assert.equal(late.queue.length, 0);
      await closeAll([...stay, late, pub]);
    }));

  test('POST /bench/pub broadcasts a UTF-8 body as a text message', T, () =>
    withHub(async (hub) => {
      const subs = await subscribe(hub, 'http', 5);
      const bodies = ['first', '', 'third \u20ac', 'x'.repeat(100000)];
      for (const body of bodies) {
        const r = await fetch(hub.url('/bench/pub?channel=http'), { method: 'POST', body });
        assert.equal(r.status, 202, `POST answered ${r.status}`);
        await r.arrayBuffer();
      }
      const want = bodies.map((b) => ({ data: Buffer.from(b), binary: false }));
      await Promise.all(subs.map(async (s, k) => assertSame(await s.take(want.length), want, `subscriber ${k}`)));
      await closeAll(subs);
    }));

  test('POST /bench/pub with a body that is not UTF-8 broadcasts it as binary', T, () =>
    withHub(async (hub) => {
      const subs = await subscribe(hub, 'http-bin', 3);
      const body = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41]);
      const r = await fetch(hub.url('/bench/pub?channel=http-bin'), { method: 'POST', body });
      assert.equal(r.status, 202, `POST answered ${r.status}`);
      await r.arrayBuffer();
      await Promise.all(subs.map(async (s, k) => assertSame([await s.next()], [{ data: body, binary: true }], `subscriber ${k}`)));
      await closeAll(subs);
    }));

  test('subscribers that negotiated permessage-deflate still get every message intact', T, () =>
    withHub(async (hub) => {
      const plain = await subscribe(hub, 'mixed', 3);
      const deflate = await subscribe(hub, 'mixed', 3, { perMessageDeflate: { threshold: 0 } });
      for (const d of deflate) assert.equal(d.ws.extensions, 'permessage-deflate');
      const pub = await Client.open(hub.wsUrl('/bench/pub?channel=mixed'), { perMessageDeflate: { threshold: 0 } });
      const sent = Array.from({ length: 100 }, (_, i) => makeMessage(i));
      for (const m of sent) pub.send(m.data, { binary: m.binary });
      await Promise.all([...plain, ...deflate].map(async (s, k) => assertSame(await s.take(sent.length), sent, `subscriber ${k}`)));
      await closeAll([...plain, ...deflate, pub]);
    }));

  test('several publishers on one channel: each publisher\'s messages stay in order', T, () =>
    withHub(async (hub) => {
      const subs = await subscribe(hub, 'multi', 10);
      const pubs = await Promise.all(Array.from({ length: 4 }, () => Client.open(hub.wsUrl('/bench/pub?channel=multi'))));
      const per = 150;
      pubs.forEach((p, k) => { for (let i = 0; i < per; i++) p.send(`p${k}:${i}`); });
      await Promise.all(subs.map(async (s, n) => {
        const got = (await s.take(per * pubs.length, 60000)).map((m) => m.data.toString());
        for (let k = 0; k < pubs.length; k++) {
          const mine = got.filter((x) => x.startsWith(`p${k}:`));
          assert.deepEqual(mine, Array.from({ length: per }, (_, i) => `p${k}:${i}`), `subscriber ${n}, publisher ${k}`);
        }
      }));
      await closeAll([...subs, ...pubs]);
    }));

  test('subscribing without a channel is refused with HTTP 400', T, () =>
    withHub(async (hub) => {
      await assert.rejects(Client.open(hub.wsUrl('/bench/sub')), /unexpected HTTP 400/);
      await assert.rejects(Client.open(hub.wsUrl('/bench/sub?channel=')), /unexpected HTTP 400/);
    }));
});
