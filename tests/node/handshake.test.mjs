/*
 * handshake.test.mjs — the opening handshake as the ws client sees it:
 * subprotocol offers the echo endpoint does not support are not selected (the
 * connection opens with ws.protocol '' and no Sec-WebSocket-Protocol in the
 * 101), upgrades to unknown paths are refused, and the plain HTTP endpoints
 * answer next to the WebSocket ones.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withHub, Client } from './hub.mjs';

const T = { timeout: 30000 };

describe('handshake', () => {
  test('unsupported subprotocols offered: still connects, ws.protocol is \'\' and echo works', T, () =>
    withHub(async (hub) => {
      /* Offered through the header: ws then applies no client-side subprotocol rule
       * (with the protocols argument ws itself refuses a 101 that selects none). */
      const c = await Client.open(hub.wsUrl('/echo'),
        { headers: { 'Sec-WebSocket-Protocol': 'chat.v2, x-unknown-protocol' } });
      assert.equal(c.ws.protocol, '');
      assert.equal(c.upgradeHeaders['sec-websocket-protocol'], undefined,
        'the 101 selected a subprotocol the endpoint does not support');
      await c.send('with protocols offered');
      assert.equal((await c.next()).data.toString(), 'with protocols offered');
      c.close(1000);
      await c.waitClosed();
    }));

  test('unsupported subprotocols via ws\'s protocols argument: the 101 selects none', T, () =>
    withHub(async (hub) => {
      /* ws (like browsers) fails the connection when no offered protocol is selected;
       * the error says which side was at fault: "no subprotocol", not an invalid one. */
      const c = new Client(hub.wsUrl('/echo'), ['chat.v2', 'x-unknown-protocol']);
      await assert.rejects(c.opened, /Server sent no subprotocol/);
      assert.equal(c.upgradeHeaders?.['sec-websocket-protocol'], undefined);
    }));

  test('upgrade to an unknown path is refused with HTTP 404', T, () =>
    withHub(async (hub) => {
      await assert.rejects(Client.open(hub.wsUrl('/no/such/endpoint')), /unexpected HTTP 404/);
    }));

  test('without --test-endpoints, /echo is not there (404)', T, () =>
    withHub({ testEndpoints: false }, async (hub) => {
      await assert.rejects(Client.open(hub.wsUrl('/echo')), /unexpected HTTP 404/);
    }));

  test('GET /health, /api/status and /metrics answer while clients are connected', T, () =>
    withHub(async (hub) => {
      const clients = await Promise.all([1, 2, 3].map(() => Client.open(hub.wsUrl('/echo'))));
      const health = await fetch(hub.url('/health'));
      assert.equal(health.status, 200);
      assert.match(health.headers.get('content-type'), /json/);
      assert.equal((await health.json()).status, 'ok');
      const status = await fetch(hub.url('/api/status'));
      assert.equal(status.status, 200);
      const s = await status.json();
      assert.equal(s.loops, 2);
      assert.equal(s.connections.websocket, 3);
      const anonymous = await fetch(hub.url('/metrics'));
      assert.equal(anonymous.status, 401); // metrics need an admin credential
      assert.match(await hub.metrics(), /^chorus_ws_open 3$/m);
      for (const c of clients) c.close(1000);
      await Promise.all(clients.map((c) => c.waitClosed()));
    }));
});
