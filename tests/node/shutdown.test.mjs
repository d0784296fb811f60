/*
 * shutdown.test.mjs — graceful shutdown: SIGTERM with WebSocket clients open
 * sends each of them a close frame with 1001 (going away), then the process
 * exits with status 0 within the drain time; a client that never answers the
 * close does not hold the exit beyond --shutdown-timeout.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Hub, Client, within } from './hub.mjs';

const T = { timeout: 60000 };

/* Start a hub, run body(hub) which must end by stopping it; logs attached on failure. */
async function run(opts, body) {
  const hub = new Hub(opts);
  try {
    await hub.start();
    await body(hub);
  } catch (err) {
    await hub.stop('SIGKILL');
    if (err instanceof Error) err.message += `\n---- chorus log ----\n${hub.logs()}---- end ----`;
    throw err;
  } finally {
    hub.cleanup();
  }
}

describe('graceful shutdown', () => {
  test('SIGTERM with open clients: each gets close 1001, the hub exits 0', T, () =>
    run({}, async (hub) => {
      const echo = await Promise.all(Array.from({ length: 10 }, () => Client.open(hub.wsUrl('/echo'))));
      const subs = await Promise.all(Array.from({ length: 10 }, () => Client.open(hub.wsUrl('/bench/sub?channel=bye'))));
      const deflated = await Promise.all(Array.from({ length: 5 }, () =>
        Client.open(hub.wsUrl('/echo'), { perMessageDeflate: { threshold: 0 } })));
      const all = [...echo, ...subs, ...deflated];
      /* Everyone is live: one round-trip each on the echo clients. */
      await Promise.all([...echo, ...deflated].map(async (c, i) => {
        await c.send(`hello ${i}`);
        assert.equal((await c.next()).data.toString(), `hello ${i}`);
      }));
      const t0 = Date.now();
      const rc = hub.stop('SIGTERM', 15000);
      const closes = await within(Promise.all(all.map((c) => c.closed)), 10000, 'every client to be closed');
      closes.forEach(({ code, reason }, i) =>
        assert.equal(code, 1001, `client ${i} closed with ${code} (${reason}) instead of 1001`));
      assert.equal(await rc, 0, 'exit status after SIGTERM');
      assert.ok(Date.now() - t0 < 10000, `shutdown took ${Date.now() - t0} ms`);
    }));

  test('SIGTERM while clients are streaming messages: each gets close 1001, exit 0', T, () =>
    run({}, async (hub) => {
      const clients = await Promise.all(Array.from({ length: 5 }, () => Client.open(hub.wsUrl('/echo'))));
      let stop = false;
      /* Each client keeps sending echo traffic (yielding to I/O every 20 messages)
       * while the hub shuts down: the close frame must still reach it. */
      const pumps = clients.map(async (c) => {
        for (let i = 0; !stop && c.ws.readyState === 1; i++) {
          c.ws.send(`tick ${i}`);
          if (i % 20 === 19) await new Promise((resolve) => setImmediate(resolve));
        }
      });
      await Promise.all(clients.map((c) => c.take(50)));
      const rc = hub.stop('SIGTERM', 15000);
      const closes = await within(Promise.all(clients.map((c) => c.closed)), 10000, 'every client to be closed');
      stop = true;
      await Promise.all(pumps);
      closes.forEach(({ code }, i) =>
        assert.equal(code, 1001, `streaming client ${i} closed with ${code} instead of 1001 (close frame lost)`));
      assert.equal(await rc, 0, 'exit status after SIGTERM');
    }));

  test('a client that never answers the close does not hold the exit past --shutdown-timeout', T, () =>
    run({ args: ['--shutdown-timeout', '1s'] }, async (hub) => {
      const stuck = await Client.open(hub.wsUrl('/echo'));
      const fine = await Client.open(hub.wsUrl('/echo'));
      stuck.ws._socket.pause(); /* reads nothing more, so it never sees or answers the close */
      const t0 = Date.now();
      const rc = await hub.stop('SIGTERM', 15000);
      const took = Date.now() - t0;
      assert.equal(rc, 0, 'exit status after SIGTERM');
      assert.ok(took < 6000, `exit took ${took} ms with --shutdown-timeout 1s`);
      assert.equal((await fine.waitClosed()).code, 1001);
      stuck.ws._socket.resume();
      await stuck.waitClosed();
    }));

  test('SIGINT is a graceful shutdown too: close 1001, exit 0', T, () =>
    run({}, async (hub) => {
      const c = await Client.open(hub.wsUrl('/echo'));
      const rc = hub.stop('SIGINT', 15000);
      assert.equal((await c.waitClosed()).code, 1001);
      assert.equal(await rc, 0, 'exit status after SIGINT');
    }));
});
